"""The Ansible inventory `provision hosts up` writes: one host per namespace hypervisor,
reached over SSH on its management address.

Every setting is a host variable (nothing under `all.vars`), so the file combines with a lab
file (`ansible-playbook -i hosts.yml -i lab.yml ...`) without either overriding the other.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from provision.errors import SpecError
from provision.hypervisors.plan import UNDERLAY_IFNAME, Hypervisor


def ssh_common_args(known_hosts: Path) -> str:
    """SSH options for these throwaway hosts: no prompt, because their keys are pinned in a
    known_hosts file `hosts up` writes (not because checking is off), and only our key."""
    return (f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
            "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes")  # fmt: skip


def host_vars(host: Hypervisor, key: Path, known_hosts: Path, python: str) -> dict[str, Any]:
    """What Ansible needs to reach one hypervisor, and what a lab needs to know of it."""
    return {
        "ansible_host": str(host.mgmt_ip.ip),
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": ssh_common_args(known_hosts),
        # The same interpreter as `provision`'s: the hypervisors share this machine's files.
        "ansible_python_interpreter": python,
        "virtio_lab_python": python,  # what the playbooks set ansible_python_interpreter to
        "virtio_lab_underlay_ip": str(host.underlay_ip.ip),
        "virtio_lab_underlay_prefix": host.underlay_ip.network.prefixlen,
        "virtio_lab_underlay_interface": UNDERLAY_IFNAME,
    }


def render_inventory(hosts: Iterable[Hypervisor], key: Path, known_hosts: Path,
                     python: str) -> str:
    """The inventory as YAML text."""
    doc = {"all": {"hosts": {h.name: host_vars(h, key, known_hosts, python) for h in hosts}}}
    header = ("# Written by `provision hosts up`: namespace hypervisors on this machine.\n"
              "# Use with a lab file: ansible-playbook -i THIS_FILE -i LAB_FILE ...\n")  # fmt: skip
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1000)


def check_writable(path: Path) -> None:
    """SpecError (exit 3) before anything is created when the inventory cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SpecError("--inventory", f"{path} is a directory; name a file")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise SpecError("--inventory", f"cannot write {path}: {parent} is not a writable "
                        "directory")


def write_inventory(path: Path, text: str) -> None:
    """Replace `path` atomically: a reader never sees half an inventory."""
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
