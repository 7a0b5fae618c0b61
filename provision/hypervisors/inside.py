"""The part of `provision hosts up` that runs inside a hypervisor (through `nsenter`):
`python -m provision.hypervisors.inside hvK`.

It bind-mounts the private directories over the host's paths and mounts the namespace's own
sysfs, sets the hostname, and addresses lo, mgmt0 and underlay0, each only where not done
yet, so one run makes a new hypervisor and repairs an old one. Then it starts what is not
running the way `provision host prepare` does without systemd (``apply_host_plan``:
`ovs-ctl` for OVS, `--daemon` for virtlogd and libvirtd), waits until they answer
(``wait_for_daemons``, through the usual paths, which are the private ones here), and
starts sshd. It prints its step timings and what it did as JSON.

It refuses to run anywhere but in the hypervisor it is named for: mounting over /run in the
root namespace would hide the host's daemons.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from provision.errors import HostError, ProvisionError
from provision.host.daemonstate import daemon_running
from provision.host.plan import DAEMON_ORDER, HostAction, HostPlan
from provision.host.prepare import _run, apply_host_plan
from provision.host.ready import wait_for_daemons
from provision.host.statedir import HYPERVISOR_MARKER
from provision.hypervisors import spaces, ssh
from provision.hypervisors.plan import MGMT_IFNAME, UNDERLAY_IFNAME, Hypervisor, parse_name


def check_inside(host: Hypervisor) -> None:
    """HostError unless PID 1 here is the init of `host` (so the mount, UTS and network
    namespaces joined with it are the hypervisor's, not the machine's)."""
    argv = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    if spaces.INIT_MARKER not in argv or argv[argv.index(spaces.INIT_MARKER) + 1] != host.name:
        raise HostError(f"not inside hypervisor {host.name} (PID 1 is not its init); run "
                        "`provision hosts up`, which enters it")  # fmt: skip


def _bound(target: str, source: Path) -> bool:
    """Whether `target` shows `source` (a bind mount: same device and inode)."""
    a, b = os.stat(target), os.stat(source)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def mount_private_dirs(host: Hypervisor) -> list[str]:
    """Bind each private directory not bound yet; HostError unless all are bound then.
    Nothing else runs before this holds: a daemon started on the machine's /run would take
    over the machine's own sockets (ovs-ctl replaces db.sock)."""
    done = []
    for target, sub in spaces.PRIVATE_DIRS:
        if not _bound(target, host.state_dir / sub):
            _run(["mount", "--bind", str(host.state_dir / sub), target], timeout=30)
            done.append(target)
    missing = [t for t, sub in spaces.PRIVATE_DIRS if not _bound(t, host.state_dir / sub)]
    if missing:
        raise HostError(f"{', '.join(missing)} in {host.name} are not its private "
                        "directories; run `provision hosts down`, then `hosts up`")  # fmt: skip
    return done


def mount_own_sysfs() -> bool:
    """A sysfs of this network namespace over /sys (once: /run, private now, remembers):
    the inherited one lists the machine's interfaces, which libvirtd's node device driver
    then probes in vain, and /sys/class/net would not show mgmt0, underlay0 or the taps.
    The cgroup mounts under /sys/fs/cgroup move over to the new /sys."""
    done = Path("/run/virtio-lab/sysfs")
    if done.exists():
        return False
    hold = Path("/run/virtio-lab/sys-fs-cgroup")
    hold.mkdir(exist_ok=True)
    _run(["mount", "--rbind", "/sys/fs/cgroup", str(hold)], timeout=30)
    _run(["mount", "-t", "sysfs", "sysfs", "/sys"], timeout=30)
    _run(["mount", "--move", str(hold), "/sys/fs/cgroup"], timeout=30)
    hold.rmdir()
    done.touch()
    return True


def address_links(host: Hypervisor) -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        for ifname, address in ((MGMT_IFNAME, host.mgmt_ip), (UNDERLAY_IFNAME, host.underlay_ip)):
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise HostError(f"{host.name} has no {ifname}; run `provision hosts up` again")
            try:
                ipr.addr("add", index=found[0], address=str(address.ip),
                         prefixlen=address.network.prefixlen)  # fmt: skip
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:  # addressed by an earlier run
                    raise
            ipr.link("set", index=found[0], state="up")


def start_daemons(log: list[str]) -> None:
    """Start the daemons not running, as `host prepare` would; wait until all answer."""
    missing = tuple(
        HostAction("start-daemon", name, "namespace hypervisor")
        for name in DAEMON_ORDER if not daemon_running(name)
    )  # fmt: skip
    apply_host_plan(HostPlan(missing), use_systemd=False, log=log.append)
    wait_for_daemons(timeout=60.0)


def sshd_running() -> bool:
    try:
        pid = int(Path("/run/sshd.pid").read_text().strip())
        return Path(f"/proc/{pid}/comm").read_text().strip() == "sshd"
    except (OSError, ValueError):
        return False


def run(host: Hypervisor) -> dict[str, object]:
    """Set the hypervisor up where it is not yet (every step checks first), then start
    what does not run. The same run makes a new hypervisor and repairs an old one."""
    check_inside(host)
    steps: dict[str, float] = {}
    log: list[str] = []

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        result = fn()
        steps[name] = round(time.monotonic() - t0, 3)
        return result

    if bound := step("mounts", lambda: mount_private_dirs(host)):
        log.append(f"bound its private {', '.join(bound)}")
    if step("sysfs", mount_own_sysfs):
        log.append("mounted its own sysfs")
    socket.sethostname(host.name)
    step("addresses", lambda: address_links(host))
    HYPERVISOR_MARKER.write_text(host.name + "\n")  # tells `provision hosts` it runs here
    step("daemons", lambda: start_daemons(log))
    if not sshd_running():
        step("sshd", lambda: _run(ssh.sshd_argv(host), timeout=30))
        log.append("started sshd")
    return {"host": host.name, "steps": steps, "log": log}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="provision.hypervisors.inside")
    parser.add_argument("name")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(run(parse_name(args.name))))
    except ProvisionError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
