"""Who must reach whom, derived from the spec alone (pure): NIC endpoints, L2 segments, the
reachability and isolation pairs, and the pairs that drive traffic over every queue.

A segment is a bridge plus a VLAN. An access port (``vlan: N``) is on segment N; a port with
neither ``vlan`` nor ``trunks`` carries the guest's untagged frames on OVS's native VLAN 0. A
trunk port carries only tagged frames: the guest reaches VLAN N of a trunk through its VLAN
interface ``<nic>.N``, so each trunk VLAN with an address is an endpoint of its own, on
segment N, and takes part in reachability, isolation and traffic like an access NIC.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, replace

from provision.core.owner import domain_name, nic_mac, tap_name
from provision.core.placement import guest_mtus
from provision.core.spec import Lab, nic_queues


@dataclass(frozen=True)
class Endpoint:
    """One NIC of the lab, with everything the checks need to find and judge it."""

    lab: str
    vm: str
    index: int  # position in the VM's nics
    domain: str  # libvirt domain
    tap: str  # tap and OVS port
    mac: str
    ip: str | None  # "10.10.0.11/24"
    bridge: str
    vlan: int | None
    trunks: tuple[int, ...]
    queues: int
    vcpus: int
    guest_vlan: int | None = None  # a trunk VLAN: the guest's VLAN interface <nic>.<vid>
    host: str = "localhost"  # the inventory host that runs the VM
    mtu: int = 1500  # the guest NIC's MTU (less on a bridge that spans hypervisors)
    outside: str | None = None  # not a NIC but an uplink's probe address, named so

    @property
    def target(self) -> str:
        if self.outside is not None:
            return self.outside
        nic = f"{self.lab}/{self.vm}/{self.index}"
        return nic if self.guest_vlan is None else f"{nic}.{self.guest_vlan}"

    @property
    def address(self) -> str | None:
        return self.ip.split("/", 1)[0] if self.ip else None

    @property
    def segment(self) -> tuple[str, int] | None:
        """(bridge, VLAN) the guest's untagged frames live on; None for a trunk port."""
        if self.trunks:
            return None
        return (self.bridge, self.vlan or 0)

    def segment_name(self) -> str:
        seg = self.segment
        if seg is None:
            return f"{self.bridge} trunk {list(self.trunks)}"
        return f"{seg[0]} VLAN {seg[1]}" if seg[1] else f"{seg[0]} untagged"


def endpoints(lab: Lab) -> list[Endpoint]:
    """One endpoint per NIC: what the per-NIC hops (domain, QEMU, tap, OVS, guest) check."""
    mtus = guest_mtus(lab)
    out = []
    for vm in lab.vms:
        for i, nic in enumerate(vm.nics):
            out.append(Endpoint(
                lab=lab.name, vm=vm.name, index=i, domain=domain_name(lab.name, vm.name),
                tap=tap_name(lab.name, vm.name, i), mac=nic_mac(lab.name, vm.name, i, nic.mac),
                ip=str(nic.ip) if nic.ip else None, bridge=nic.bridge, vlan=nic.vlan,
                trunks=nic.trunk_vlans, queues=nic_queues(vm, nic), vcpus=vm.vcpus,
                host=vm.host, mtu=mtus.get(nic.bridge, 1500),
            ))
    return out


def l3_endpoints(lab: Lab) -> list[Endpoint]:
    """The endpoints of the reachability matrix and traffic: each access or untagged NIC,
    and in place of a trunk NIC each of its VLANs (a guest VLAN interface)."""
    out = []
    for ep in endpoints(lab):
        nic = lab.vm(ep.vm).nics[ep.index]
        if not nic.trunks:
            out.append(ep)
            continue
        out += [replace(ep, ip=str(t.ip) if t.ip else None, vlan=t.vlan, trunks=(),
                        guest_vlan=t.vlan) for t in nic.trunks]
    return out


def pair_target(a: Endpoint, b: Endpoint) -> str:
    return f"{a.target}->{b.target}"


def excluded(eps: list[Endpoint]) -> list[tuple[Endpoint, str]]:
    """Endpoints (of ``l3_endpoints``) the reachability matrix cannot judge, with the reason."""
    out = []
    for ep in eps:
        if ep.segment is None:
            out.append((ep, "trunk port: its VLANs are the endpoints, not the NIC"))
        elif ep.address is None:
            where = f"trunks VLAN {ep.guest_vlan}" if ep.guest_vlan else "the NIC"
            out.append((ep, f"no ip for {where} in the lab file: nothing to ping"))
    return out


def _candidates(eps: list[Endpoint]) -> list[Endpoint]:
    return [e for e in eps if e.segment is not None and e.address is not None]


def same_subnet(a: Endpoint, b: Endpoint) -> bool:
    if a.ip is None or b.ip is None:
        return False
    return ipaddress.IPv4Interface(a.ip).network == ipaddress.IPv4Interface(b.ip).network


def reach_pairs(eps: list[Endpoint]) -> list[tuple[Endpoint, Endpoint]]:
    """Every unordered pair on one segment, on different VMs: each must reach the other."""
    c = _candidates(eps)
    return [(a, b) for i, a in enumerate(c) for b in c[i + 1 :]
            if a.segment == b.segment and a.vm != b.vm]


def isolation_pairs(eps: list[Endpoint]) -> list[tuple[Endpoint, Endpoint]]:
    """Every unordered pair on one bridge but different VLANs: neither may reach the other."""
    c = _candidates(eps)
    return [(a, b) for i, a in enumerate(c) for b in c[i + 1 :]
            if a.bridge == b.bridge and a.segment != b.segment and a.vm != b.vm]


def traffic_pairs(
    eps: list[Endpoint],
) -> tuple[list[tuple[Endpoint, Endpoint]], list[tuple[Endpoint, str]]]:
    """Pairs that exchange traffic so that every NIC with a peer on its segment takes part
    in one, and the NICs without a peer (with the reason they cannot be driven)."""
    by_segment: dict[tuple[str, int], list[Endpoint]] = defaultdict(list)
    for ep in _candidates(eps):
        by_segment[ep.segment].append(ep)  # type: ignore[index]
    pairs: list[tuple[Endpoint, Endpoint]] = []
    lonely: list[tuple[Endpoint, str]] = []
    for members in by_segment.values():
        covered: set[Endpoint] = set()
        for ep in members:
            if ep in covered:
                continue
            others = [o for o in members if o.vm != ep.vm]
            peer = next((o for o in others if o not in covered), others[0] if others else None)
            if peer is None:
                lonely.append((ep, f"no NIC of another VM on {ep.segment_name()}: without a "
                                   "peer (and with no host address on lab bridges) nothing "
                                   "can exchange traffic with it"))
                continue
            pairs.append((ep, peer))
            covered.update((ep, peer))
    return pairs, lonely


def from_here(pairs: list[tuple[Endpoint, Endpoint]], local: set[str]
              ) -> list[tuple[Endpoint, Endpoint]]:
    """The pairs this host checks: those with an end among its domains ``local``, that end
    first (the source). A pair across hypervisors is checked from both of them."""
    out = []
    for a, b in pairs:
        if a.domain in local:
            out.append((a, b))
        elif b.domain in local:
            out.append((b, a))
    return out


def probe_pairs(lab: Lab, eps: list[Endpoint]) -> list[tuple[Endpoint, Endpoint]]:
    """(NIC, outside address) for each bridge whose uplink names a ``probe``: every NIC on a
    VLAN the uplink carries, in the probe's subnet, must reach it."""
    pairs = []
    for bridge in lab.bridges:
        up = bridge.uplink
        if up is None or up.probe is None:
            continue
        carried = ({up.tag} if up.tag else set(up.vlans)) or None  # None: every VLAN
        for ep in _candidates(eps):
            seg = ep.segment
            if seg is None or seg[0] != bridge.name:
                continue
            if carried is not None and seg[1] not in carried:
                continue
            if up.probe not in ipaddress.IPv4Interface(ep.ip).network:  # type: ignore[arg-type]
                continue
            outside = replace(ep, vm="", domain="", tap=up.interface, mac="", host="",
                              ip=f"{up.probe}/32", guest_vlan=None,
                              outside=f"{up.probe} via uplink {up.interface}")
            pairs.append((ep, outside))
    return pairs

