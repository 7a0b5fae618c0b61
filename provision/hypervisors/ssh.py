"""SSH into the hypervisors: the client key pair, each hypervisor's host key and sshd
configuration, and the known_hosts file that pins those host keys.

The client key pair is made once per set of hypervisors (`hosts up` keeps it while any
hypervisor exists; `hosts down` removes it with the state). Nothing under ~/.ssh or
/etc/ssh is read or written.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from provision.errors import OperationError
from provision.hypervisors import config
from provision.hypervisors.plan import STATE_ROOT, Hypervisor

CLIENT_KEY = STATE_ROOT / "id_ed25519"  # the inventory's ansible_ssh_private_key_file
AUTHORIZED_KEYS = STATE_ROOT / "authorized_keys"  # every hypervisor's sshd reads this
KNOWN_HOSTS = STATE_ROOT / "known_hosts"  # the hypervisors' host keys, for the clients
SSHD = "/usr/sbin/sshd"  # sshd re-executes itself: it must be started by absolute path


def _keygen(path: Path, comment: str) -> None:
    proc = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        raise OperationError(f"`ssh-keygen -f {path}` failed: {proc.stderr.strip()}")


def ensure_client_key() -> Path:
    """The key pair `hosts up` logs in with, made if missing; authorized on every host."""
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    if not CLIENT_KEY.exists():
        _keygen(CLIENT_KEY, "virtio-lab hypervisors")
    AUTHORIZED_KEYS.write_text(CLIENT_KEY.with_suffix(".pub").read_text())
    AUTHORIZED_KEYS.chmod(0o644)
    return CLIENT_KEY


def host_key(host: Hypervisor) -> Path:
    return host.state_dir / "ssh" / "ssh_host_ed25519_key"


def sshd_config_path(host: Hypervisor) -> Path:
    return host.state_dir / "ssh" / "sshd_config"


def prepare_sshd(host: Hypervisor) -> None:
    """The hypervisor's own host key and sshd_config, in its state directory."""
    key = host_key(host)
    key.parent.mkdir(mode=0o700, exist_ok=True)
    if not key.exists():
        _keygen(key, f"root@{host.name}")
    sshd_config_path(host).write_text(
        config.sshd_config(str(host.mgmt_ip.ip), key, AUTHORIZED_KEYS))


def write_known_hosts(hosts: Iterable[Hypervisor]) -> Path:
    """Pin every hypervisor's host key under its name and management address."""
    lines = [
        config.known_hosts_line((h.name, str(h.mgmt_ip.ip)),
                                host_key(h).with_suffix(".pub").read_text())
        for h in hosts
    ]  # fmt: skip
    KNOWN_HOSTS.write_text("".join(lines))
    return KNOWN_HOSTS


def sshd_argv(host: Hypervisor) -> list[str]:
    """How `inside.py` starts the hypervisor's sshd (it detaches and writes /run/sshd.pid)."""
    return [SSHD, "-f", str(sshd_config_path(host))]
