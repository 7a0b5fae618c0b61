"""Desired state: what the host must hold for a lab, derived from the spec and the host caps.

Pure: no I/O. ``desired_state()`` resolves ``auto`` choices against ``HostCaps``, names every
object, tags it as owned by the lab, and renders each domain's XML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from provision.core import disks as disks_mod
from provision.core import render
from provision.core.disks import DesiredPool, DesiredVolume
from provision.core.owner import Owner, domain_name, nic_mac, tap_name
from provision.core.placement import guest_mtus
from provision.core.spec import Lab, VmSpec, nic_queues, spec_hash
from provision.errors import HostError, SpecError
from provision.host.probe import HostCaps
from provision.image.cache import DiskImage, GuestImage
from provision.image.cmdline import guest_cmdline


@dataclass(frozen=True)
class DesiredBridge:
    name: str  # OVS Bridge.name
    datapath_type: str  # OVS Bridge.datapath_type: system | netdev
    owner: Owner  # Bridge.external_ids, when the lab creates it (a user's bridge stays theirs)


@dataclass(frozen=True)
class DesiredPort:
    name: str  # OVS Port.name and Interface.name (= the tap)
    bridge: str  # OVS Bridge that holds the port
    tag: int | None  # OVS Port.tag (access VLAN)
    trunks: tuple[int, ...]  # OVS Port.trunks
    owner: Owner  # Port and Interface external_ids
    type: str = ""  # OVS Interface.type: "" (a tap or a host NIC), "geneve", "vxlan"
    options: tuple[tuple[str, str], ...] = ()  # OVS Interface.options, sorted by key
    role: str = "nic"  # "nic" (a VM's tap), "uplink" (a host NIC), "tunnel" (to a peer host)
    # OVS Port.protected: NORMAL never forwards between two protected ports. Tunnels are: a
    # frame from one peer goes to local ports only (split horizon), or a full mesh of three
    # or more hosts floods broadcasts around in a loop (measured: a storm of millions).
    protected: bool = False

    @property
    def external_ids(self) -> dict[str, str]:
        return self.owner.external_ids()


@dataclass(frozen=True)
class DesiredTap:
    name: str  # Linux interface name
    owner: Owner  # IFLA_IFALIAS
    queues: int  # queues QEMU attaches while the VM runs

    @property
    def multi_queue(self) -> bool:
        """IFF_MULTI_QUEUE: libvirt opens a 1-queue NIC's tap without it, and the kernel
        refuses to open a multi_queue tap that way (EINVAL), so only N > 1 gets it."""
        return self.queues > 1

    @property
    def alias(self) -> str:
        return self.owner.tap_alias()


@dataclass(frozen=True)
class GuestVlan:
    vid: int  # 802.1Q VID of the guest's VLAN interface <parent>.<vid>
    ip: str  # its address, "10.0.30.2/24"


@dataclass(frozen=True)
class GuestNic:
    domain: str  # the libvirt domain whose guest has the NIC
    mac: str  # the NIC inside the guest is found by its MAC
    ip: str | None  # "10.10.0.11/24"
    queues: int  # ethtool -L combined
    vlans: tuple[GuestVlan, ...] = ()  # VLAN interfaces on a trunk NIC


@dataclass(frozen=True)
class DesiredDomain:
    name: str  # libvirt domain name
    vm: str  # VM name in the spec
    xml: str  # rendered domain XML
    nics: tuple[GuestNic, ...]  # what the guest must show
    cloud_init: bool = False  # boots a disk image with a seed: up waits for cloud-init


@dataclass(frozen=True)
class DesiredLab:
    lab: str
    backend: str  # "vhost-net" | "userspace": the virtio backend in the host
    domain_type: str  # "kvm" | "qemu"
    bridges: tuple[DesiredBridge, ...]
    taps: tuple[DesiredTap, ...]
    ports: tuple[DesiredPort, ...]
    domains: tuple[DesiredDomain, ...]
    notes: tuple[str, ...] = ()  # what resolving the lab here decided that a plan should say
    pool: DesiredPool | None = None  # only a lab with disk-image VMs has one
    volumes: tuple[DesiredVolume, ...] = ()
    accel: str = ""  # HostCaps.accel: kvm, tcg single-threaded or tcg multi-threaded


def resolve_backend(lab: Lab, caps: HostCaps, strict: bool = True) -> str:
    """The virtio backend for the lab; HostError when the spec asks what the host lacks
    (``strict=False``: what the lab asks, so that verify can show the fallback)."""
    if lab.backend == "vhost-net" and not caps.vhost_net_usable and strict:
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


Images = GuestImage | Mapping[str, GuestImage | DiskImage]


def desired_state(lab: Lab, caps: HostCaps, image: Images, strict: bool = True,
                  mtus: Mapping[str, int] | None = None) -> DesiredLab:
    """Everything the lab owns on this host, named, tagged and rendered; ``strict=False``
    renders a backend the host cannot give as asked (for verify) instead of refusing.
    ``image``: what every VM boots, or what each boots by VM name (``image.resolve``).
    ``mtus``: the guest MTU of NICs per bridge (``tunnels.guest_mtus`` of the whole lab,
    when ``lab`` holds only one host's VMs); by default from ``lab`` itself."""
    mtus = guest_mtus(lab) if mtus is None else mtus
    backend = resolve_backend(lab, caps, strict)
    bridges = tuple(
        DesiredBridge(b.name, resolve_bridge_type(lab, i, caps), Owner(lab.name))
        for i, b in enumerate(lab.bridges)
    )
    taps: list[DesiredTap] = []
    ports: list[DesiredPort] = []
    domains: list[DesiredDomain] = []
    volumes: list[DesiredVolume] = []
    for vm in lab.vms:
        for i, nic in enumerate(vm.nics):
            tap = tap_name(lab.name, vm.name, i)
            owner = Owner(lab.name, vm.name, i)
            taps.append(DesiredTap(tap, owner, nic_queues(vm, nic)))
            ports.append(DesiredPort(tap, nic.bridge, nic.vlan, nic.trunk_vlans, owner))
        vm_image = image if isinstance(image, GuestImage) else image[vm.name]
        dom, disks = _desired_domain(lab, vm, caps, vm_image, backend, bridges, mtus)
        domains.append(dom)
        volumes.extend((disks.overlay, disks.seed) if disks else ())
    ports.extend(
        DesiredPort(b.uplink.interface, b.name, b.uplink.tag, b.uplink.trunks, Owner(lab.name),
                    role="uplink")
        for b in lab.bridges if b.uplink is not None
    )
    return DesiredLab(
        lab.name, backend, caps.domain_type, bridges, tuple(taps), tuple(ports), tuple(domains),
        pool=disks_mod.lab_pool(lab.name) if volumes else None, volumes=tuple(volumes),
        accel=caps.accel,
    )


def _guest_nics(lab: Lab, vm: VmSpec) -> tuple[GuestNic, ...]:
    name = domain_name(lab.name, vm.name)
    return tuple(
        GuestNic(
            name,
            nic_mac(lab.name, vm.name, i, nic.mac),
            str(nic.ip) if nic.ip else None,
            nic_queues(vm, nic),
            # Only a trunk VLAN with an address gets a VLAN interface in the guest.
            tuple(GuestVlan(t.vlan, str(t.ip)) for t in nic.trunks or () if t.ip),
        )
        for i, nic in enumerate(vm.nics)
    )


def _cmdline(lab: Lab, vm: VmSpec, image: GuestImage, nics: tuple[GuestNic, ...]) -> str:
    try:
        return guest_cmdline(
            image, vm.name,
            [(n.mac, n.ip, n.queues, [(v.vid, v.ip) for v in n.vlans]) for n in nics],
        )
    except SpecError as exc:  # its key path is below the VM: name the VM
        where = f"lab.vms[{lab.vms.index(vm)}]"
        raise SpecError(f"{where}.{exc.path}" if exc.path else where,
                        str(exc).removeprefix(f"{exc.path}: ")) from None


def _desired_domain(
    lab: Lab, vm: VmSpec, caps: HostCaps, image: GuestImage | DiskImage, backend: str,
    bridges: tuple[DesiredBridge, ...], mtus: Mapping[str, int],
) -> tuple[DesiredDomain, disks_mod.VmDisks | None]:
    """The domain, and the volumes it boots from when ``image`` is a disk."""
    nics = _guest_nics(lab, vm)
    name = domain_name(lab.name, vm.name)
    disks = None
    if isinstance(image, DiskImage):
        nic_mtus = {n.mac: mtus.get(s.bridge) for n, s in zip(nics, vm.nics, strict=True)}
        disks = disks_mod.vm_disks(lab, vm, image, nics, nic_mtus)
        cmdline = ""
    else:
        cmdline = _cmdline(lab, vm, image, nics)
    netdev = {b.name for b in bridges if b.datapath_type == "netdev"}
    nic_ctx = [
        {
            "mac": n.mac,
            "tap": tap_name(lab.name, vm.name, i),
            "queues": n.queues,
            "rx_queue_size": spec.rx_queue_size,
            "tx_queue_size": spec.tx_queue_size,
            # OVS's userspace datapath never completes checksums a guest leaves to the NIC
            # (TCP dies with bad checksums while ping works): no offload on netdev bridges.
            "host_csum": spec.bridge not in netdev,
            "mtu": mtus.get(spec.bridge),  # <mtu size>: the tap's and the guest NIC's MTU
        }
        for i, (n, spec) in enumerate(zip(nics, vm.nics, strict=True))
    ]
    xml = render.domain_xml(
        lab=lab.name,
        name=name,
        vm=vm,
        nics=nic_ctx,
        image=image,
        cmdline=cmdline,
        domain_type=caps.domain_type,
        backend=backend,
        spec_hash=spec_hash(vm),
        emulator=caps.domain_emulator,
        machine=caps.machine,
        disk=disks.context(lab.name) if disks else None,
    )
    return DesiredDomain(name, vm.name, xml, nics, cloud_init=disks is not None), disks
