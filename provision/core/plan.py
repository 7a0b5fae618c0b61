"""The plan: the ordered changes that take the observed state to the desired one. Pure.

A plan is data: the CLI prints it, Ansible's check mode returns it, and an empty plan is the
proof that the host matches the lab. Objects the lab does not own are never in a plan; a name
the lab needs that something else already holds is a ``ConflictError`` before any change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from provision.core import domxml
from provision.core.desired import DesiredLab, DesiredPort
from provision.core.observed import ObservedLab, ObservedPort
from provision.errors import OperationError

# Apply order. Removals run first for domains (they hold taps) and last for taps.
PHASES = ("domains-remove", "taps", "ovs", "taps-remove", "domains", "guests")


class ConflictError(OperationError):
    """A name the lab needs is taken by an object the lab does not own."""


@dataclass(frozen=True)
class Change:
    phase: str  # one of PHASES
    action: str  # create | modify | delete | start | replace | restart | configure
    kind: str  # bridge | port | tap | domain | guest-nic
    target: str  # the object's name (guest-nic: "<domain>/<mac>")
    before: Any  # observed value(s), None when absent
    after: Any  # desired value(s), None when removed
    reason: str  # why, for a human

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    lab: str
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the plan left alone, and why

    @property
    def in_sync(self) -> bool:
        return not self.changes

    def by_phase(self, phase: str) -> list[Change]:
        return [c for c in self.changes if c.phase == phase]

    def to_dict(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "in_sync": self.in_sync,
            "changes": [c.to_dict() for c in self.changes],
            "notes": self.notes,
        }


def plan_changes(desired: DesiredLab, observed: ObservedLab) -> Plan:
    """Changes that bring the host to ``desired``."""
    _check_conflicts(desired, observed)
    plan = Plan(desired.lab)
    recreated_taps = _plan_taps(desired, observed, plan)
    _plan_bridges(desired, observed, plan)
    _plan_ports(desired, observed, plan)
    restarted = _plan_domains(desired, observed, plan, recreated_taps)
    _plan_guests(desired, observed, plan, restarted)
    _plan_orphans(desired, observed, plan)
    plan.changes.sort(key=lambda c: PHASES.index(c.phase))
    return plan


def plan_teardown(observed: ObservedLab) -> Plan:
    """Changes that remove everything the lab owns, and nothing else."""
    empty = DesiredLab(observed.lab, "", "", (), (), (), ())
    plan = Plan(observed.lab)
    _plan_orphans(empty, observed, plan, reason="lab down")
    plan.changes.sort(key=lambda c: PHASES.index(c.phase))
    return plan


def _owned_by(owner: dict[str, str] | str | None, lab: str) -> bool:
    if isinstance(owner, dict):
        return owner.get("lab") == lab
    return owner == lab


def _check_conflicts(desired: DesiredLab, observed: ObservedLab) -> None:
    lab = desired.lab
    kinds: tuple[tuple[str, tuple[Any, ...], dict[str, Any], str], ...] = (
        ("tap", desired.taps, observed.taps, "remove or rename the interface"),
        ("OVS port", desired.ports, observed.ports, "remove or rename the port"),
        ("domain", desired.domains, observed.domains,
         "undefine or rename it, or rename the VM or the lab"),
    )
    for kind, wanted, seen_by_name, fix in kinds:
        for obj in wanted:
            seen = seen_by_name.get(obj.name)
            if seen is not None and not _owned_by(seen.owner, lab):
                raise ConflictError(
                    f"{kind} {obj.name}: exists and lab {lab} does not own it; {fix} "
                    "(virtio-lab never touches what it does not own)"
                )


def _plan_taps(desired: DesiredLab, observed: ObservedLab, plan: Plan) -> set[str]:
    recreated: set[str] = set()
    for tap in desired.taps:
        seen = observed.taps.get(tap.name)
        if seen is None:
            plan.changes.append(
                Change(
                    "taps",
                    "create",
                    "tap",
                    tap.name,
                    None,
                    {"multi_queue": True, "up": True, "alias": tap.alias},
                    "absent",
                )
            )
            recreated.add(tap.name)
        elif not seen.multi_queue:
            plan.changes.append(
                Change(
                    "taps",
                    "replace",
                    "tap",
                    tap.name,
                    {"multi_queue": False},
                    {"multi_queue": True},
                    "not multi_queue",
                )
            )
            recreated.add(tap.name)
        elif not seen.up:
            plan.changes.append(
                Change("taps", "modify", "tap", tap.name, {"up": False}, {"up": True}, "down")
            )
    return recreated


def _plan_bridges(desired: DesiredLab, observed: ObservedLab, plan: Plan) -> None:
    for br in desired.bridges:
        seen = observed.bridges.get(br.name)
        if seen is None:
            plan.changes.append(
                Change(
                    "ovs",
                    "create",
                    "bridge",
                    br.name,
                    None,
                    {"datapath_type": br.datapath_type, "owner": desired.lab},
                    "absent",
                )
            )
        elif not _owned_by(seen.owner, desired.lab):
            plan.notes.append(f"bridge {br.name} exists and is not the lab's: used, never changed")
        elif (seen.datapath_type or "system") != br.datapath_type:
            plan.changes.append(
                Change(
                    "ovs",
                    "modify",
                    "bridge",
                    br.name,
                    {"datapath_type": seen.datapath_type or "system"},
                    {"datapath_type": br.datapath_type},
                    "datapath type differs",
                )
            )


def _port_view(port: DesiredPort | ObservedPort) -> dict[str, Any]:
    return {
        "bridge": port.bridge,
        "tag": port.tag,
        "trunks": list(port.trunks),
        "external_ids": dict(port.external_ids),
    }


def _plan_ports(desired: DesiredLab, observed: ObservedLab, plan: Plan) -> None:
    for port in desired.ports:
        seen = observed.ports.get(port.name)
        want = _port_view(port)
        if seen is None:
            plan.changes.append(Change("ovs", "create", "port", port.name, None, want, "absent"))
            continue
        have = _port_view(seen)
        owned_keys = want["external_ids"]
        have["external_ids"] = {k: v for k, v in seen.external_ids.items() if k in owned_keys}
        if have == want:
            continue
        if have["bridge"] != want["bridge"]:
            plan.changes.append(
                Change("ovs", "replace", "port", port.name, have, want, "on another bridge")
            )
            continue
        before = {k: v for k, v in have.items() if v != want[k]}
        after = {k: want[k] for k in before}
        plan.changes.append(
            Change(
                "ovs",
                "modify",
                "port",
                port.name,
                before,
                after,
                "differs: " + ", ".join(sorted(before)),
            )
        )


def _plan_domains(
    desired: DesiredLab, observed: ObservedLab, plan: Plan, recreated_taps: set[str]
) -> set[str]:
    """Domain changes; returns the domains that will (re)boot."""
    booting: set[str] = set()
    for dom in desired.domains:
        seen = observed.domains.get(dom.name)
        want = domxml.domain_facts(dom.xml)
        if seen is None:
            plan.changes.append(
                Change("domains", "create", "domain", dom.name, None, {"running": True}, "absent")
            )
            booting.add(dom.name)
            continue
        diff = domxml.diff_facts(seen.facts, want)
        taps = {i["tap"] for i in want["interfaces"]}
        if diff:
            before = {k: v[0] for k, v in diff.items()}
            after = {k: v[1] for k, v in diff.items()}
            plan.changes.append(
                Change(
                    "domains",
                    "replace",
                    "domain",
                    dom.name,
                    before,
                    after,
                    "definition differs: " + ", ".join(sorted(diff)),
                )
            )
            booting.add(dom.name)
        elif not seen.running:
            plan.changes.append(
                Change(
                    "domains",
                    "start",
                    "domain",
                    dom.name,
                    {"running": False},
                    {"running": True},
                    "not running",
                )
            )
            booting.add(dom.name)
        elif taps & recreated_taps:
            plan.changes.append(
                Change(
                    "domains",
                    "restart",
                    "domain",
                    dom.name,
                    None,
                    {"running": True},
                    "its tap was recreated: " + ", ".join(sorted(taps & recreated_taps)),
                )
            )
            booting.add(dom.name)
    return booting


def _plan_guests(desired: DesiredLab, observed: ObservedLab, plan: Plan, booting: set[str]) -> None:
    """Guest NIC settings for domains that keep running; booting ones get them at boot."""
    for dom in desired.domains:
        if dom.name in booting or not observed.guests_observed:
            continue
        if dom.name not in observed.guests:
            plan.changes.append(
                Change(
                    "guests",
                    "configure",
                    "guest",
                    dom.name,
                    {"agent": "no answer"},
                    {"agent": "answers"},
                    "the guest agent did not answer",
                )
            )
            continue
        nics = observed.guests[dom.name]
        for nic in dom.nics:
            seen = nics.get(nic.mac)
            target = f"{dom.name}/{nic.mac}"
            if seen is None:
                plan.changes.append(
                    Change(
                        "guests",
                        "restart",
                        "domain",
                        dom.name,
                        None,
                        {"nic": nic.mac},
                        f"guest shows no NIC {nic.mac}",
                    )
                )
                continue
            before: dict[str, Any] = {}
            if seen.combined != nic.queues:
                before["combined"] = seen.combined
            if nic.ip and nic.ip not in seen.addresses:
                before["addresses"] = list(seen.addresses)
            if not seen.up:
                before["up"] = False
            if before:
                after = {
                    "combined": nic.queues,
                    "addresses": [nic.ip] if nic.ip else [],
                    "up": True,
                }
                plan.changes.append(
                    Change(
                        "guests",
                        "configure",
                        "guest-nic",
                        target,
                        before,
                        {k: after[k] for k in before},
                        "differs: " + ", ".join(sorted(before)),
                    )
                )


def _plan_orphans(
    desired: DesiredLab, observed: ObservedLab, plan: Plan, reason: str = "not in the lab"
) -> None:
    """Owned objects the lab no longer wants."""
    lab = desired.lab
    want_doms = {d.name for d in desired.domains}
    for name, dom in sorted(observed.domains.items()):
        if name not in want_doms and _owned_by(dom.owner, lab):
            plan.changes.append(
                Change(
                    "domains-remove",
                    "delete",
                    "domain",
                    name,
                    {"running": dom.running},
                    None,
                    reason,
                )
            )
    want_ports = {p.name for p in desired.ports}
    for name, port in sorted(observed.ports.items()):
        if name not in want_ports and _owned_by(port.owner, lab):
            plan.changes.append(
                Change("ovs", "delete", "port", name, _port_view(port), None, reason)
            )
    want_taps = {t.name for t in desired.taps}
    for name, tap in sorted(observed.taps.items()):
        if name not in want_taps and _owned_by(tap.owner, lab):
            plan.changes.append(
                Change(
                    "taps-remove",
                    "delete",
                    "tap",
                    name,
                    {"queues_attached": tap.queues_attached},
                    None,
                    reason,
                )
            )
    _plan_orphan_bridges(desired, observed, plan, reason)


def _plan_orphan_bridges(
    desired: DesiredLab, observed: ObservedLab, plan: Plan, reason: str
) -> None:
    lab = desired.lab
    want = {b.name for b in desired.bridges}
    for name, br in sorted(observed.bridges.items()):
        if name in want or not _owned_by(br.owner, lab):
            continue
        foreign = [
            p
            for p in br.ports
            if p not in observed.ports or not _owned_by(observed.ports[p].owner, lab)
        ]
        if foreign:
            plan.notes.append(
                f"bridge {name} is the lab's but holds ports it does not own "
                f"({', '.join(sorted(foreign))}): kept"
            )
            continue
        plan.changes.append(
            Change(
                "ovs", "delete", "bridge", name, {"datapath_type": br.datapath_type}, None, reason
            )
        )
