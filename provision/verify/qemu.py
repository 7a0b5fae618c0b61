"""The QEMU hop: what the running QEMU process really holds, read from /proc, never from the
domain XML (libvirt keeps ``<driver name='vhost'>`` in the live XML even when it fell back
to QEMU's userspace backend).

For each NIC: the ``-netdev`` of its virtio-net device on ``/proc/PID/cmdline``, its tap fds
(``/proc/PID/fd`` -> /dev/net/tun, ``/proc/PID/fdinfo`` ``iff:`` = the lab's tap), its vhost
fds (-> /dev/vhost-net), and the ``vhost-PID`` worker threads.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from provision.verify import parse
from provision.verify.matrix import Endpoint
from provision.verify.model import Check, skipped, verdict

PIDFILE_DIR = Path(os.environ.get("VIRTIO_LAB_QEMU_PIDDIR", "/run/libvirt/qemu"))


@dataclass
class QemuProcess:
    """What /proc shows of one domain's QEMU."""

    pid: int
    argv: list[str]
    fd_links: dict[int, str] = field(default_factory=dict)  # fd -> readlink target
    fd_iff: dict[int, str | None] = field(default_factory=dict)  # tun fd -> attached iface
    vhost_threads: int = 0


def _read_fds(pid: int, fds: set[int]) -> tuple[dict[int, str], dict[int, str | None]]:
    links: dict[int, str] = {}
    iff: dict[int, str | None] = {}
    for fd in sorted(fds):
        try:
            links[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if links[fd] == parse.TUN_DEVICE:
            try:
                iff[fd] = parse.fdinfo_iff(Path(f"/proc/{pid}/fdinfo/{fd}").read_text())
            except OSError:
                iff[fd] = None
    return links, iff


def _thread_comms(pid: int) -> list[str]:
    comms = []
    for task in Path(f"/proc/{pid}/task").glob("*/comm"):
        try:
            comms.append(task.read_text())
        except OSError:
            continue
    if parse.vhost_thread_count(comms, pid) == 0:
        # Before Linux 6.4 vhost workers were kernel threads named vhost-PID.
        for comm in Path("/proc").glob("[0-9]*/comm"):
            try:
                text = comm.read_text()
            except OSError:
                continue
            if text.strip() == f"vhost-{pid}":
                comms.append(text)
    return comms


def read_qemu(domain: str) -> QemuProcess | str:
    """The domain's QEMU as /proc shows it, or why it cannot be read."""
    pidfile = PIDFILE_DIR / f"{domain}.pid"
    try:
        pid = int(pidfile.read_text().strip())
        argv = parse.split_cmdline(Path(f"/proc/{pid}/cmdline").read_bytes())
    except (OSError, ValueError) as exc:
        return f"no QEMU process for {domain} ({pidfile}: {exc})"
    names = [parse.split_keyval(v, "guest").get("guest")
             for f, v in itertools.pairwise(argv) if f == "-name"]
    if domain not in names:
        return f"pid {pid} from {pidfile} is not {domain}'s QEMU (-name {names})"
    nics = parse.qemu_nics(argv)
    fds = {fd for n in nics.values() for fd in (*n.tap_fds, *n.vhost_fds)}
    links, iff = _read_fds(pid, fds)
    proc = QemuProcess(pid, argv, links, iff)
    proc.vhost_threads = parse.vhost_thread_count(_thread_comms(pid), pid)
    return proc


def netdev_check(proc: QemuProcess, ep: Endpoint) -> tuple[Check, str | None]:
    """qemu.netdev of one NIC, and the virtio backend it uses (None when it has no netdev)."""
    nic = parse.qemu_nics(proc.argv).get(ep.mac)
    if nic is None:
        return verdict("qemu.netdev", ep.target, [f"no virtio-net device with MAC {ep.mac} "
                                                  "on QEMU's command line"],
                       {"pid": proc.pid}), None
    problems = []
    if nic.netdev_type != "tap":
        problems.append(f"netdev {nic.netdev} is type {nic.netdev_type!r}, not tap")
    if len(nic.tap_fds) != ep.queues:
        problems.append(f"{len(nic.tap_fds)} tap fds, want {ep.queues} (one per queue)")
    for fd in nic.tap_fds:
        if proc.fd_links.get(fd) != parse.TUN_DEVICE:
            problems.append(f"fd {fd} is {proc.fd_links.get(fd, 'not open')}, not /dev/net/tun")
        elif proc.fd_iff.get(fd) != ep.tap:
            problems.append(f"tun fd {fd} is attached to {proc.fd_iff.get(fd)}, not {ep.tap}")
    for fd in nic.vhost_fds:
        if proc.fd_links.get(fd) != parse.VHOST_DEVICE:
            problems.append(f"vhost fd {fd} is {proc.fd_links.get(fd, 'not open')}")
    backend = parse.nic_backend(nic, proc.fd_links)
    evidence = {
        "pid": proc.pid,
        "netdev": nic.netdev,
        "device": nic.device_id,
        "tap_fds": {str(fd): proc.fd_iff.get(fd) for fd in nic.tap_fds},
        "vhost_requested": nic.vhost,
        "vhost_fds": {str(fd): proc.fd_links.get(fd) for fd in nic.vhost_fds},
        "backend": backend,
    }
    ok = f"{len(nic.tap_fds)} tap fds on {ep.tap}, {len(nic.vhost_fds)} vhost fds: {backend}"
    return verdict("qemu.netdev", ep.target, problems, evidence, ok), backend


def qemu_checks(
    domain: str, target: str, eps: list[Endpoint], spec_backend: str, resolved: str,
    running: bool,
) -> tuple[list[Check], str | None]:
    """qemu.netdev per NIC and qemu.backend for the VM; the VM's actual backend."""
    if not running:
        why = "the domain is not running: there is no QEMU to read"
        checks = [verdict("qemu.netdev", ep.target, [why], {}) for ep in eps]
        return [*checks, verdict("qemu.backend", target, [why], {})], None
    proc = read_qemu(domain)
    if isinstance(proc, str):
        checks = [verdict("qemu.netdev", ep.target, [proc], {}) for ep in eps]
        return [*checks, verdict("qemu.backend", target, [proc], {})], None
    checks = []
    paths = []
    for ep in eps:
        check, path = netdev_check(proc, ep)
        checks.append(check)
        if path is not None:
            paths.append(path)
    if not eps:
        return [*checks, skipped("qemu.backend", target, "the VM has no NICs")], None
    actual = parse.combine_backends(paths)
    problems = []
    problem = parse.backend_problem(spec_backend, resolved, actual)
    if problem:
        problems.append(problem)
    if actual == "vhost-net" and proc.vhost_threads == 0:
        problems.append(f"vhost fds are open but no vhost-{proc.pid} worker thread exists")
    evidence = {"pid": proc.pid, "actual": actual, "lab_backend": spec_backend,
                "auto_resolves_to": resolved, "vhost_threads": proc.vhost_threads}
    ok = f"QEMU uses {actual} (lab.backend {spec_backend})"
    checks.append(verdict("qemu.backend", target, problems, evidence, ok))
    return checks, actual
