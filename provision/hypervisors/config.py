"""The configuration files a namespace hypervisor gets in its state directory, as text.

Pure: each function takes the host's file (or nothing) and returns the hypervisor's. The
daemons read them through the private mounts (`/etc/libvirt` is the state directory's copy),
so no daemon is started with a configuration option the host's daemons do not have, except
sshd, which reads its own file (the host's sshd_config is not ours to change).
"""

from __future__ import annotations

import re
from pathlib import Path

# The host's `/etc/libvirt` is copied into each hypervisor except these entries, which hold
# state: persistent domain, network, storage pool and secret definitions. Each hypervisor
# starts with them empty, so it never sees the host's (or another hypervisor's) domains.
LIBVIRT_STATE_ENTRIES = ("qemu", "storage", "secrets")


def _drop_setting(text: str, key: str) -> str:
    """`text` (a libvirt .conf file) without any uncommented setting of `key`, a list value
    spanning several lines included: libvirt takes the first setting of a key."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if skipping:
            skipping = "]" not in line
            continue
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            value = line.split("=", 1)[1]
            skipping = "[" in value and "]" not in value
            continue
        out.append(line)
    result = "".join(out)
    return result if not result or result.endswith("\n") else result + "\n"


def private_qemu_conf(host_text: str) -> str:
    """The host's qemu.conf with the cgroup controllers turned off for this hypervisor.

    Without systemd, every libvirtd puts a QEMU process into `/machine/qemu-<id>-<name>.
    libvirt-qemu` at the root of each cgroup hierarchy: the same path in every hypervisor.
    Two of them running a domain of the same name and id (the same lab's probe domain, for
    one) would share one cgroup, rewrite each other's device allow-list and remove it under
    each other. With no controllers libvirt leaves QEMU in the hypervisor's own cgroup
    (libvirt ignores the "no controller" error by design), so nothing in the shared cgroup
    tree is created or fought over. Labs set no cgroup tunables, so nothing they use is lost.
    """
    return _drop_setting(host_text, "cgroup_controllers") + (
        "\n# virtio-lab namespace hypervisor: QEMU stays in this hypervisor's cgroup; see\n"
        "# provision/hypervisors/config.py for why.\n"
        "cgroup_controllers = [ ]\n"
    )


def private_libvirtd_conf(host_text: str, host_uuid: str) -> str:
    """The host's libvirtd.conf with this hypervisor's own host UUID: libvirt otherwise
    reads it from SMBIOS, the same for every hypervisor on the machine, and refuses to
    migrate a domain to a host with its own UUID."""
    return _drop_setting(host_text, "host_uuid") + (
        f'\n# virtio-lab namespace hypervisor: its own identity\nhost_uuid = "{host_uuid}"\n'
    )


def sshd_config(listen: str, host_key: Path, authorized_keys: Path) -> str:
    """A hypervisor's own sshd: listens on its management address only, root by key only.

    UsePAM stays off: PAM's session modules expect systemd and a login environment the
    namespace does not have. internal-sftp serves Ansible's file transfers.
    """
    return (
        "# virtio-lab namespace hypervisor: written by `provision hosts up`\n"
        f"ListenAddress {listen}\n"
        f"HostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        "PidFile /run/sshd.pid\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "UseDNS no\n"
        "X11Forwarding no\n"
        "PrintMotd no\n"
        "AcceptEnv LANG LC_*\n"
        "Subsystem sftp internal-sftp\n"
    )


def known_hosts_line(names: tuple[str, ...], public_key: str) -> str:
    """One known_hosts line: the host key of a hypervisor under its name and address."""
    kind, key = public_key.split()[:2]
    return f"{','.join(names)} {kind} {key}\n"
