"""Sixteen small VMs (4 vCPUs, a 4-queue NIC, 128 MiB each) on two VLANs of one bridge,
brought up once for the module: the load the lab itself makes (64 TCG vCPUs on this
machine's two cores) must not make verify fail a healthy lab.

What is asserted comes from the lab as written, not from virtio-lab's answer: the checks a
16-VM, two-VLAN lab must have (every NIC's hops, every pair of a VLAN reachable, every pair
across the VLANs isolated), each of them passing, in two runs; then a second `up` that
changes nothing, and `down` leaving no domain, port, tap or bridge of the lab.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import libvirt
import pytest

from .conftest import (
    force_cleanup,
    link,
    provision,
    provision_json,
    unique_name,
    vsctl,
    write_lab,
)

pytestmark = pytest.mark.integration

VMS = 16
VLANS = (100, 200)


@dataclass
class Scale:
    name: str
    path: Path
    lab: dict[str, Any]

    def vlan_of(self, vm: dict[str, Any]) -> int:
        return int(vm["nics"][0]["vlan"])


def scale_lab(name: str) -> dict[str, Any]:
    def vm(i: int) -> dict[str, Any]:
        nic = {"bridge": f"br-{name}", "vlan": VLANS[i % 2], "queues": 4,
               "ip": f"10.79.0.{i + 1}/24"}
        return {"name": f"vm{i}", "vcpus": 4, "memory_mib": 128, "image": "tiny",
                "nics": [nic]}

    return {"name": name, "bridges": [{"name": f"br-{name}"}],
            "vms": [vm(i) for i in range(VMS)]}


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory,
          conn: libvirt.virConnect) -> Iterator[Scale]:
    name = unique_name()
    lab = scale_lab(name)
    path = write_lab(tmp_path_factory.mktemp("scale") / "lab.yml", lab)
    try:
        provision_json("up", str(path))
        yield Scale(name, path, lab)
    finally:
        with contextlib.suppress(Exception):
            force_cleanup(conn, name, path)


def verify(scale: Scale) -> dict[str, Any]:
    proc = provision("verify", str(scale.path), "--json", "-", check=False)
    report = json.loads(proc.stdout)
    failed = [(c["name"], c["target"], c["detail"]) for c in report["checks"]
              if c["status"] != "pass"]
    assert proc.returncode == 0 and not failed, failed
    return report


def test_verify_passes_every_check_of_a_loaded_lab_twice(scale: Scale) -> None:
    vms = scale.lab["vms"]
    by_vlan = {v: [vm["name"] for vm in vms if scale.vlan_of(vm) == v] for v in VLANS}
    same = sum(len(list(combinations(names, 2))) for names in by_vlan.values())
    across = len(by_vlan[VLANS[0]]) * len(by_vlan[VLANS[1]])
    for _run in range(2):
        report = verify(scale)
        kinds = Counter(c["name"] for c in report["checks"])
        for per_nic in ("domain.nic", "qemu.netdev", "tap", "ovs.port", "queues", "guest.nic"):
            assert kinds[per_nic] == VMS, (per_nic, kinds)
        # one reach check per pair of a VLAN, one isolation check per pair across them
        assert kinds["reach"] == same and kinds["isolation"] == across, kinds
        assert kinds["l4.tcp"] >= VMS // 2, kinds  # every NIC in a TCP pair
        queues = [c for c in report["checks"] if c["name"] == "queues"]
        assert all(len(c["evidence"]["tx_packets"]) == 4 and all(c["evidence"]["tx_packets"])
                   for c in queues), queues[0]


def test_a_second_up_changes_nothing(scale: Scale) -> None:
    result = provision_json("up", str(scale.path))
    assert result["changed"] is False and result["in_sync"] is True, result


def test_down_leaves_nothing(scale: Scale, conn: libvirt.virConnect) -> None:
    provision_json("down", str(scale.path))
    assert not [d for d in conn.listAllDomains() if d.name().startswith(f"{scale.name}-")]
    assert f"br-{scale.name}" not in vsctl("list-br").split()
    assert all(link(f"{scale.name}-vm{i}-0") is None for i in range(VMS))
