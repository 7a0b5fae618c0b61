"""Planning against hand-built observed states: pure, no daemons."""

from __future__ import annotations

import pytest

from provision.core.desired import DesiredLab, desired_state
from provision.core.observed import (
    ObservedBridge,
    ObservedDomain,
    ObservedGuestNic,
    ObservedLab,
    ObservedPort,
    ObservedTap,
)
from provision.core.owner import OWNER_LAB
from provision.core.plan import ConflictError, plan_changes, plan_teardown

from .helpers import IMAGE, caps, in_sync, lab


@pytest.fixture
def want() -> DesiredLab:
    return desired_state(lab(), caps(), IMAGE)


def test_empty_host_gets_everything_in_phase_order(want: DesiredLab) -> None:
    plan = plan_changes(want, ObservedLab(lab=want.lab))
    kinds = [(c.phase, c.action, c.kind) for c in plan.changes]
    assert kinds == [
        ("taps", "create", "tap"), ("taps", "create", "tap"),
        ("ovs", "create", "bridge"), ("ovs", "create", "port"), ("ovs", "create", "port"),
        ("domains", "create", "domain"), ("domains", "create", "domain"),
    ]
    port = next(c for c in plan.changes if c.kind == "port" and c.target == "ut-vm2-0")
    assert port.after["trunks"] == [100, 200] and port.after["tag"] is None
    assert port.after["external_ids"][OWNER_LAB] == "ut"


def test_in_sync_host_plans_nothing(want: DesiredLab) -> None:
    plan = plan_changes(want, in_sync(want))
    assert plan.in_sync, plan.changes


def test_drift_is_planned_precisely(want: DesiredLab) -> None:
    seen = in_sync(want)
    p = seen.ports["ut-vm1-0"]
    seen.ports["ut-vm1-0"] = ObservedPort(p.name, p.bridge, 300, (), p.external_ids, 1, None)
    d = seen.domains["ut-vm2"]
    seen.domains["ut-vm2"] = ObservedDomain(d.name, d.owner, False, d.facts)
    g = seen.guests["ut-vm1"]
    mac = next(iter(g))
    g[mac] = ObservedGuestNic(mac, "eth0", 1, 4, (), True, "virtio_net")
    plan = plan_changes(want, seen)
    summary = {(c.action, c.kind, c.target): (c.before, c.after) for c in plan.changes}
    assert summary == {
        ("modify", "port", "ut-vm1-0"): ({"tag": 300}, {"tag": 100}),
        ("start", "domain", "ut-vm2"): ({"running": False}, {"running": True}),
        ("configure", "guest-nic", f"ut-vm1/{mac}"): (
            {"combined": 1, "addresses": []}, {"combined": 4, "addresses": ["10.9.0.1/24"]}),
    }


def test_changed_spec_replaces_the_domain(want: DesiredLab) -> None:
    seen = in_sync(want)
    data = lab().model_dump(mode="json")
    data["vms"][0]["nics"][0]["queues"] = 2
    from provision.core.spec import parse_lab

    new = desired_state(parse_lab(data), caps(), IMAGE)
    plan = plan_changes(new, seen)
    dom = [c for c in plan.changes if c.kind == "domain"]
    assert [(c.action, c.target) for c in dom] == [("replace", "ut-vm1")]
    mac = new.domains[0].nics[0].mac
    assert dom[0].before[f"interface {mac}.queues"] == 4
    assert dom[0].after[f"interface {mac}.queues"] == 2


def test_recreated_tap_restarts_its_running_domain(want: DesiredLab) -> None:
    seen = in_sync(want)
    del seen.taps["ut-vm1-0"]
    plan = plan_changes(want, seen)
    assert [(c.action, c.kind, c.target) for c in plan.changes] == [
        ("create", "tap", "ut-vm1-0"), ("replace", "port", "ut-vm1-0"),
        ("restart", "domain", "ut-vm1")]
    assert "tap is recreated" in plan.changes[1].reason


def test_silent_agent_is_a_pending_change(want: DesiredLab) -> None:
    seen = in_sync(want)
    del seen.guests["ut-vm2"]
    plan = plan_changes(want, seen)
    assert [(c.kind, c.target, c.reason) for c in plan.changes] == [
        ("guest", "ut-vm2", "the guest agent did not answer")]


@pytest.mark.parametrize("kind", ["tap", "port", "domain"])
def test_names_held_by_foreign_objects_are_conflicts(want: DesiredLab, kind: str) -> None:
    seen = ObservedLab(lab=want.lab)
    if kind == "tap":
        seen.taps["ut-vm1-0"] = ObservedTap("ut-vm1-0", None, True, True, 0)
    elif kind == "port":
        seen.ports["ut-vm1-0"] = ObservedPort("ut-vm1-0", "br-user", None, (), {}, 1, None)
    else:
        seen.domains["ut-vm1"] = ObservedDomain("ut-vm1", None, True, {})
    with pytest.raises(ConflictError, match="does not own"):
        plan_changes(want, seen)


def test_foreign_bridge_is_used_not_changed(want: DesiredLab) -> None:
    seen = in_sync(want)
    seen.bridges["br-ut"] = ObservedBridge("br-ut", "system", None, ("ut-vm1-0", "ut-vm2-0"))
    plan = plan_changes(want, seen)
    assert plan.in_sync
    assert any("not the lab's" in n for n in plan.notes)
    down = {(c.kind, c.target) for c in plan_teardown(seen).by_phase("ovs")}
    assert down == {("port", "ut-vm1-0"), ("port", "ut-vm2-0")}, "the user's bridge stays"


def test_teardown_removes_only_owned_objects(want: DesiredLab) -> None:
    seen = in_sync(want)
    seen.ports["user-port"] = ObservedPort("user-port", "br-ut", None, (), {}, 3, None)
    br = seen.bridges["br-ut"]
    seen.bridges["br-ut"] = ObservedBridge(br.name, br.datapath_type, br.owner,
                                           (*br.ports, "user-port"))
    plan = plan_teardown(seen)
    targets = {(c.kind, c.target) for c in plan.changes}
    assert targets == {("domain", "ut-vm1"), ("domain", "ut-vm2"), ("port", "ut-vm1-0"),
                       ("port", "ut-vm2-0"), ("tap", "ut-vm1-0"), ("tap", "ut-vm2-0")}
    assert any("user-port" in n and "kept" in n for n in plan.notes)
    assert [c.phase for c in plan.changes] == sorted(
        (c.phase for c in plan.changes),
        key=["domains-remove", "taps", "ovs", "taps-remove", "domains", "guests"].index)


def test_teardown_removes_an_owned_bridge_once_it_is_empty(want: DesiredLab) -> None:
    seen = in_sync(want)
    plan = plan_teardown(seen)
    assert ("bridge", "br-ut") in {(c.kind, c.target) for c in plan.changes}


def _respec(**vm1: object) -> DesiredLab:
    from provision.core.spec import parse_lab

    data = lab().model_dump(mode="json", exclude_none=True)
    data["vms"][0].update(vm1)
    return desired_state(parse_lab(data), caps(), IMAGE)


def test_one_queue_nics_get_plain_taps_and_many_queue_nics_multi_queue_taps() -> None:
    one = _respec(vcpus=1, nics=[{"bridge": "br-ut", "vlan": 100}])
    assert [(t.name, t.queues, t.multi_queue) for t in one.taps] == [
        ("ut-vm1-0", 1, False), ("ut-vm2-0", 2, True)]
    created = plan_changes(one, ObservedLab(lab="ut")).by_phase("taps")
    assert [c.after["multi_queue"] for c in created] == [False, True]
    assert plan_changes(one, in_sync(one)).in_sync


def test_queues_across_one_and_many_replace_the_tap_and_the_domain(want: DesiredLab) -> None:
    seen = in_sync(want)  # vm1 has 4 queues on a multi_queue tap, running
    one = _respec(nics=[{"bridge": "br-ut", "vlan": 100, "queues": 1, "ip": "10.9.0.1/24"}])
    plan = plan_changes(one, seen)
    tap = next(c for c in plan.changes if c.kind == "tap")
    assert (tap.action, tap.target, tap.before, tap.after) == (
        "replace", "ut-vm1-0", {"multi_queue": True}, {"multi_queue": False})
    dom = next(c for c in plan.changes if c.kind == "domain")
    assert (dom.action, dom.target) == ("replace", "ut-vm1")
    # and back: the observed single-queue tap is replaced by a multi_queue one
    seen_one = in_sync(one)
    back = plan_changes(want, seen_one)
    assert [(c.action, c.kind, c.target) for c in back.changes] == [
        ("replace", "tap", "ut-vm1-0"), ("replace", "port", "ut-vm1-0"),
        ("replace", "domain", "ut-vm1")]


def test_a_port_ovs_could_not_attach_is_recreated_quoting_the_error(want: DesiredLab) -> None:
    seen = in_sync(want)
    p = seen.ports["ut-vm1-0"]
    seen.ports[p.name] = ObservedPort(p.name, p.bridge, p.tag, p.trunks, p.external_ids, -1,
                                      "could not open network device ut-vm1-0 (No such device)")
    plan = plan_changes(want, seen)
    (change,) = plan.changes
    assert (change.action, change.kind, change.target) == ("replace", "port", "ut-vm1-0")
    assert "No such device" in change.reason and change.desired == want.ports[0]


def test_every_change_carries_the_object_it_brings_about(want: DesiredLab) -> None:
    from provision.core.desired import DesiredBridge, DesiredDomain, DesiredPort, DesiredTap

    plan = plan_changes(want, ObservedLab(lab=want.lab))
    types = {"bridge": DesiredBridge, "port": DesiredPort, "tap": DesiredTap,
             "domain": DesiredDomain}
    assert all(isinstance(c.desired, types[c.kind]) and c.desired.name == c.target
               for c in plan.changes)
    assert all(c.desired is None for c in plan_teardown(in_sync(want)).changes)


def test_a_missing_guest_vlan_interface_is_configured(want: DesiredLab) -> None:
    from provision.core.desired import GuestNic

    seen = in_sync(want)
    nic = want.domains[1].nics[0]
    g = seen.guests["ut-vm2"][nic.mac]
    seen.guests["ut-vm2"][nic.mac] = ObservedGuestNic(g.mac, g.ifname, g.combined,
                                                      g.max_combined, g.addresses, g.up,
                                                      g.driver, ())
    (change,) = plan_changes(want, seen).changes
    assert (change.action, change.kind, change.target) == (
        "configure", "guest-nic", f"ut-vm2/{nic.mac}")
    assert change.after == {"vlan 100": "10.9.0.2/24"} and change.before == {"vlan 100": None}
    assert isinstance(change.desired, GuestNic) and change.desired.vlans[0].vid == 100


def test_read_back_failure_names_each_object_with_wanted_and_found(want: DesiredLab) -> None:
    from provision.engine.lab import ReadBackError

    seen = in_sync(want)
    p = seen.ports["ut-vm1-0"]
    seen.ports[p.name] = ObservedPort(p.name, p.bridge, 300, (), p.external_ids, 1, None)
    del seen.taps["ut-vm2-0"]
    error = ReadBackError(plan_changes(want, seen))
    lines = str(error).splitlines()
    assert lines[0] == "lab ut: after up, 4 object(s) are not in the lab's state:"
    assert "  port ut-vm1-0: differs: tag: tag is 300, want 100" in lines
    assert any(line.startswith("  tap ut-vm2-0: absent") for line in lines), lines
    assert error.exit_code == 1


def test_a_bridge_named_like_a_host_interface_is_a_conflict(want: DesiredLab) -> None:
    bridge = want.bridges[0].name
    with pytest.raises(ConflictError, match=f"bridge {bridge}: a Linux interface"):
        plan_changes(want, ObservedLab(lab=want.lab, links=frozenset({bridge})))
    # an OVS bridge is a Linux interface too: when OVS has it, it is the bridge itself
    seen = in_sync(want)
    seen.links = frozenset({bridge})
    assert plan_changes(want, seen).in_sync
