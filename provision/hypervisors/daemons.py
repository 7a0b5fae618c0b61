"""The hypervisors' daemons seen from this machine: starting them (by running `inside.py`
in the hypervisor) and asking whether each answers.

Every question is asked from the root namespace through the state directory, where each
hypervisor's /run is (its sockets are files there), and over the management bridge for sshd:
`hosts status` enters no namespace.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import libvirt

import provision
from provision.errors import HostError, OperationError
from provision.host.ready import call_with_timeout, unixctl_version
from provision.hypervisors import spaces
from provision.hypervisors.plan import Hypervisor

DAEMONS = ("ovsdb-server", "ovs-vswitchd", "virtlogd", "libvirtd", "sshd")
# What the daemons inside inherit: nothing of the caller's environment (an OVS_RUNDIR or a
# VIRTIO_LAB_LIBVIRT_URI meant for the host must not leak in), and this very package.
INSIDE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "PYTHONPATH": str(Path(provision.__file__).resolve().parents[1]),
}


def run_inside(host: Hypervisor, init_pid: int, python: str,
               timeout: float = 180.0) -> dict[str, Any]:
    """Run `inside.py` in the hypervisor; its JSON report. Its exit code picks the error
    class (4: HostError), its last line of stderr is the message."""
    argv = [*spaces.enter_argv(init_pid), python, "-m", "provision.hypervisors.inside",
            host.name]  # fmt: skip
    # Files, not pipes: the daemons it starts must not inherit a pipe we wait on.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  env=INSIDE_ENV, cwd="/", timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise OperationError(f"{host.name}: starting its daemons took more than "
                                 f"{timeout:g}s") from None  # fmt: skip
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        error = HostError if proc.returncode == HostError.exit_code else OperationError
        raise error(f"{host.name}: {last}")
    return json.loads(stdout)


def wait_for_sshd(host: Hypervisor, timeout: float = 20.0) -> None:
    """Wait until the hypervisor's sshd greets on its management address from here."""
    deadline = time.monotonic() + timeout
    while not sshd_answers(host):
        if time.monotonic() >= deadline:
            raise OperationError(f"{host.name}: sshd does not answer on {host.mgmt_ip.ip}:22 "
                                 f"from this machine; see {host.state_dir}/ssh/sshd_config")
        time.sleep(0.05)


# ---- does it answer? -------------------------------------------------------------------------


def sshd_answers(host: Hypervisor, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((str(host.mgmt_ip.ip), 22), timeout=timeout) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def ovsdb_answers(sock_path: Path, timeout: float = 2.0) -> bool:
    """ovsdb-server lists the Open_vSwitch database on its socket (JSON-RPC list_dbs)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(sock_path))
            sock.sendall(b'{"method":"list_dbs","params":[],"id":0}')
            reply = b""
            while b"}" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except OSError:
            return False
    return b"Open_vSwitch" in reply


def vswitchd_answers(rundir: Path, timeout: float = 2.0) -> bool:
    """ovs-vswitchd answers `version` on its control socket (named by its PID inside)."""
    try:
        pid = int((rundir / "ovs-vswitchd.pid").read_text().strip())
        call_with_timeout(lambda: unixctl_version(rundir / f"ovs-vswitchd.{pid}.ctl"), timeout)
    except (OSError, ValueError, TimeoutError):
        return False
    return True


def listens(sock_path: Path, timeout: float = 2.0) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(sock_path))
        except OSError:
            return False
    return True


def libvirtd_answers(sock_path: Path, timeout: float = 5.0) -> bool:
    if not sock_path.exists():
        return False
    try:
        conn = call_with_timeout(lambda: libvirt.open(f"qemu:///system?socket={sock_path}"),
                                 timeout)  # fmt: skip
    except (libvirt.libvirtError, TimeoutError):
        return False
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
    return True


def daemon_status(host: Hypervisor) -> dict[str, bool]:
    """Whether each daemon of the hypervisor answers, asked from this machine."""
    run = host.state_dir / "run"
    return {
        "ovsdb-server": ovsdb_answers(run / "openvswitch" / "db.sock"),
        "ovs-vswitchd": vswitchd_answers(run / "openvswitch"),
        "virtlogd": listens(run / "libvirt" / "virtlogd-sock"),
        "libvirtd": libvirtd_answers(run / "libvirt" / "libvirt-sock"),
        "sshd": sshd_answers(host),
    }
