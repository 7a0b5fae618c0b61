"""Who must reach whom, from the spec alone."""

from __future__ import annotations

from typing import Any

from provision.core.spec import parse_lab
from provision.verify import matrix


def lab(vms: list[dict[str, Any]], bridges: tuple[str, ...] = ("br-t",)) -> Any:
    return parse_lab({"name": "t", "bridges": [{"name": b} for b in bridges], "vms": vms})


def vm(name: str, *nics: dict[str, Any], vcpus: int = 2) -> dict[str, Any]:
    return {"name": name, "vcpus": vcpus, "nics": list(nics)}


def nic(ip: str | None, vlan: int | None = None, bridge: str = "br-t",
        trunks: list[Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"bridge": bridge}
    if ip:
        out["ip"] = ip
    if vlan is not None:
        out["vlan"] = vlan
    if trunks is not None:
        out["trunks"] = trunks
    return out


DEMO = lab([vm("vm1", nic("10.0.0.1/24", 100)), vm("vm2", nic("10.0.0.2/24", 100)),
            vm("vm3", nic("10.0.0.3/24", 200))])


def targets(pairs: list[tuple[matrix.Endpoint, matrix.Endpoint]]) -> list[str]:
    return [matrix.pair_target(a, b) for a, b in pairs]


def test_endpoints_carry_names_queues_and_segment() -> None:
    eps = matrix.endpoints(DEMO)
    assert [e.target for e in eps] == ["t/vm1/0", "t/vm2/0", "t/vm3/0"]
    first = eps[0]
    assert (first.domain, first.tap, first.queues, first.vcpus) == ("t-vm1", "t-vm1-0", 2, 2)
    assert first.segment == ("br-t", 100) and first.address == "10.0.0.1"
    assert first.segment_name() == "br-t VLAN 100"


def test_demo_lab_matrix_reach_within_vlan_isolation_across() -> None:
    eps = matrix.endpoints(DEMO)
    assert targets(matrix.reach_pairs(eps)) == ["t/vm1/0->t/vm2/0"]
    assert targets(matrix.isolation_pairs(eps)) == ["t/vm1/0->t/vm3/0", "t/vm2/0->t/vm3/0"]
    assert matrix.excluded(eps) == []


def test_traffic_pairs_cover_every_nic_with_a_peer_and_name_the_lonely() -> None:
    pairs, lonely = matrix.traffic_pairs(matrix.endpoints(DEMO))
    assert targets(pairs) == ["t/vm1/0->t/vm2/0"]
    assert [(e.target, "no NIC of another VM" in why) for e, why in lonely] == [
        ("t/vm3/0", True)]


def test_odd_segment_pairs_the_last_nic_with_a_covered_one() -> None:
    three = lab([vm(f"vm{i}", nic(f"10.0.0.{i}/24", 100)) for i in (1, 2, 3)])
    pairs, lonely = matrix.traffic_pairs(matrix.endpoints(three))
    assert lonely == []
    assert targets(pairs) == ["t/vm1/0->t/vm2/0", "t/vm3/0->t/vm1/0"]
    covered = {e.target for pair in pairs for e in pair}
    assert covered == {"t/vm1/0", "t/vm2/0", "t/vm3/0"}


def test_trunk_vlans_are_endpoints_and_missing_addresses_are_excluded() -> None:
    router = nic(None, trunks=[{"vlan": 100, "ip": "10.0.0.1/24"}, 200,
                               {"vlan": 300, "ip": "10.3.0.1/24"}])
    lab3 = lab([vm("vm1", router), vm("vm2", nic(None, 100)), vm("vm3", nic("10.0.0.3/24", 100)),
                vm("vm4", nic("10.3.0.4/24", 300))])
    per_nic = matrix.endpoints(lab3)
    assert [e.target for e in per_nic] == ["t/vm1/0", "t/vm2/0", "t/vm3/0", "t/vm4/0"]
    assert per_nic[0].trunks == (100, 200, 300) and per_nic[0].segment is None
    eps = matrix.l3_endpoints(lab3)
    assert [e.target for e in eps] == ["t/vm1/0.100", "t/vm1/0.200", "t/vm1/0.300", "t/vm2/0",
                                       "t/vm3/0", "t/vm4/0"]
    vlan100 = eps[0]
    assert (vlan100.segment, vlan100.address, vlan100.tap, vlan100.guest_vlan) == (
        ("br-t", 100), "10.0.0.1", "t-vm1-0", 100)
    reasons = {e.target: why for e, why in matrix.excluded(eps)}
    assert set(reasons) == {"t/vm1/0.200", "t/vm2/0"}
    assert "trunks VLAN 200" in reasons["t/vm1/0.200"] and "no ip" in reasons["t/vm2/0"]
    # The router reaches each access VLAN through its VLAN interface; its VLANs are isolated.
    assert targets(matrix.reach_pairs(eps)) == ["t/vm1/0.100->t/vm3/0", "t/vm1/0.300->t/vm4/0"]
    assert targets(matrix.isolation_pairs(eps)) == [
        "t/vm1/0.100->t/vm4/0", "t/vm1/0.300->t/vm3/0", "t/vm3/0->t/vm4/0"]
    pairs, lonely = matrix.traffic_pairs(eps)
    assert targets(pairs) == ["t/vm1/0.100->t/vm3/0", "t/vm1/0.300->t/vm4/0"] and lonely == []


def test_untagged_ports_share_native_vlan_and_are_isolated_from_access_ports() -> None:
    eps = matrix.endpoints(lab([vm("vm1", nic("10.0.0.1/24")), vm("vm2", nic("10.0.0.2/24")),
                                vm("vm3", nic("10.0.0.3/24", 100))]))
    assert eps[0].segment == ("br-t", 0) and eps[0].segment_name() == "br-t untagged"
    assert targets(matrix.reach_pairs(eps)) == ["t/vm1/0->t/vm2/0"]
    assert len(matrix.isolation_pairs(eps)) == 2


def test_nics_of_one_vm_are_never_paired_with_each_other() -> None:
    eps = matrix.endpoints(lab([vm("vm1", nic("10.0.0.1/24", 100), nic("10.0.0.2/24", 100))]))
    assert matrix.reach_pairs(eps) == []
    pairs, lonely = matrix.traffic_pairs(eps)
    assert pairs == [] and len(lonely) == 2


def test_different_bridges_are_neither_reach_nor_isolation_pairs() -> None:
    eps = matrix.endpoints(lab([vm("vm1", nic("10.0.0.1/24", 100, "br-a")),
                                vm("vm2", nic("10.0.0.2/24", 100, "br-b"))],
                               bridges=("br-a", "br-b")))
    assert matrix.reach_pairs(eps) == [] and matrix.isolation_pairs(eps) == []


def test_same_subnet() -> None:
    eps = matrix.endpoints(lab([vm("vm1", nic("10.0.0.1/24", 100)),
                                vm("vm2", nic("10.0.1.2/24", 200)),
                                vm("vm3", nic("10.0.0.3/24", 200))]))
    assert not matrix.same_subnet(eps[0], eps[1])
    assert matrix.same_subnet(eps[0], eps[2])
