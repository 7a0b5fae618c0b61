"""Where a lab's VMs run, from the lab alone: which inventory hosts carry VMs on each bridge,
and the guest MTU a bridge that spans hosts needs (its frames cross a tunnel). Pure."""

from __future__ import annotations

from provision.core.spec import Lab

# What a tunnel puts around a guest's IP packet inside one underlay IP packet: outer IPv4
# 20 + UDP 8 + the tunnel header (Geneve 8 with no options, VXLAN 8) + the inner frame's
# Ethernet header 14 and 802.1Q tag 4 (VLANs travel inside). Measured between two
# hypervisors: with underlay MTU - 50, full-size frames of a VLAN were lost.
OVERHEAD = {"geneve": 54, "vxlan": 54}


def bridge_hosts(lab: Lab) -> dict[str, tuple[str, ...]]:
    """For each bridge, the inventory hosts that run VMs with a NIC on it, sorted."""
    hosts: dict[str, set[str]] = {b.name: set() for b in lab.bridges}
    for vm in lab.vms:
        for nic in vm.nics:
            hosts[nic.bridge].add(vm.host)
    return {name: tuple(sorted(h)) for name, h in hosts.items()}


def spanning(lab: Lab) -> tuple[str, ...]:
    """The bridges with VMs on more than one host: each has a tunnel mesh."""
    return tuple(b for b, hosts in bridge_hosts(lab).items() if len(hosts) > 1)


def guest_mtus(lab: Lab) -> dict[str, int]:
    """The guest MTU on each spanning bridge: the underlay's minus the encapsulation, so a
    full-size guest frame still fits in one underlay packet. Other bridges: the default."""
    mtu = lab.tunnels.underlay_mtu - OVERHEAD[lab.tunnels.type]
    return dict.fromkeys(spanning(lab), mtu)
