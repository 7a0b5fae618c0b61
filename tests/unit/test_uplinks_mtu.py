"""Uplinks (a host NIC as an owned port of a lab bridge) and the guest MTU of bridges that
span hypervisors. Pure."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from provision.core.desired import desired_state
from provision.core.placement import guest_mtus, spanning
from provision.core.spec import parse_lab
from provision.errors import SpecError

from .helpers import IMAGE, caps


def uplinked(**uplink: Any) -> dict[str, Any]:
    return {"name": "up", "bridges": [{"name": "br-up", "uplink": {"interface": "eth1",
                                                                     **uplink}}],
            "vms": [{"name": "vm1", "nics": [{"bridge": "br-up", "vlan": 100}]}]}


@pytest.mark.parametrize(("uplink", "tag", "trunks"), [
    ({}, None, ()),  # a trunk of every VLAN
    ({"vlans": [200, 100]}, None, (100, 200)),
    ({"vlan_mode": "access", "vlans": [100]}, 100, ()),
])
def test_an_uplink_is_an_owned_port_with_its_vlans(uplink: dict, tag: int | None,
                                                    trunks: tuple[int, ...]) -> None:
    want = desired_state(parse_lab(uplinked(**uplink)), caps(), IMAGE)
    port = next(p for p in want.ports if p.role == "uplink")
    assert (port.name, port.bridge, port.tag, port.trunks) == ("eth1", "br-up", tag, trunks)
    assert port.external_ids == {"virtio-lab-lab": "up"}
    assert "eth1" not in {t.name for t in want.taps}  # the NIC is the host's, never a tap


@pytest.mark.parametrize(("uplink", "key", "says"), [
    ({"vlan_mode": "access"}, "lab.bridges[0].uplink.vlans", "exactly one VLAN"),
    ({"vlan_mode": "access", "vlans": [1, 2]}, "lab.bridges[0].uplink.vlans", "exactly one"),
    ({"vlans": [0]}, "lab.bridges[0].uplink.vlans", "not a VLAN ID"),
    ({"vlans": [5, 5]}, "lab.bridges[0].uplink.vlans", "twice"),
    ({"interface": "up-vm1-0"}, "lab.bridges[0].uplink.interface", "the tap of"),
    ({"interface": "br-up"}, "lab.bridges[0].uplink.interface", "a bridge of the lab"),
    ({"probe": 3232235777}, "lab.bridges[0].uplink.probe", "write an address"),
    ({"vlan_mode": "hybrid"}, "lab.bridges[0].uplink.vlan_mode", "not allowed"),
])
def test_bad_uplinks_name_their_key(uplink: dict, key: str, says: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_lab(uplinked(**uplink))
    assert err.value.path == key and says in str(err.value)


def test_one_nic_is_the_uplink_of_one_bridge() -> None:
    data = uplinked()
    data["bridges"].append({"name": "br-two", "uplink": {"interface": "eth1"}})
    with pytest.raises(SpecError, match=r"bridges\[1\]\.uplink\.interface.*also the uplink"):
        parse_lab(data)


def spanning_lab(**tunnels: Any) -> Any:
    return parse_lab({"name": "wide", "tunnels": tunnels,
                      "bridges": [{"name": "br-a"}, {"name": "br-b"}],
                      "vms": [{"name": "vm1", "host": "hv1",
                               "nics": [{"bridge": "br-a"}, {"bridge": "br-b"}]},
                              {"name": "vm2", "host": "hv2", "nics": [{"bridge": "br-a"}]}]})


def nic_mtus(xml: str) -> list[str | None]:
    root = ET.fromstring(xml)
    return [(i.find("mtu").get("size") if i.find("mtu") is not None else None)
            for i in root.findall("devices/interface")]


def test_nics_on_a_bridge_that_spans_hosts_get_the_underlay_mtu_minus_the_tunnel() -> None:
    lab = spanning_lab()
    assert spanning(lab) == ("br-a",) and guest_mtus(lab) == {"br-a": 1446}
    want = desired_state(lab, caps(), IMAGE)
    assert nic_mtus(want.domains[0].xml) == ["1446", None]  # br-a spans hosts, br-b does not
    jumbo = spanning_lab(type="vxlan", underlay_mtu=9000)
    assert guest_mtus(jumbo) == {"br-a": 8946}
    # the MTU comes from the whole lab even when only one host's VMs are rendered
    mine = lab.model_copy(update={"vms": lab.vms[:1]})
    assert nic_mtus(desired_state(mine, caps(), IMAGE, mtus=guest_mtus(lab)).domains[0].xml) \
        == ["1446", None]


def test_the_underlay_mtu_has_bounds() -> None:
    with pytest.raises(SpecError, match=r"lab\.tunnels\.underlay_mtu"):
        spanning_lab(underlay_mtu=576)


def test_a_missing_uplink_nic_is_a_host_error_before_any_change() -> None:
    from provision.core.observed import ObservedLab
    from provision.core.plan import plan_changes
    from provision.errors import HostError

    want = desired_state(parse_lab(uplinked()), caps(), IMAGE)
    with pytest.raises(HostError, match="uplink eth1 of bridge br-up: no such interface"):
        plan_changes(want, ObservedLab(lab="up"))
    plan = plan_changes(want, ObservedLab(lab="up", links=frozenset({"eth1"})))
    created = {(c.kind, c.target) for c in plan.changes if c.action == "create"}
    assert ("port", "eth1") in created and ("tap", "eth1") not in created


def test_the_nics_on_the_vlans_an_uplink_carries_and_in_its_subnet_probe_it() -> None:
    from provision.verify import matrix

    data = uplinked(vlan_mode="access", vlans=[100], probe="10.5.0.254")
    data["vms"] = [
        {"name": "a", "nics": [{"bridge": "br-up", "vlan": 100, "ip": "10.5.0.1/24"}]},
        {"name": "b", "nics": [{"bridge": "br-up", "vlan": 200, "ip": "10.5.0.2/24"}]},
        {"name": "c", "nics": [{"bridge": "br-up", "vlan": 100, "ip": "10.6.0.3/24"}]},
    ]
    lab = parse_lab(data)
    pairs = matrix.probe_pairs(lab, matrix.l3_endpoints(lab))
    assert [(a.vm, b.target, b.address) for a, b in pairs] == [
        ("a", "10.5.0.254 via uplink eth1", "10.5.0.254")]  # b: VLAN 200; c: other subnet
    trunk_all = parse_lab({**data, "bridges": [{"name": "br-up", "uplink": {
        "interface": "eth1", "probe": "10.5.0.254"}}]})
    assert [a.vm for a, _ in matrix.probe_pairs(trunk_all, matrix.l3_endpoints(trunk_all))] \
        == ["a", "b"]
