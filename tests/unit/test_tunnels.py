"""Tunnel ports between hypervisors: which host gets which tunnel, names, keys, and how the
planner treats them. Pure."""

from __future__ import annotations

import pytest

from provision.core.observed import ObservedLab, ObservedPort
from provision.core.placement import bridge_hosts
from provision.core.plan import plan_changes
from provision.core.spec import parse_lab
from provision.core.tunnels import desired_tunnels, tunnel_name, vni
from provision.errors import SpecError

from .helpers import IMAGE, caps

UNDERLAY = {"hv1": "192.168.251.1", "hv2": "192.168.251.2", "hv3": "192.168.251.3"}


def wide() -> object:
    """br-a on all three hosts, br-b on hv1 and hv2 only, br-c on hv3 only."""
    def vm(name: str, host: str, *bridges: str) -> dict:
        return {"name": name, "host": host, "nics": [{"bridge": b} for b in bridges]}
    return parse_lab({
        "name": "wide",
        "bridges": [{"name": "br-a"}, {"name": "br-b"}, {"name": "br-c"}],
        "vms": [vm("vm1", "hv1", "br-a", "br-b"), vm("vm2", "hv2", "br-a", "br-b"),
                vm("vm3", "hv3", "br-a", "br-c"), vm("vm4", "hv3", "br-c")],
    })


def test_each_host_tunnels_to_every_peer_on_each_stretched_bridge() -> None:
    lab = wide()
    assert bridge_hosts(lab) == {"br-a": ("hv1", "hv2", "hv3"), "br-b": ("hv1", "hv2"),
                                 "br-c": ("hv3",)}
    got = {h: {(p.bridge, dict(p.options)["remote_ip"]) for p in desired_tunnels(lab, h, UNDERLAY)}
           for h in UNDERLAY}
    assert got == {
        "hv1": {("br-a", "192.168.251.2"), ("br-a", "192.168.251.3"), ("br-b", "192.168.251.2")},
        "hv2": {("br-a", "192.168.251.1"), ("br-a", "192.168.251.3"), ("br-b", "192.168.251.1")},
        "hv3": {("br-a", "192.168.251.1"), ("br-a", "192.168.251.2")},  # br-c is hv3's alone
    }
    # n hosts on a bridge: n(n-1) tunnel ports in all
    assert sum(len(desired_tunnels(lab, h, UNDERLAY)) for h in UNDERLAY) == 3 * 2 + 2 * 1


def test_tunnels_carry_every_vlan_a_key_per_bridge_and_the_labs_ownership() -> None:
    lab = wide()
    ports = desired_tunnels(lab, "hv1", UNDERLAY, kind="vxlan")
    for p in ports:
        assert p.type == "vxlan" and p.tag is None and p.trunks == () and p.protected
        assert p.external_ids == {"virtio-lab-lab": "wide"}
        assert dict(p.options)["key"] == str(vni("wide", p.bridge))
        assert len(p.name) <= 15
    # both ends of one tunnel use the same key; different bridges, different keys
    assert vni("wide", "br-a") != vni("wide", "br-b")
    assert 1 <= vni("wide", "br-a") < 2**24
    names = {tunnel_name("wide", b, peer) for b in ("br-a", "br-b") for peer in UNDERLAY}
    assert len(names) == 6


def test_a_peer_without_an_underlay_address_names_the_host_variable() -> None:
    with pytest.raises(SpecError, match=r"all\.hosts\.hv2\.virtio_lab_underlay_ip: is not set"):
        desired_tunnels(wide(), "hv1", {"hv1": "192.168.251.1", "hv3": "192.168.251.3"})


def test_one_host_labs_have_no_tunnels() -> None:
    lab = wide()
    assert desired_tunnels(lab, "hv9", UNDERLAY) == ()
    single = parse_lab({"name": "one", "bridges": [{"name": "br-1"}],
                        "vms": [{"name": "vm1", "nics": [{"bridge": "br-1"}]}]})
    assert desired_tunnels(single, "localhost", {}) == ()


def _with_tunnels(host: str) -> tuple:
    from dataclasses import replace

    from provision.core.desired import desired_state
    lab = wide()
    local = lab.model_copy(update={"vms": tuple(v for v in lab.vms if v.host == host)})
    want = desired_state(local, caps(), IMAGE)
    return replace(want, ports=want.ports + desired_tunnels(lab, host, UNDERLAY))


def test_a_peer_address_change_is_a_modify_and_a_type_change_a_replace() -> None:
    want = _with_tunnels("hv1")
    tunnel = next(p for p in want.ports if p.type)
    seen = ObservedLab(lab=want.lab)
    moved = dict(tunnel.options) | {"remote_ip": "192.168.251.99"}
    seen.ports[tunnel.name] = ObservedPort(tunnel.name, tunnel.bridge, None, (),
                                           tunnel.external_ids, 5, None, "geneve",
                                           options=moved, protected=True)
    change = next(c for c in plan_changes(want, seen).changes if c.target == tunnel.name)
    assert (change.action, change.before, change.after) == (
        "modify", {"options": moved}, {"options": dict(tunnel.options)})
    seen.ports[tunnel.name] = ObservedPort(tunnel.name, tunnel.bridge, None, (),
                                           tunnel.external_ids, 5, None, "vxlan",
                                           options=dict(tunnel.options), protected=True)
    change = next(c for c in plan_changes(want, seen).changes if c.target == tunnel.name)
    assert change.action == "replace" and "type 'vxlan'" in change.reason


def test_a_tunnel_to_a_peer_that_left_the_bridge_is_removed() -> None:
    want = _with_tunnels("hv3")
    gone = "vt00000000000"
    seen = ObservedLab(lab=want.lab)
    seen.ports[gone] = ObservedPort(gone, "br-a", None, (), {"virtio-lab-lab": "wide"}, 5,
                                    None, "geneve",
                                    options={"remote_ip": "192.168.251.4", "key": "1"})
    change = next(c for c in plan_changes(want, seen).changes if c.target == gone)
    assert change.action == "delete"


def test_each_host_checks_the_pairs_of_its_own_vms_with_full_size_pings_across() -> None:
    from provision.core.owner import domain_name
    from provision.verify import matrix
    from provision.verify.pings import Ping

    lab = parse_lab({"name": "wide", "bridges": [{"name": "br-a"}], "vms": [
        {"name": f"vm{i}", "host": host, "nics": [{"bridge": "br-a", "ip": f"10.1.0.{i}/24"}]}
        for i, host in ((1, "hv1"), (2, "hv1"), (3, "hv2"))]})
    eps = matrix.l3_endpoints(lab)
    pairs = matrix.reach_pairs(eps)
    here = matrix.from_here(pairs, {domain_name("wide", "vm1"), domain_name("wide", "vm2")})
    there = matrix.from_here(pairs, {domain_name("wide", "vm3")})
    assert [(a.vm, b.vm) for a, b in here] == [("vm1", "vm2"), ("vm1", "vm3"), ("vm2", "vm3")]
    assert [(a.vm, b.vm) for a, b in there] == [("vm3", "vm1"), ("vm3", "vm2")]
    sizes = {(a.vm, b.vm): Ping("reach", a, b).size for a, b in here}
    assert sizes == {("vm1", "vm2"): 56, ("vm1", "vm3"): 1446 - 28, ("vm2", "vm3"): 1446 - 28}


def test_a_lab_without_any_underlay_address_gets_no_tunnels_and_a_note() -> None:
    from provision.core.tunnels import untunnelled

    assert desired_tunnels(wide(), "hv1", {}) == ()
    notes = untunnelled(wide(), "hv1", {})
    assert len(notes) == 2 and "bridge br-a has VMs on hv1, hv2, hv3 but none" in notes[0]
    assert untunnelled(wide(), "hv1", UNDERLAY) == []
