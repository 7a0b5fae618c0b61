"""Tunnels between hypervisors: for every lab bridge with VMs on more than one inventory
host, each host's copy of the bridge gets one tunnel port to every other such host.

A tunnel is an OVS port like the others (``DesiredPort`` with ``type`` geneve or vxlan), owned
by the lab, so observation, plan and ``down`` treat it like a tap's port: created, modified
(a peer's address changed) or deleted (the peer no longer carries VMs on the bridge) in the
same OVSDB transaction. VLAN tags travel inside the tunnel: the port has no tag and no
trunks, so it carries every VLAN of the bridge. Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from provision.core.desired import DesiredPort
from provision.core.owner import Owner
from provision.core.placement import bridge_hosts
from provision.core.spec import Lab
from provision.errors import SpecError

UNDERLAY_VAR = "virtio_lab_underlay_ip"  # the inventory host variable with its underlay address


def vni(lab: str, bridge: str) -> int:
    """The tunnel key of a lab bridge: stable across runs and hosts, 1..2^24-1."""
    digest = hashlib.sha256(f"{lab}/{bridge}".encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % (2**24 - 1)


def tunnel_name(lab: str, bridge: str, peer: str) -> str:
    """The OVS port (and interface) of the tunnel to ``peer``: 13 characters, fits IFNAMSIZ."""
    return "vt" + hashlib.sha256(f"{lab}/{bridge}/{peer}".encode()).hexdigest()[:11]


def untunnelled(lab: Lab, host: str, underlay: Mapping[str, str | None]) -> list[str]:
    """Notes for the bridges ``host`` shares with other hosts while no host of them has an
    underlay address: they get no tunnels, so their VMs on different hosts cannot meet."""
    return [f"bridge {bridge} has VMs on {', '.join(hosts)} but none of these hosts has "
            f"{UNDERLAY_VAR}: no tunnels, so VMs on different hosts cannot reach each other"
            for bridge, hosts in bridge_hosts(lab).items()
            if host in hosts and len(hosts) > 1 and not any(underlay.get(h) for h in hosts)]


def desired_tunnels(lab: Lab, host: str, underlay: Mapping[str, str | None],
                    kind: str = "geneve") -> tuple[DesiredPort, ...]:
    """The tunnel ports ``host`` holds for the whole ``lab`` (every VM, not only its own):
    one per (bridge, peer) where both run VMs on the bridge. ``underlay`` maps inventory
    hosts to their underlay addresses; where some hosts of a bridge have one, a peer without
    one is a SpecError naming its var (where none has, see ``untunnelled``)."""
    ports = []
    for bridge, hosts in bridge_hosts(lab).items():
        if host not in hosts or len(hosts) < 2:
            continue
        if not any(underlay.get(h) for h in hosts):
            continue  # tunnels not set up at all: ``untunnelled`` says so in the plan
        for peer in hosts:
            if peer == host:
                continue
            remote = underlay.get(peer)
            if not remote:
                raise SpecError(
                    f"all.hosts.{peer}.{UNDERLAY_VAR}",
                    f"is not set: bridge {bridge} has VMs on {peer} and {host}, and the "
                    "tunnel between them needs each host's underlay address",
                )
            ports.append(DesiredPort(
                tunnel_name(lab.name, bridge, peer), bridge, None, (), Owner(lab.name),
                type=kind,
                options=(("key", str(vni(lab.name, bridge))), ("remote_ip", str(remote))),
                role="tunnel", protected=True,
            ))
    return tuple(ports)
