"""Inside the guests, through the QEMU guest agent (libvirt): the guest's view of each NIC
(``guest.nic``), and ``run_sh``, how every check runs its constant scripts in a guest (the
reachability matrix's pings are in ``pings``).

Scripts are constant text; targets reach them as positional arguments, never interpolated
into the script.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from provision.backends import agent
from provision.core import compare
from provision.core.desired import GuestNic
from provision.core.observed import ObservedGuestNic
from provision.verify.matrix import Endpoint
from provision.verify.model import Check, verdict


def run_sh(dom: libvirt.virDomain, script: str, args: list[str],
           timeout: float = 30.0) -> tuple[int, str, str]:
    """Run a constant shell script in the guest with ``args`` as $1.. ."""
    return agent.guest_exec(dom, "/bin/sh", ["-c", script, "vlab", *args], timeout=timeout)


@dataclass(frozen=True)
class GuestIface:
    """The guest interface an endpoint sends from: the NIC, or a VLAN interface on it."""

    ifname: str  # what ping -I and iperf3 --bind-dev use
    parent: str  # the virtio NIC, whose queues and counters carry the traffic
    addresses: tuple[str, ...]
    up: bool


@dataclass
class GuestView:
    """One VM's NICs as its agent reports them, or why the agent could not be asked."""

    nics: dict[str, ObservedGuestNic]
    error: str | None = None

    def nic(self, mac: str) -> ObservedGuestNic | None:
        return self.nics.get(mac)

    def iface(self, ep: Endpoint) -> GuestIface | None:
        nic = self.nics.get(ep.mac)
        if nic is None:
            return None
        if ep.guest_vlan is None:
            return GuestIface(nic.ifname, nic.ifname, nic.addresses, nic.up)
        vlan = nic.vlan(ep.guest_vlan)
        if vlan is None:
            return None
        return GuestIface(vlan.ifname, nic.ifname, vlan.addresses, vlan.up and nic.up)

    def missing(self, ep: Endpoint) -> str:
        """Why ``iface(ep)`` is None, for a failed check."""
        if ep.guest_vlan is not None and ep.mac in self.nics:
            return f"no VLAN {ep.guest_vlan} interface on the NIC with MAC {ep.mac} in the guest"
        return f"no interface with MAC {ep.mac} in the guest"


def observe_guest(dom: libvirt.virDomain | None, running: bool) -> GuestView:
    if dom is None or not running:
        return GuestView({}, "the domain is not running")
    try:
        return GuestView(agent.observe_nics(dom))
    except agent.AgentError as exc:
        return GuestView({}, f"the guest agent did not answer: {exc}")


def healthy(iface: GuestIface | None, ep: Endpoint) -> bool:
    """The guest interface is there, up, and carries its address: it could answer a ping."""
    return iface is not None and iface.up and (ep.ip is None or ep.ip in iface.addresses)


def guest_nic_check(view: GuestView, ep: Endpoint, want: GuestNic) -> Check:
    """The planner's comparison of the guest NIC (channels, link, addresses, VLAN
    interfaces), plus what only verify looks at: the driver and the maximum channels."""
    if view.error:
        return verdict("guest.nic", ep.target, [view.error], {"mac": ep.mac})
    nic = view.nic(ep.mac)
    if nic is None:
        return verdict("guest.nic", ep.target, [f"no interface with MAC {ep.mac} in the guest"],
                       {"mac": ep.mac, "seen": sorted(view.nics)})
    problems = []
    if nic.driver != "virtio_net":
        problems.append(f"driver is {nic.driver}, not virtio_net")
    if nic.max_combined != ep.queues:
        problems.append(f"ethtool -l maximum combined is {nic.max_combined}, want {ep.queues}")
    problems += [str(d) for d in compare.guest_nic_diffs(want, nic)]
    evidence = {"ifname": nic.ifname, "mac": nic.mac, "driver": nic.driver, "up": nic.up,
                "max_combined": nic.max_combined, "combined": nic.combined,
                "addresses": list(nic.addresses),
                "vlans": [{"vid": v.vid, "ifname": v.ifname, "up": v.up,
                           "addresses": list(v.addresses)} for v in nic.vlans]}
    vlans = "".join(f", {v.ifname} {' '.join(v.addresses) or 'no address'}" for v in nic.vlans)
    ok = f"{nic.ifname} {nic.driver}, combined {nic.combined}/{nic.max_combined}, " \
         f"{' '.join(nic.addresses) or 'no address'}{vlans}"
    return verdict("guest.nic", ep.target, problems, evidence, ok)
