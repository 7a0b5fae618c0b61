"""The one comparison between what a lab wants and what a host has, per object: bridge, tap,
OVS port, domain and guest NIC. Pure.

The planner turns these differences into changes; the verifier turns the same differences
into failed checks and adds its evidence on top, so ``plan`` and ``verify`` cannot disagree
about whether an object matches the lab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provision.core import domxml
from provision.core.desired import DesiredBridge, DesiredPort, DesiredTap, GuestNic
from provision.core.observed import ObservedBridge, ObservedGuestNic, ObservedPort, ObservedTap
from provision.core.owner import OWNER_KEYS


@dataclass(frozen=True)
class Diff:
    """One fact that differs: its key, what the host has, what the lab wants."""

    key: str  # e.g. "tag", "multi_queue", "interface 52:54:00:..:queues", "vlan 30.addresses"
    have: Any
    want: Any
    text: str = ""  # a sentence for humans where "KEY is X, want Y" says too little

    def __str__(self) -> str:
        return self.text or f"{self.key} is {self.have!r}, want {self.want!r}"


def _diffs(have: dict[str, Any], want: dict[str, Any]) -> list[Diff]:
    return [Diff(k, have.get(k), want[k]) for k in want if have.get(k) != want[k]]


def bridge_diffs(want: DesiredBridge, have: ObservedBridge) -> list[Diff]:
    return _diffs({"datapath_type": have.datapath_type or "system"},
                  {"datapath_type": want.datapath_type})


def tap_view(tap: DesiredTap | ObservedTap) -> dict[str, Any]:
    if isinstance(tap, DesiredTap):
        return {"owner": tap.owner, "multi_queue": tap.multi_queue, "up": True}
    return {"owner": tap.owner, "multi_queue": tap.multi_queue, "up": tap.up}


def tap_diffs(want: DesiredTap, have: ObservedTap) -> list[Diff]:
    """Tag, link state and the multi_queue flag (whether QEMU can open it as it will)."""
    return _diffs(tap_view(have), tap_view(want))


def port_view(port: DesiredPort | ObservedPort) -> dict[str, Any]:
    """A port's lab-controlled facts: only the ownership keys of its external_ids (OVS and
    others add their own)."""
    options = dict(port.options)
    return {
        "bridge": port.bridge,
        "type": port.type,
        "tag": port.tag,
        "trunks": list(port.trunks),
        "options": options,
        "protected": port.protected,
        "external_ids": {k: v for k, v in port.external_ids.items() if k in OWNER_KEYS},
    }


def port_diffs(want: DesiredPort, have: ObservedPort) -> list[Diff]:
    """Settings, then health: ovs-vswitchd must have attached the interface."""
    out = _diffs(port_view(have), port_view(want))
    if have.error or have.ofport is None or have.ofport <= 0:
        out.append(Diff("attached", f"ofport {have.ofport}, error {have.error!r}",
                        "ofport > 0, no error"))
    return out


def port_broken(diffs: list[Diff]) -> bool:
    return any(d.key == "attached" for d in diffs)


def domain_diffs(want_xml: str, have_facts: dict[str, Any]) -> list[Diff]:
    """The rendered definition against a domain's XML facts, both in ``domxml``'s normal
    form (never the raw template against libvirt's normalised XML)."""
    diff = domxml.diff_facts(have_facts, domxml.domain_facts(want_xml))
    return [Diff(k, have, want) for k, (have, want) in diff.items()]


def guest_nic_diffs(want: GuestNic, have: ObservedGuestNic) -> list[Diff]:
    """Channels, link, address, and each VLAN interface with its address."""
    out = []
    name = have.ifname
    if have.combined != want.queues:
        out.append(Diff("combined", have.combined, want.queues,
                        f"ethtool -l current combined is {have.combined}, want {want.queues}"))
    if not have.up:
        out.append(Diff("up", False, True, f"{name} is down"))
    if want.ip and want.ip not in have.addresses:
        out.append(Diff("addresses", list(have.addresses), [want.ip],
                        f"address {want.ip} is not set on {name} "
                        f"(has {', '.join(have.addresses) or 'none'})"))
    for vlan in want.vlans:
        seen = have.vlan(vlan.vid)
        if seen is None:
            out.append(Diff(f"vlan {vlan.vid}", None, vlan.ip,
                            f"no VLAN {vlan.vid} interface on {name} (want {vlan.ip})"))
            continue
        if not seen.up:
            out.append(Diff(f"vlan {vlan.vid}.up", False, True, f"{seen.ifname} is down"))
        if vlan.ip not in seen.addresses:
            out.append(Diff(f"vlan {vlan.vid}.addresses", list(seen.addresses), [vlan.ip],
                            f"address {vlan.ip} is not set on {seen.ifname} "
                            f"(has {', '.join(seen.addresses) or 'none'})"))
    return out
