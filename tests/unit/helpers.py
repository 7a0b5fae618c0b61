"""Fixed inputs for the pure tests: a host, an image and labs, built without any I/O."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from provision.core import domxml
from provision.core.desired import DesiredLab
from provision.core.observed import (
    ObservedBridge,
    ObservedDomain,
    ObservedGuestNic,
    ObservedGuestVlan,
    ObservedLab,
    ObservedPool,
    ObservedPort,
    ObservedTap,
    ObservedVolume,
)
from provision.core.owner import Owner
from provision.core.spec import Lab, parse_lab
from provision.host.probe import HostCaps
from provision.image.cache import GuestImage
from provision.image.seed import SeedNic, SeedSpec, seed_spec

IMAGE = GuestImage(
    name="tiny",
    kernel=Path("/var/cache/virtio-lab/images/tiny/kernel"),
    initrd=Path("/var/cache/virtio-lab/images/tiny/initrd"),
    cmdline="console=ttyS0 quiet",
    content_hash="0" * 64,
    kernel_version="6.1.0-test-amd64",
)


def caps(vhost: bool = False, kvm: bool = False, ovs_kernel: bool = False) -> HostCaps:
    return HostCaps(
        kvm_usable=kvm, kvm_reason="test", vhost_net=vhost, vhost_reason="test",
        ovs_kernel_datapath=ovs_kernel, ovs_reason="test",
        ovs_datapath_types=("netdev", "system"),
        emulator="/usr/bin/qemu-system-x86_64", machine="pc",
    )


BASE: dict[str, Any] = {
    "name": "ut",
    "bridges": [{"name": "br-ut"}],
    "vms": [
        {"name": "vm1", "vcpus": 4, "nics": [
            {"bridge": "br-ut", "vlan": 100, "queues": 4, "ip": "10.9.0.1/24"}]},
        {"name": "vm2", "vcpus": 2, "memory_mib": 192, "nics": [
            {"bridge": "br-ut", "trunks": [200, {"vlan": 100, "ip": "10.9.0.2/24"}],
             "mac": "52:54:00:00:00:02", "rx_queue_size": 1024}]},
    ],
}


def lab_data(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def lab(**changes: Any) -> Lab:
    return parse_lab(lab_data(**changes))


def mutated(path: list, value: object) -> dict[str, Any]:
    """The base lab's data with the value at ``path`` (keys and indices) replaced."""
    data = lab_data()
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


# The NoCloud seed tests (test_seed, test_seed_iso): two NICs, one a trunk with VLANs; MAC2 is
# one that a YAML 1.1 reader takes for a base-60 number unless it is quoted.
SEED_MAC1, SEED_MAC2, SEED_MAC3 = "52:54:00:aa:00:01", "52:54:00:12:34:56", "52:54:00:aa:00:03"
SEED_NIC = SeedNic(SEED_MAC1, "10.9.0.1/24", 4, 1446)
SEED_TRUNK = SeedNic(SEED_MAC2, None, 1, None, ((30, "10.0.30.1/24"), (31, "10.0.31.1/24")))
SEED_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxVb2qTQp0cK1tZ lab@host"
SEED_WHERE = "lab.vms[0].cloud_init.user_data"  # the key path of the lab's extras
SEED_FILES = ("meta-data", "network-config", "user-data")


def seed(*nics: SeedNic, keys: tuple[str, ...] = (), extras: Any = None) -> SeedSpec:
    """The seed of VM vm1 with ``nics`` (by default SEED_NIC), its instance id derived."""
    return seed_spec("vm1", nics or (SEED_NIC,), keys, extras, user_data_path=SEED_WHERE)


def in_sync(want: DesiredLab) -> ObservedLab:
    """What the host holds right after a successful `up` of ``want``."""
    seen = ObservedLab(lab=want.lab, guests_observed=True)
    on_bridge: dict[str, list[str]] = {b.name: [] for b in want.bridges}
    for p in want.ports:
        on_bridge[p.bridge].append(p.name)
        seen.ports[p.name] = ObservedPort(p.name, p.bridge, p.tag, p.trunks,
                                          {**p.external_ids, "attached-mac": "x"}, ofport=7)
    for b in want.bridges:
        seen.bridges[b.name] = ObservedBridge(b.name, b.datapath_type, Owner(want.lab),
                                              tuple(on_bridge[b.name]))
    for t in want.taps:
        seen.taps[t.name] = ObservedTap(t.name, t.owner, True, t.multi_queue, t.queues)
    for d in want.domains:
        seen.domains[d.name] = ObservedDomain(d.name, Owner(want.lab, d.vm), True,
                                              domxml.domain_facts(d.xml))
        seen.guests[d.name] = {n.mac: _guest_nic(i, n) for i, n in enumerate(d.nics)}
    if want.pool is not None:
        seen.pools[want.pool.name] = ObservedPool(want.pool.name, want.pool.path,
                                                  want.pool.owner, True)
        for v in want.volumes:
            seen.volumes[v.name] = ObservedVolume(
                v.name, v.pool, f"{want.pool.path}/{v.name}",
                "qcow2" if v.kind == "overlay" else "iso", v.backing, v.content_hash)
    return seen


def _guest_nic(index: int, nic: Any) -> ObservedGuestNic:
    name = f"eth{index}"
    vlans = tuple(ObservedGuestVlan(v.vid, f"{name}.{v.vid}", (v.ip,), True) for v in nic.vlans)
    return ObservedGuestNic(nic.mac, name, nic.queues, nic.queues, (nic.ip,) if nic.ip else (),
                            True, "virtio_net", vlans)
