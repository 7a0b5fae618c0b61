"""The cloud-init NoCloud seed of a VM booted from a cloud image (Debian, Ubuntu, Fedora).

A seed is an ISO 9660 image labelled ``cidata`` holding three files, which cloud-init's NoCloud
data source finds by that label and reads by name:

- ``meta-data``: the instance id and the hostname;
- ``network-config`` (version 2): each NIC matched by MAC and named ``nic<N>`` (N: its index
  in the VM's NICs), its static address or none (no DHCP anywhere), its MTU, and its VLAN
  sub-interfaces ``nic<N>.<VID>``;
- ``user-data`` (#cloud-config): the hostname, the combined channels of each NIC, the QEMU
  guest agent started, SSH keys, and the lab's own keys (``cloudconfig.merge_extras``).

Channels are set by MAC, whatever the NIC's name: a udev rule runs ``virtio-lab-channels``
(both written by ``write_files``) each time the NIC appears, at every boot; at the first boot
the rule is written after the NICs appeared, so ``runcmd`` runs the script once too.

Pure: plain data in, bytes out. The instance id is a hash of the other files (``seed_spec``),
so a guest re-applies its seed whenever the seed says something new; the planner compares
``seed_hash``, a hash of the ISO's bytes, which are the same for the same spec.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provision.errors import SpecError, shown
from provision.image.cloudconfig import CLOUD_CONFIG, dump, merge_extras
from provision.image.iso9660 import iso_image

VOLUME_ID = "cidata"  # the label NoCloud looks for
IFNAMSIZ = 15  # longest Linux interface name
CHANNELS_SCRIPT = "/usr/local/sbin/virtio-lab-channels"
CHANNELS_RULE = "/etc/udev/rules.d/70-virtio-lab-channels.rules"
GUEST_AGENT = "qemu-guest-agent.service"
NIC_DRIVER = "virtio_net"  # a VLAN shares its NIC's MAC; matching the driver too skips it
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
# cloud-init keeps each instance's state in /var/lib/cloud/instances/<instance-id>.
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Keys of user-data that the lab's extras may not set, and why.
OWNED_KEYS = {
    "hostname": "virtio-lab sets the hostname to the VM's name",
    "fqdn": "would rename the guest, whose hostname virtio-lab sets to the VM's name",
    "prefer_fqdn_over_hostname": "would rename the guest, whose hostname virtio-lab sets",
    "preserve_hostname": "would keep the image's hostname instead of the VM's name",
    "network": "the guest's network comes from the seed's network-config, which virtio-lab "
               "writes from the VM's NICs",
}

# Run as `virtio-lab-channels MAC N`. No value from the lab is in it: they are arguments.
_CHANNELS_SH = """\
#!/bin/sh
# virtio-lab: give the virtio-net NIC with MAC $1 $2 combined channels.
# udev runs it when the NIC appears (70-virtio-lab-channels.rules), cloud-init once at the
# first boot, before that rule existed. The NIC is found by its MAC, whatever its name.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mac=$1 want=$2
for dev in /sys/class/net/*; do
    [ -e "$dev/device" ] || continue  # a VLAN has its NIC's MAC, but no device
    read -r addr < "$dev/address" || continue
    [ "$addr" = "$mac" ] || continue
    set -- "$dev"/queues/rx-*
    [ "$#" -eq "$want" ] && exit 0  # ethtool fails on a count that is already set
    exec ethtool -L "${dev##*/}" combined "$want"
done
echo "virtio-lab-channels: no NIC with MAC $mac" >&2
exit 1
"""


@dataclass(frozen=True)
class SeedNic:
    mac: str  # the guest NIC's MAC, lower-case: how network-config and the channel rule find it
    address: str | None  # its static address "10.0.0.1/24"; None: up without an address
    queues: int  # combined channels the guest uses (ethtool -L NIC combined N)
    mtu: int | None  # its MTU (and its VLANs'); None: the driver's
    vlans: tuple[tuple[int, str], ...] = ()  # VLAN sub-interfaces (VID, "10.0.10.1/24")


@dataclass(frozen=True)
class SeedSpec:
    instance_id: str  # meta-data instance-id; a new one makes cloud-init apply the seed again
    hostname: str  # the guest's hostname
    nics: tuple[SeedNic, ...]  # in the VM's order: nics[N] is named nic<N> in the guest
    ssh_authorized_keys: tuple[str, ...] = ()  # for the image's default user
    user_data: Mapping[str, Any] | None = None  # the lab's extra #cloud-config keys


def guest_ifname(index: int) -> str:
    """The name the guest gives the VM's NIC number ``index``."""
    return f"nic{index}"


def vlan_ifname(index: int, vid: int) -> str:
    """The name of VLAN ``vid`` on NIC number ``index`` (PARENT.VID, as the tiny guest)."""
    return f"{guest_ifname(index)}.{vid}"


def seed_spec(
    hostname: str, nics: tuple[SeedNic, ...], ssh_authorized_keys: tuple[str, ...] = (),
    user_data: Mapping[str, Any] | None = None, *, user_data_path: str = "user_data",
) -> SeedSpec:
    """A SeedSpec whose instance id is a hash of what the seed says (its user-data and
    network-config): the same for the same seed, new whenever the seed changes."""
    spec = SeedSpec("vlab", hostname, nics, ssh_authorized_keys, user_data)
    files = seed_files(spec, user_data_path=user_data_path)
    digest = hashlib.sha256()
    for name in ("user-data", "network-config"):
        digest.update(b"%s %d\n" % (name.encode(), len(files[name])))
        digest.update(files[name])
    return SeedSpec(f"vlab-{digest.hexdigest()[:16]}", hostname, nics, ssh_authorized_keys,
                    user_data)


def seed_files(spec: SeedSpec, *, user_data_path: str = "user_data") -> dict[str, bytes]:
    """The seed's files by name: meta-data, user-data and network-config. A bad key of the
    extras is a SpecError under ``user_data_path`` (``lab.vms[0].cloud_init.user_data``); a
    bad NIC under ``nics[N]``, a bad SSH key under ``ssh_authorized_keys[N]``."""
    _check_spec(spec)
    meta = {"instance-id": spec.instance_id, "local-hostname": spec.hostname}
    user = merge_extras(_user_data(spec), spec.user_data, user_data_path, OWNED_KEYS,
                        (CHANNELS_SCRIPT, CHANNELS_RULE))
    return {
        "meta-data": dump(meta),
        "user-data": dump(user, CLOUD_CONFIG),
        "network-config": dump(network_config(spec.nics)),
    }


def seed_iso(spec: SeedSpec, *, user_data_path: str = "user_data") -> bytes:
    """The seed as an ISO 9660 image labelled cidata; the same bytes for the same spec."""
    return iso_image(seed_files(spec, user_data_path=user_data_path), VOLUME_ID)


def seed_hash(spec: SeedSpec, *, user_data_path: str = "user_data") -> str:
    """sha256 (hex) of ``seed_iso(spec)``: what a planner compares to see a seed changed."""
    return hashlib.sha256(seed_iso(spec, user_data_path=user_data_path)).hexdigest()


def network_config(nics: tuple[SeedNic, ...]) -> dict[str, Any]:
    """network-config version 2: each NIC matched by MAC and driver, renamed, static."""
    ethernets: dict[str, Any] = {}
    vlans: dict[str, Any] = {}
    for index, nic in enumerate(nics):
        name = guest_ifname(index)
        # The key is the name too: cloud-init's renderers other than netplan take a VLAN's
        # link for the name of its parent interface.
        ethernets[name] = {
            "match": {"macaddress": nic.mac.lower(), "driver": NIC_DRIVER},
            "set-name": name,
            **_addressing(nic.address, nic.mtu),
        }
        for vid, address in nic.vlans:
            vlans[vlan_ifname(index, vid)] = {"id": vid, "link": name,
                                              **_addressing(address, nic.mtu)}
    config: dict[str, Any] = {"version": 2, "ethernets": ethernets}
    if vlans:
        config["vlans"] = vlans
    return config


def _addressing(address: str | None, mtu: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"dhcp4": False, "dhcp6": False}
    if address is not None:
        out["addresses"] = [address]
    if mtu is not None:
        out["mtu"] = mtu
    return out


def _user_data(spec: SeedSpec) -> dict[str, Any]:
    """virtio-lab's own #cloud-config keys (the extras are merged into them)."""
    rules = ["# virtio-lab: combined channels of each lab NIC, found by MAC, when it appears"]
    rules += [
        f'ACTION=="add", SUBSYSTEM=="net", DRIVERS=="{NIC_DRIVER}", '
        f'ATTR{{address}}=="{nic.mac.lower()}", '
        f'RUN+="{CHANNELS_SCRIPT} {nic.mac.lower()} {nic.queues}"'
        for nic in spec.nics  # MACs and counts checked by _check_spec
    ]
    data: dict[str, Any] = {
        "hostname": spec.hostname,
        "write_files": [
            {"path": CHANNELS_SCRIPT, "owner": "root:root", "permissions": "0755",
             "content": _CHANNELS_SH},
            {"path": CHANNELS_RULE, "owner": "root:root", "permissions": "0644",
             "content": "\n".join(rules) + "\n"},
        ],
        "runcmd": [
            *([CHANNELS_SCRIPT, nic.mac.lower(), str(nic.queues)] for nic in spec.nics),
            # The images' udev rules start the agent when its port appears; this makes sure.
            ["systemctl", "enable", "--now", GUEST_AGENT],
        ],
    }
    if spec.ssh_authorized_keys:
        data["ssh_authorized_keys"] = list(spec.ssh_authorized_keys)
    return data


def _check_spec(spec: SeedSpec) -> None:
    if not isinstance(spec.instance_id, str) or not _INSTANCE_ID.match(spec.instance_id):
        raise SpecError("instance_id", f"{shown(spec.instance_id)} is not usable as a "
                        "cloud-init instance id (letters, digits, '.', '_', '-')")
    if not isinstance(spec.hostname, str) or not _HOSTNAME.match(spec.hostname):
        raise SpecError("hostname", f"{shown(spec.hostname)} is not usable as a guest hostname")
    for i, key in enumerate(spec.ssh_authorized_keys):
        if not isinstance(key, str) or not key.strip() or not key.isprintable():
            raise SpecError(f"ssh_authorized_keys[{i}]", f"{shown(key)} is not one line of "
                            "an SSH public key, such as 'ssh-ed25519 AAAA... user@host'")
    macs: dict[str, int] = {}
    for i, nic in enumerate(spec.nics):
        _check_nic(nic, f"nics[{i}]", i)
        if nic.mac.lower() in macs:
            raise SpecError(f"nics[{i}].mac", f"{nic.mac} is also nics[{macs[nic.mac.lower()]}]")
        macs[nic.mac.lower()] = i


def _check_nic(nic: SeedNic, where: str, index: int) -> None:
    if not isinstance(nic.mac, str) or not _MAC.match(nic.mac.lower()):
        raise SpecError(f"{where}.mac", f"{shown(nic.mac)} is not a MAC address")
    _check_address(f"{where}.ip", nic.address)
    if not _is_int(nic.queues) or not 1 <= nic.queues <= 256:
        raise SpecError(f"{where}.queues", f"{shown(nic.queues)} is not in 1..256")
    if nic.mtu is not None and (not _is_int(nic.mtu) or not 68 <= nic.mtu <= 65535):
        raise SpecError(f"{where}.mtu", f"{shown(nic.mtu)} is not an MTU in 68..65535")
    seen: set[int] = set()
    for j, (vid, address) in enumerate(nic.vlans):
        vwhere = f"{where}.vlans[{j}]"
        if not _is_int(vid) or not 1 <= vid <= 4094:
            raise SpecError(f"{vwhere}.vlan", f"{shown(vid)} is not a VLAN id in 1..4094")
        if vid in seen:
            raise SpecError(f"{vwhere}.vlan", f"VLAN {vid} appears twice on this NIC")
        seen.add(vid)
        if address is None:
            raise SpecError(f"{vwhere}.ip", "a VLAN sub-interface needs an address")
        _check_address(f"{vwhere}.ip", address)
        if len(vlan_ifname(index, vid)) > IFNAMSIZ:
            raise SpecError(vwhere, f"interface name {vlan_ifname(index, vid)} is over "
                            f"{IFNAMSIZ} characters")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_address(where: str, address: str | None) -> None:
    if address is None:
        return
    if not isinstance(address, str) or "/" not in address:
        raise SpecError(where, f"{shown(address)} is not an address with a /prefix, such "
                        "as 10.0.0.1/24")
    try:
        ipaddress.ip_interface(address)
    except ValueError as exc:
        raise SpecError(where, str(exc)) from None
