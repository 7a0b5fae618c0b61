"""Several hypervisors on one machine: `provision hosts up|exec|status|down`.

Each hypervisor hvK is a set of Linux namespaces (mount, UTS, network, PID) with private
/run, /etc/libvirt, /var/lib/libvirt, /etc/openvswitch, ... (``spaces``), its own
ovsdb-server, ovs-vswitchd, virtlogd, libvirtd and sshd (``inside``, ``daemons``), a
management and an underlay link to bridges in the root namespace (``network``), and an
entry in an Ansible inventory (``inventory``). Addresses and names are planned in ``plan``.

``hosts_up`` converges to exactly N hypervisors: it keeps those that run (restarting any
daemon that stopped), recreates those whose init died, and removes those beyond N.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.engine import locks
from provision.errors import HostError, OperationError, ProvisionError, SpecError
from provision.host.statedir import inside_hypervisor
from provision.hypervisors import daemons, inventory, network, spaces, ssh
from provision.hypervisors.plan import (
    STATE_ROOT,
    Hypervisor,
    parse_name,
    plan_hypervisors,
)

if TYPE_CHECKING:  # the engine's imports cost half a second; `inside.py` starts with these
    from provision.engine.converge import Progress

__all__ = ["DownResult", "HostReport", "UpResult", "hosts_down", "hosts_exec",
           "hosts_status", "hosts_up"]  # fmt: skip

# Command -> the Debian package that has it.
TOOLS = {
    "unshare": "util-linux", "nsenter": "util-linux", "mount": "mount",
    ssh.SSHD: "openssh-server", "ssh-keygen": "openssh-client",
    "ovsdb-tool": "openvswitch-common", "ovs-vswitchd": "openvswitch-switch",
    "libvirtd": "libvirt-daemon", "virtlogd": "libvirt-daemon-system",
}  # fmt: skip


class _NoProgress:
    def task(self, description: str, total: int) -> None:
        return None

    def advance(self, task: Any, note: str = "", step: int = 1) -> None:
        return None


@dataclass
class HostReport:
    """One hypervisor after `hosts up`."""

    name: str
    action: str  # created | kept | repaired (a daemon was restarted) | recreated (init died)
    seconds: float
    pid: int  # its init, in this machine's PID namespace
    mgmt_ip: str
    underlay_ip: str
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds, inside
    log: list[str] = field(default_factory=list)  # what was started inside


@dataclass
class UpResult:
    hosts: list[HostReport]
    removed: list[str]  # hypervisors beyond N, removed
    inventory: str
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.removed) or any(h.action != "kept" for h in self.hosts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


@dataclass
class DownResult:
    hosts: list[str]  # hypervisors stopped
    links: list[str]  # interfaces removed from this machine's namespace
    state: bool  # whether the state directory was there and is removed
    seconds: float

    @property
    def changed(self) -> bool:
        return bool(self.hosts or self.links or self.state)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


def _check_machine(tools: bool = True) -> None:
    """HostError (exit 4) unless this is the machine itself, as root, with the tools."""
    if os.geteuid() != 0:
        raise HostError("`provision hosts` creates namespaces, mounts and links: run it as root")
    inside = inside_hypervisor()
    if inside:
        raise HostError(f"this is namespace hypervisor {inside}; run `provision hosts` on "
                        "the machine that holds it")  # fmt: skip
    missing = sorted({pkg for cmd, pkg in TOOLS.items() if tools and not shutil.which(cmd)})
    if missing:
        raise HostError(f"missing Debian packages for namespace hypervisors: {' '.join(missing)}"
                        f"; run `provision host prepare` or `apt-get install "
                        f"{' '.join(missing)}`")  # fmt: skip


def _lock() -> contextlib.AbstractContextManager[None]:
    return locks.file_lock(locks.run_dir() / "hypervisors.lock", "namespace hypervisors",
                           "another `provision hosts up` or `down` is running")


def _stop(host: Hypervisor, keep_state: bool = False) -> None:
    """Kill the hypervisor's init (and so all of it), remove its veths and its state."""
    pid = spaces.find_inits().get(host.name)
    if pid is not None:
        spaces.kill_init(pid)
    network.unplug(host)
    if not keep_state:
        spaces.remove_state(host)


class _Steps(dict):
    """Step name -> seconds, filled by ``with steps.timed(name):``."""

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        self[name] = round(time.monotonic() - t0, 3)


def _create(host: Hypervisor, python: str, steps: _Steps) -> tuple[spaces.Init, list[str]]:
    with steps.timed("state"):
        _stop(host)
        spaces.prepare_state(host)
        ssh.prepare_sshd(host)
    with steps.timed("namespaces"):
        init = spaces.start_init(host, python)
    try:
        with steps.timed("links"):
            network.plug(host, init.pid)
        with steps.timed("inside"):
            report = daemons.run_inside(host, init.pid, python)
    except ProvisionError as exc:
        _stop(host, keep_state=True)  # its logs stay for a look, until `hosts down`
        exc.args = (f"{exc} (its logs: {host.state_dir}/log-*)",)
        raise
    steps.update({f"inside.{k}": v for k, v in report["steps"].items()})
    return init, report["log"]


def _bring_up(host: Hypervisor, python: str) -> HostReport:
    """Create the hypervisor, or check the one running: when all of its daemons answer
    (asked from here, in milliseconds) nothing is started."""
    t0, steps, log = time.monotonic(), _Steps(), []
    init = spaces.recorded_init(host)
    if init is None:
        action = "recreated" if host.state_dir.exists() else "created"
        init, log = _create(host, python, steps)
    elif network.plugged(host) and all(daemons.daemon_status(host).values()):
        action = "kept"
    else:
        with steps.timed("inside"):
            if not network.plugged(host):
                network.plug(host, init.pid)
                log.append("replaced its veths")
            log += daemons.run_inside(host, init.pid, python)["log"]
        action = "repaired"
    with steps.timed("sshd"):
        daemons.wait_for_sshd(host)
    return HostReport(host.name, action, round(time.monotonic() - t0, 3), init.pid,
                      str(host.mgmt_ip.ip), str(host.underlay_ip.ip), dict(steps), log)


def _extra(count: int) -> list[Hypervisor]:
    """Hypervisors found here (running or with state) beyond hvN."""
    names = set(spaces.find_inits()) | set(spaces.state_names())
    hosts = []
    for name in names:
        with contextlib.suppress(SpecError):  # not ours to judge: `hosts down` removes all
            if (host := parse_name(name)).index > count:
                hosts.append(host)
    return sorted(hosts, key=lambda h: h.index)


def hosts_up(count: int, inventory_path: Path, progress: Progress | None = None) -> UpResult:
    """Converge to hypervisors hv1..hvN and write their inventory to `inventory_path`."""
    t0 = time.monotonic()
    progress = progress or _NoProgress()
    hosts = plan_hypervisors(count)
    inventory.check_writable(inventory_path)
    _check_machine()
    python = sys.executable
    with _lock():
        network.check_conflicts(hosts)
        warnings = network.forward_warnings()
        removed = _extra(count)
        for host in removed:
            _stop(host)
        ssh.ensure_client_key()
        network.ensure_bridges()
        reports = _bring_up_all(hosts, python, progress)
        known_hosts = ssh.write_known_hosts(hosts)
        inventory.write_inventory(inventory_path, inventory.render_inventory(
            hosts, ssh.CLIENT_KEY, known_hosts, python))
    return UpResult(reports, [h.name for h in removed], str(inventory_path),
                    round(time.monotonic() - t0, 3), warnings)  # fmt: skip


def _bring_up_all(hosts: tuple[Hypervisor, ...], python: str,
                  progress: Progress) -> list[HostReport]:
    """Every hypervisor at once (mostly waiting on daemons); the first failure raised."""
    task = progress.task(f"{len(hosts)} hypervisor(s)", total=len(hosts))

    def one(host: Hypervisor) -> HostReport:
        report = _bring_up(host, python)
        progress.advance(task, f"{host.name} {report.action} in {report.seconds:.1f} s")
        return report

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        futures = [pool.submit(one, host) for host in hosts]
    failures = [f.exception() for f in futures if f.exception() is not None]
    if failures:
        raise failures[0]  # type: ignore[misc]
    return [f.result() for f in futures]


def hosts_down(progress: Progress | None = None) -> DownResult:
    """Stop every hypervisor, remove our interfaces and all state; nothing found, no change."""
    t0 = time.monotonic()
    progress = progress or _NoProgress()
    _check_machine(tools=False)
    with _lock():
        inits = spaces.find_inits()
        names = sorted(set(inits) | set(spaces.state_names()), key=lambda n: (len(n), n))
        task = progress.task("hypervisors down", total=len(inits))
        for name, pid in sorted(inits.items()):
            spaces.kill_init(pid)
            progress.advance(task, f"{name} stopped")
        links = network.remove_all()
        state = STATE_ROOT.exists()
        if state:
            shutil.rmtree(STATE_ROOT)
            with contextlib.suppress(OSError):  # only when nothing else of virtio-lab is there
                STATE_ROOT.parent.rmdir()
    return DownResult(names, links, state, round(time.monotonic() - t0, 3))


def hosts_status() -> dict[str, Any]:
    """Every hypervisor found (running or with state), its addresses and daemons."""
    running = spaces.find_inits()
    entries = []
    for name in sorted(set(running) | set(spaces.state_names()), key=lambda n: (len(n), n)):
        try:
            host = parse_name(name)
        except SpecError:
            continue
        init = spaces.recorded_init(host)
        entries.append({
            "name": name, "running": init is not None, "pid": init.pid if init else None,
            "mgmt_ip": str(host.mgmt_ip.ip), "underlay_ip": str(host.underlay_ip.ip),
            "daemons": daemons.daemon_status(host) if init else
            dict.fromkeys(daemons.DAEMONS, False),
        })  # fmt: skip
    return {"hypervisors": entries, "links": network.owned_links(),
            "warnings": network.forward_warnings()}


def hosts_exec(name: str, argv: list[str],
               capture: bool = False) -> subprocess.CompletedProcess[Any]:
    """Run `argv` inside hypervisor `name` (its stdio passed through unless `capture`)."""
    host = parse_name(name)
    if not argv:
        raise SpecError("COMMAND", "give the command to run after `--`")
    init = spaces.recorded_init(host)
    if init is None:
        if not host.state_dir.exists():
            raise SpecError("HOST", f"there is no hypervisor {name}; `provision hosts status` "
                            "lists them")  # fmt: skip
        raise OperationError(f"hypervisor {name} is not running (its init is gone); run "
                             "`provision hosts up N` to recreate it")  # fmt: skip
    text = {"encoding": "utf-8", "errors": "replace"} if capture else {}
    return subprocess.run([*spaces.enter_argv(init.pid), *argv], capture_output=capture,
                          check=False, **text)  # fmt: skip
