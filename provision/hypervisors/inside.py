"""The part of `provision hosts up` that runs inside a hypervisor (through `nsenter`):
`python -m provision.hypervisors.inside hvK [--setup]`.

With --setup (a new hypervisor) it bind-mounts the private directories over the host's
paths, sets the hostname, and addresses lo, mgmt0 and underlay0. Then, every time, it starts
what is not running the way `provision host prepare` does without systemd
(``apply_host_plan``: `ovs-ctl` for OVS, `--daemon` for virtlogd and libvirtd), waits until
they answer (``wait_for_daemons``, through the usual paths, which are the private ones
here), and starts sshd. It prints its step timings as JSON.

It refuses to run anywhere but in the hypervisor it is named for: mounting over /run in the
root namespace would hide the host's daemons.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pyroute2 import IPRoute

from provision.errors import HostError, ProvisionError
from provision.host.plan import DAEMON_ORDER, HostAction, HostPlan
from provision.host.prepare import _run, apply_host_plan
from provision.host.probe import daemon_running
from provision.host.ready import wait_for_daemons
from provision.hypervisors import spaces, ssh
from provision.hypervisors.plan import MGMT_IFNAME, UNDERLAY_IFNAME, Hypervisor, parse_name

MARKER = Path("/run/virtio-lab/hypervisor")  # tells `provision hosts` it runs inside one


def check_inside(host: Hypervisor) -> None:
    """HostError unless PID 1 here is the init of `host` (so the mount, UTS and network
    namespaces joined with it are the hypervisor's, not the machine's)."""
    argv = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    if spaces.INIT_MARKER not in argv or argv[argv.index(spaces.INIT_MARKER) + 1] != host.name:
        raise HostError(f"not inside hypervisor {host.name} (PID 1 is not its init); run "
                        "`provision hosts up`, which enters it")  # fmt: skip


def mount_private_dirs(host: Hypervisor) -> None:
    for target, sub in spaces.PRIVATE_DIRS:
        _run(["mount", "--bind", str(host.state_dir / sub), target], timeout=30)


def mount_own_sysfs() -> None:
    """A sysfs of this network namespace over /sys: the inherited one lists the machine's
    interfaces, which libvirtd's node device driver then probes in vain (and
    /sys/class/net would not show mgmt0, underlay0 or the taps). The cgroup mounts under
    /sys/fs/cgroup move over to the new /sys."""
    hold = Path("/run/virtio-lab/sys-fs-cgroup")
    hold.mkdir(exist_ok=True)
    _run(["mount", "--rbind", "/sys/fs/cgroup", str(hold)], timeout=30)
    _run(["mount", "-t", "sysfs", "sysfs", "/sys"], timeout=30)
    _run(["mount", "--move", str(hold), "/sys/fs/cgroup"], timeout=30)
    hold.rmdir()


def address_links(host: Hypervisor) -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        for ifname, address in ((MGMT_IFNAME, host.mgmt_ip), (UNDERLAY_IFNAME, host.underlay_ip)):
            index = ipr.link_lookup(ifname=ifname)[0]
            with contextlib.suppress(Exception):  # NetlinkError EEXIST: addressed before
                ipr.addr("add", index=index, address=str(address.ip),
                         prefixlen=address.network.prefixlen)  # fmt: skip
            ipr.link("set", index=index, state="up")


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


def run(host: Hypervisor, setup: bool) -> dict[str, object]:
    check_inside(host)
    steps: dict[str, float] = {}
    log: list[str] = []

    def step(name: str, fn: Callable[[], object]) -> None:
        t0 = time.monotonic()
        fn()
        steps[name] = round(time.monotonic() - t0, 3)

    if setup:
        step("mounts", lambda: mount_private_dirs(host))
        step("sysfs", mount_own_sysfs)
        step("hostname", lambda: socket.sethostname(host.name))
        step("addresses", lambda: address_links(host))
        MARKER.write_text(host.name + "\n")
    step("daemons", lambda: start_daemons(log))
    if not sshd_running():
        step("sshd", lambda: _run(ssh.sshd_argv(host), timeout=30))
        log.append("started sshd")
    return {"host": host.name, "steps": steps, "log": log}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="provision.hypervisors.inside")
    parser.add_argument("name")
    parser.add_argument("--setup", action="store_true")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(run(parse_name(args.name), args.setup)))
    except ProvisionError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
