"""Whether the host's daemons run: ovsdb-server, ovs-vswitchd, virtlogd and libvirtd, found by
their pidfiles (or a /proc scan), or under systemd by an active socket unit; and where their
sockets and pidfiles are. Read-only; `provision.host.prepare` starts them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

OVS_RUNDIR = Path(os.environ.get("OVS_RUNDIR", "/var/run/openvswitch"))
OVSDB_SOCK = OVS_RUNDIR / "db.sock"
LIBVIRT_SOCK = Path("/var/run/libvirt/libvirt-sock")
VIRTLOGD_SOCK = Path("/var/run/libvirt/virtlogd-sock")
DAEMON_PIDFILES: dict[str, Path] = {
    "ovsdb-server": OVS_RUNDIR / "ovsdb-server.pid",
    "ovs-vswitchd": OVS_RUNDIR / "ovs-vswitchd.pid",
    "virtlogd": Path("/var/run/virtlogd.pid"),
    "libvirtd": Path("/var/run/libvirtd.pid"),
}
# Under systemd libvirtd and virtlogd are socket-activated and may exit when idle: an active
# socket unit counts as running.
SYSTEMD_SOCKET_UNITS = {"libvirtd": "libvirtd.socket", "virtlogd": "virtlogd.socket"}


def systemd_running() -> bool:
    """Whether PID 1 is systemd (sd_booted's test)."""
    return Path("/run/systemd/system").is_dir()


def _pid_alive(pid: int, comm: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # /proc/PID/stat is "pid (comm) state ..."; comm may contain spaces and parentheses.
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    state = stat[stat.rindex(")") + 2 :].split(" ", 1)[0]
    return name == comm[:15] and state not in ("Z", "X")


def daemon_pid(name: str) -> int | None:
    """PID of a running daemon: its pidfile if that names a live process, else a /proc scan."""
    pidfile = DAEMON_PIDFILES.get(name)
    if pidfile is not None:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if _pid_alive(pid, name):
                return pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _pid_alive(int(entry.name), name):
            return int(entry.name)
    return None


def _socket_unit_active(name: str) -> bool:
    unit = SYSTEMD_SOCKET_UNITS.get(name)
    if unit is None or not systemd_running():
        return False
    result = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False)
    return result.returncode == 0


def daemon_running(name: str) -> bool:
    """Whether daemon `name` runs (or, under systemd, its socket unit is active)."""
    return daemon_pid(name) is not None or _socket_unit_active(name)


def daemon_status() -> dict[str, bool]:
    """Whether ovsdb-server, ovs-vswitchd, virtlogd and libvirtd are running."""
    return {name: daemon_running(name) for name in DAEMON_PIDFILES}
