"""The plan: the ordered changes that take the observed state to the desired one. Pure.

A plan is data: the CLI prints it, Ansible's check mode returns it, and an empty plan is the
proof that the host matches the lab. Objects the lab does not own are never in a plan; a name
the lab needs that something else already holds is a ``ConflictError`` before any change.
"""

from __future__ import annotations

from typing import Any

from provision.core import compare
from provision.core import volumes as plan_volumes
from provision.core.changes import PHASES, Change, ConflictError, Plan
from provision.core.compare import Diff
from provision.core.desired import DesiredLab
from provision.core.observed import ObservedLab
from provision.core.owner import owned_by
from provision.errors import HostError


def plan_changes(desired: DesiredLab, observed: ObservedLab) -> Plan:
    """Changes that bring the host to ``desired``."""
    _check_conflicts(desired, observed)
    plan = Plan(desired.lab)
    plan.notes.extend(desired.notes)
    recreated_taps = _plan_taps(desired, observed, plan)
    _plan_bridges(desired, observed, plan)
    _plan_ports(desired, observed, plan, recreated_taps)
    remade_disks = plan_volumes.plan_storage(desired, observed, plan)
    restarted = _plan_domains(desired, observed, plan, recreated_taps, remade_disks)
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


def _check_conflicts(desired: DesiredLab, observed: ObservedLab) -> None:
    lab = desired.lab
    plan_volumes.check_conflicts(desired, observed)
    kinds: tuple[tuple[str, tuple[Any, ...], dict[str, Any], str], ...] = (
        ("tap", desired.taps, observed.taps, "remove or rename the interface"),
        ("OVS port", desired.ports, observed.ports, "remove or rename the port"),
        ("domain", desired.domains, observed.domains,
         "undefine or rename it, or rename the VM or the lab"),
    )
    for br in desired.bridges:
        if br.name in observed.links and br.name not in observed.bridges:
            raise ConflictError(
                f"bridge {br.name}: a Linux interface of that name exists and is not an OVS "
                "bridge; rename the bridge in the lab file (virtio-lab never touches what it "
                "does not own)"
            )
    for port in desired.ports:
        if port.role == "uplink" and port.name not in observed.links:
            raise HostError(f"uplink {port.name} of bridge {port.bridge}: no such interface on "
                            "this host; name a NIC that `ip link` shows, or drop the uplink")
    for kind, wanted, seen_by_name, fix in kinds:
        for obj in wanted:
            seen = seen_by_name.get(obj.name)
            if seen is not None and not owned_by(seen.owner, lab):
                raise ConflictError(
                    f"{kind} {obj.name}: exists and lab {lab} does not own it; {fix} "
                    "(virtio-lab never touches what it does not own)"
                )


def _split(diffs: list[Diff]) -> tuple[dict[str, Any], dict[str, Any]]:
    return {d.key: d.have for d in diffs}, {d.key: d.want for d in diffs}


def _differs(diffs: list[Diff]) -> str:
    return "differs: " + ", ".join(d.key for d in diffs)


def _plan_taps(desired: DesiredLab, observed: ObservedLab, plan: Plan) -> set[str]:
    recreated: set[str] = set()
    for tap in desired.taps:
        seen = observed.taps.get(tap.name)
        if seen is None:
            after = compare.tap_view(tap) | {"alias": tap.alias}
            plan.changes.append(Change("taps", "create", "tap", tap.name, None, after, "absent",
                                       tap))
            recreated.add(tap.name)
            continue
        diffs = compare.tap_diffs(tap, seen)
        if not diffs:
            continue
        before, after = _split(diffs)
        if "multi_queue" in before:  # a tap's flags are fixed at creation
            why = (f"{tap.queues} queue(s) need a tap "
                   f"{'with' if tap.multi_queue else 'without'} multi_queue")
            plan.changes.append(Change("taps", "replace", "tap", tap.name, before, after, why,
                                       tap))
            recreated.add(tap.name)
        else:
            plan.changes.append(Change("taps", "modify", "tap", tap.name, before, after,
                                       _differs(diffs), tap))
    return recreated


def _plan_bridges(desired: DesiredLab, observed: ObservedLab, plan: Plan) -> None:
    for br in desired.bridges:
        seen = observed.bridges.get(br.name)
        if seen is None:
            after = {"datapath_type": br.datapath_type, "owner": desired.lab}
            plan.changes.append(Change("ovs", "create", "bridge", br.name, None, after, "absent",
                                       br))
        elif not owned_by(seen.owner, desired.lab):
            plan.notes.append(f"bridge {br.name} exists and is not the lab's: used, never changed")
        elif diffs := compare.bridge_diffs(br, seen):
            before, after = _split(diffs)
            plan.changes.append(Change("ovs", "modify", "bridge", br.name, before, after,
                                       _differs(diffs), br))


def _plan_ports(desired: DesiredLab, observed: ObservedLab, plan: Plan,
                recreated_taps: set[str]) -> None:
    for port in desired.ports:
        seen = observed.ports.get(port.name)
        want = compare.port_view(port)
        if seen is None:
            plan.changes.append(Change("ovs", "create", "port", port.name, None, want, "absent",
                                       port))
            continue
        diffs = compare.port_diffs(port, seen)
        if port.name in recreated_taps:
            # ovs-vswitchd keeps a port on a vanished device as it was (on the netdev
            # datapath even ofport stays): only a new port opens the new tap.
            plan.changes.append(Change("ovs", "replace", "port", port.name,
                                       compare.port_view(seen), want,
                                       "its tap is recreated: OVS must open the new device",
                                       port))
            continue
        if not diffs:
            continue
        before, after = _split(diffs)
        if compare.port_broken(diffs):
            why = f"ovs-vswitchd could not attach it (ofport {seen.ofport}): " \
                  f"{seen.error or 'no error given'}"
            plan.changes.append(Change("ovs", "replace", "port", port.name, before, want, why,
                                       port))
        elif "bridge" in before or "type" in before:
            why = "on another bridge" if "bridge" in before else f"type {seen.type!r} is fixed"
            plan.changes.append(Change("ovs", "replace", "port", port.name,
                                       compare.port_view(seen), want, why, port))
        else:
            plan.changes.append(Change("ovs", "modify", "port", port.name, before, after,
                                       _differs(diffs), port))


def _plan_domains(
    desired: DesiredLab, observed: ObservedLab, plan: Plan, recreated_taps: set[str],
    remade_disks: set[str],
) -> set[str]:
    """Domain changes; returns the domains that will (re)boot."""
    booting: set[str] = set()
    taps_of = _taps_by_vm(desired)
    for dom in desired.domains:
        seen = observed.domains.get(dom.name)
        change = None
        if seen is None:
            change = Change("domains", "create", "domain", dom.name, None, {"running": True},
                            "absent", dom)
        elif diffs := compare.domain_diffs(dom.xml, seen.facts):
            before, after = _split(diffs)
            change = Change("domains", "replace", "domain", dom.name, before, after,
                            "definition " + _differs(diffs), dom)
        elif not seen.running:
            change = Change("domains", "start", "domain", dom.name, {"running": False},
                            {"running": True}, "not running", dom)
        elif taps := sorted(set(taps_of.get(dom.vm, ())) & recreated_taps):
            change = Change("domains", "restart", "domain", dom.name, None, {"running": True},
                            "its tap was recreated: " + ", ".join(taps), dom)
        elif dom.vm in remade_disks:
            change = Change("domains", "restart", "domain", dom.name, None, {"running": True},
                            "its disks were made afresh", dom)
        if change is not None:
            plan.changes.append(change)
            booting.add(dom.name)
    return booting


def _taps_by_vm(desired: DesiredLab) -> dict[str | None, list[str]]:
    """Each VM's taps, found once: a scan of every tap per domain grows with their product."""
    out: dict[str | None, list[str]] = {}
    for tap in desired.taps:
        out.setdefault(tap.owner.vm, []).append(tap.name)
    return out


def _plan_guests(desired: DesiredLab, observed: ObservedLab, plan: Plan, booting: set[str]) -> None:
    """Guest NIC settings for domains that keep running; booting ones get them at boot."""
    for dom in desired.domains:
        if dom.name in booting or not observed.guests_observed:
            continue
        if dom.name not in observed.guests:
            plan.changes.append(Change("guests", "configure", "guest", dom.name,
                                       {"agent": "no answer"}, {"agent": "answers"},
                                       "the guest agent did not answer", dom))
            continue
        nics = observed.guests[dom.name]
        for nic in dom.nics:
            seen = nics.get(nic.mac)
            if seen is None:
                plan.changes.append(Change("guests", "restart", "domain", dom.name, None,
                                           {"nic": nic.mac}, f"guest shows no NIC {nic.mac}",
                                           dom))
            elif diffs := compare.guest_nic_diffs(nic, seen):
                before, after = _split(diffs)
                plan.changes.append(Change("guests", "configure", "guest-nic",
                                           f"{dom.name}/{nic.mac}", before, after,
                                           _differs(diffs), nic))


def _plan_orphans(
    desired: DesiredLab, observed: ObservedLab, plan: Plan, reason: str = "not in the lab"
) -> None:
    """Owned objects the lab no longer wants."""
    lab = desired.lab
    want_doms = {d.name for d in desired.domains}
    for name, dom in sorted(observed.domains.items()):
        if name not in want_doms and owned_by(dom.owner, lab):
            plan.changes.append(Change("domains-remove", "delete", "domain", name,
                                       {"running": dom.running}, None, reason))
    want_ports = {p.name for p in desired.ports}
    for name, port in sorted(observed.ports.items()):
        if name not in want_ports and owned_by(port.owner, lab):
            plan.changes.append(Change("ovs", "delete", "port", name, compare.port_view(port),
                                       None, reason))
    want_taps = {t.name for t in desired.taps}
    for name, tap in sorted(observed.taps.items()):
        if name not in want_taps and owned_by(tap.owner, lab):
            plan.changes.append(Change("taps-remove", "delete", "tap", name,
                                       {"queues_attached": tap.queues_attached}, None, reason))
    _plan_orphan_bridges(desired, observed, plan, reason)
    plan_volumes.plan_orphans(desired, observed, plan, reason)


def _plan_orphan_bridges(
    desired: DesiredLab, observed: ObservedLab, plan: Plan, reason: str
) -> None:
    lab = desired.lab
    want = {b.name for b in desired.bridges}
    for name, br in sorted(observed.bridges.items()):
        if name in want or not owned_by(br.owner, lab):
            continue
        foreign = [
            p
            for p in br.ports
            if p not in observed.ports or not owned_by(observed.ports[p].owner, lab)
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
