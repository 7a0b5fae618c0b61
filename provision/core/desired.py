"""Desired state: what the host must hold for a lab, derived from the spec and the host caps.

Pure: no I/O. ``desired_state()`` resolves ``auto`` choices against ``HostCaps``, names every
object, tags it as owned by the lab, and renders each domain's XML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provision.core import render
from provision.core.spec import Lab, VmSpec, domain_name, nic_mac, nic_queues, spec_hash, tap_name
from provision.errors import HostError
from provision.host.probe import HostCaps
from provision.image.build import GuestImage, guest_cmdline

# external_ids keys on OVS rows, and the prefix of a tap's ifalias.
OWNER_LAB = "virtio-lab-lab"
OWNER_VM = "virtio-lab-vm"
OWNER_NIC = "virtio-lab-nic"
TAP_ALIAS_PREFIX = "virtio-lab:"


@dataclass(frozen=True)
class DesiredBridge:
    name: str  # OVS Bridge.name
    datapath_type: str  # OVS Bridge.datapath_type: system | netdev


@dataclass(frozen=True)
class DesiredPort:
    name: str  # OVS Port.name and Interface.name (= the tap)
    bridge: str  # OVS Bridge that holds the port
    tag: int | None  # OVS Port.tag (access VLAN)
    trunks: tuple[int, ...]  # OVS Port.trunks
    external_ids: dict[str, str] = field(hash=False)  # ownership tags, on Port and Interface


@dataclass(frozen=True)
class DesiredTap:
    name: str  # Linux interface name
    alias: str  # IFLA_IFALIAS: the ownership tag
    queues: int  # queues QEMU attaches while the VM runs


@dataclass(frozen=True)
class GuestNic:
    mac: str  # the NIC inside the guest is found by its MAC
    ip: str | None  # "10.10.0.11/24"
    queues: int  # ethtool -L combined


@dataclass(frozen=True)
class DesiredDomain:
    name: str  # libvirt domain name
    vm: str  # VM name in the spec
    xml: str  # rendered domain XML
    nics: tuple[GuestNic, ...]  # what the guest must show


@dataclass(frozen=True)
class DesiredLab:
    lab: str
    backend: str  # "vhost-net" | "userspace": the virtio backend in the host
    domain_type: str  # "kvm" | "qemu"
    bridges: tuple[DesiredBridge, ...]
    taps: tuple[DesiredTap, ...]
    ports: tuple[DesiredPort, ...]
    domains: tuple[DesiredDomain, ...]


def resolve_backend(lab: Lab, caps: HostCaps) -> str:
    """The virtio backend for the lab; HostError when the spec asks what the host lacks."""
    if lab.backend == "vhost-net" and not caps.vhost_net_usable:
        fix = ("load it with `modprobe vhost_net`" if not caps.vhost_net
               else "run the lab where KVM works (`provision host check` says why not here)")
        raise HostError(
            f"lab.backend: vhost-net is not available on this host ({caps.backend_reason}); "
            f"{fix}, or set backend: auto or userspace"
        )
    if lab.backend == "auto":
        return caps.best_backend
    return lab.backend


def resolve_bridge_type(lab: Lab, index: int, caps: HostCaps) -> str:
    wanted = lab.bridges[index].datapath_type
    if wanted == "system" and not caps.ovs_kernel_datapath:
        raise HostError(
            f"lab.bridges[{index}].datapath_type: system needs the openvswitch kernel module "
            f"({caps.ovs_reason}); `modprobe openvswitch`, or use auto or netdev"
        )
    return caps.best_ovs_datapath_type if wanted == "auto" else wanted


def desired_state(lab: Lab, caps: HostCaps, image: GuestImage) -> DesiredLab:
    """Everything the lab owns on this host, named, tagged and rendered."""
    backend = resolve_backend(lab, caps)
    bridges = tuple(
        DesiredBridge(b.name, resolve_bridge_type(lab, i, caps)) for i, b in enumerate(lab.bridges)
    )
    taps: list[DesiredTap] = []
    ports: list[DesiredPort] = []
    domains: list[DesiredDomain] = []
    for vm in lab.vms:
        for i, nic in enumerate(vm.nics):
            tap = tap_name(lab.name, vm.name, i)
            taps.append(DesiredTap(tap, tap_alias(lab.name, vm.name, i), nic_queues(vm, nic)))
            ids = {OWNER_LAB: lab.name, OWNER_VM: vm.name, OWNER_NIC: str(i)}
            ports.append(DesiredPort(tap, nic.bridge, nic.vlan, nic.trunks or (), ids))
        domains.append(_desired_domain(lab, vm, caps, image, backend, bridges))
    return DesiredLab(
        lab.name, backend, caps.domain_type, bridges, tuple(taps), tuple(ports), tuple(domains)
    )


def tap_alias(lab: str, vm: str, index: int) -> str:
    return f"{TAP_ALIAS_PREFIX}lab={lab} vm={vm} nic={index}"


def parse_tap_alias(alias: str | None) -> dict[str, str] | None:
    """The ownership tag of a tap, or None when the tap is not virtio-lab's."""
    if not alias or not alias.startswith(TAP_ALIAS_PREFIX):
        return None
    pairs = (item.partition("=") for item in alias[len(TAP_ALIAS_PREFIX) :].split())
    return {k: v for k, _, v in pairs}


def _desired_domain(
    lab: Lab, vm: VmSpec, caps: HostCaps, image: GuestImage, backend: str,
    bridges: tuple[DesiredBridge, ...],
) -> DesiredDomain:
    nics = tuple(
        GuestNic(
            nic_mac(lab.name, vm.name, i, nic),
            str(nic.ip) if nic.ip else None,
            nic_queues(vm, nic),
        )
        for i, nic in enumerate(vm.nics)
    )
    name = domain_name(lab.name, vm.name)
    cmdline = guest_cmdline(image, vm.name, [(n.mac, n.ip, n.queues) for n in nics])
    xml = render.domain_xml(
        lab=lab.name,
        name=name,
        vm=vm,
        taps=[tap_name(lab.name, vm.name, i) for i in range(len(vm.nics))],
        nics=nics,
        userspace_bridge=[
            next(b.datapath_type for b in bridges if b.name == nic.bridge) == "netdev"
            for nic in vm.nics
        ],
        image=image,
        cmdline=cmdline,
        domain_type=caps.domain_type,
        backend=backend,
        spec_hash=spec_hash(vm),
        emulator=caps.emulator,
        machine=caps.machine,
    )
    return DesiredDomain(name, vm.name, xml, nics)
