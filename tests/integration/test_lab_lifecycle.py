"""A whole lab on the real daemons: up, independent inspection, idempotency, down.

vm1 (4 vCPUs, 4 queues, VLAN 100) sits on a bridge the lab creates; vm2 (2 vCPUs, 2 queues,
trunk 100+200) sits on a bridge the user made before the test, beside a port of the user's.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from .conftest import (
    Foreign,
    assert_foreign_untouched,
    force_cleanup,
    guest_exec,
    link,
    make_foreign,
    ovs_row,
    provision,
    provision_json,
    remove_foreign,
    unique_name,
    vsctl,
    write_lab,
)

pytestmark = pytest.mark.integration


class Lab:
    def __init__(self, name: str, path: Path, foreign: Foreign, up: dict[str, Any]) -> None:
        self.name, self.path, self.foreign, self.up = name, path, foreign, up
        self.bridge = f"br-{name}"
        self.vms = {"vm1": (4, 100, None, self.bridge), "vm2": (2, None, [100, 200],
                                                              foreign.lab_bridge)}


@pytest.fixture(scope="module")
def lab(conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    name = unique_name()
    foreign = make_foreign(conn, name)
    path = write_lab(tmp_path_factory.mktemp("lab") / f"{name}.yml", {
        "name": name,
        "bridges": [{"name": f"br-{name}"}, {"name": foreign.lab_bridge}],
        "vms": [
            {"name": "vm1", "vcpus": 4, "memory_mib": 256, "nics": [
                {"bridge": f"br-{name}", "vlan": 100, "queues": 4, "ip": "10.77.0.1/24"}]},
            {"name": "vm2", "vcpus": 2, "memory_mib": 256, "nics": [
                {"bridge": foreign.lab_bridge,
                 "trunks": [200, {"vlan": 100, "ip": "10.77.0.2/24"}]}]},
        ],
    })
    try:
        up = provision_json("up", str(path))
        yield Lab(name, path, foreign, up)
    finally:
        force_cleanup(conn, name, path)
        remove_foreign(conn, foreign)


def live_interfaces(conn: libvirt.virConnect, domain: str) -> list[ET.Element]:
    xml = conn.lookupByName(domain).XMLDesc(0)
    return ET.fromstring(xml).findall("devices/interface")


def test_up_reports_the_backend_it_used(lab: Lab) -> None:
    assert lab.up["changed"] is True
    # This machine has no /dev/vhost-net: `auto` must say it fell back to userspace.
    expected = "vhost-net" if Path("/dev/vhost-net").exists() else "userspace"
    assert lab.up["backend"] == expected


def test_live_xml_has_virtio_queues_and_owner(lab: Lab, conn: libvirt.virConnect) -> None:
    for vm, (queues, *_rest) in lab.vms.items():
        (iface,) = live_interfaces(conn, f"{lab.name}-{vm}")
        assert iface.find("model").get("type") == "virtio"
        assert iface.find("driver").get("queues") == str(queues)
        assert iface.find("target").get("dev") == f"{lab.name}-{vm}-0"
        xml = conn.lookupByName(f"{lab.name}-{vm}").XMLDesc(0)
        assert f"<vlab:lab>{lab.name}</vlab:lab>" in xml


def test_taps_are_multi_queue_with_every_queue_attached(lab: Lab) -> None:
    for vm, (queues, *_rest) in lab.vms.items():
        info = link(f"{lab.name}-{vm}-0")
        assert info is not None
        data = info["linkinfo"]["info_data"]
        assert "UP" in info["flags"]
        assert data["multi_queue"] is True
        assert data["numqueues"] - data.get("numdisabled", 0) == queues


def test_ovs_ports_carry_vlans_and_ownership(lab: Lab) -> None:
    for vm, (_q, tag, trunks, bridge) in lab.vms.items():
        port = f"{lab.name}-{vm}-0"
        assert vsctl("port-to-br", port) == bridge
        row = ovs_row("Port", port)
        assert row["tag"] == (tag if tag is not None else [])
        assert sorted(row["trunks"]) == (trunks or [])
        assert row["external_ids"]["virtio-lab-lab"] == lab.name
        assert row["external_ids"]["virtio-lab-vm"] == vm
        iface = ovs_row("Interface", port)
        assert iface["ofport"] > 0 and iface["error"] == []
    assert ovs_row("Bridge", lab.bridge)["external_ids"] == {"virtio-lab-lab": lab.name}
    assert "virtio-lab-lab" not in ovs_row("Bridge", lab.foreign.lab_bridge)["external_ids"]


def test_guests_report_one_channel_per_queue(lab: Lab, conn: libvirt.virConnect) -> None:
    for vm, (queues, *_rest) in lab.vms.items():
        dom = conn.lookupByName(f"{lab.name}-{vm}")
        out = guest_exec(dom, "/bin/sh", "-c", "ethtool -l eth0; ip -o -4 addr show")
        combined = [int(line.split()[1]) for line in out.splitlines()
                    if line.startswith("Combined:")]
        assert combined == [queues, queues], out  # maximum, then current
        # vm2's address lives on the VLAN interface of its trunk NIC, not on the NIC
        want = r"eth0 inet 10\.77\.0\.1/24" if vm == "vm1" else \
            r"eth0\.100(@eth0)? inet 10\.77\.0\.2/24"
        assert re.search(want, " ".join(out.split())), out


def test_second_up_changes_nothing(lab: Lab) -> None:
    again = provision_json("up", str(lab.path))
    assert again["changed"] is False and again["changes"] == []
    proc = provision("plan", str(lab.path), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "in sync" in proc.stdout


@pytest.mark.parametrize("host", ["nosuchhost", ""])
def test_a_host_the_inventory_lacks_is_exit_3_and_removes_nothing(
        lab: Lab, conn: libvirt.virConnect, host: str) -> None:
    for command in ("plan", "up"):
        proc = provision(command, str(lab.path), "--host", host, check=False)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"provision: error: --host: {host!r} is not a host of the inventory ('localhost'); "
            "name one of them"]
    assert all(conn.lookupByName(f"{lab.name}-{vm}").isActive() for vm in lab.vms)
    assert link(f"{lab.name}-vm1-0") is not None
    provision_json("plan", str(lab.path), expect=0)


def test_foreign_objects_survive_up(lab: Lab, conn: libvirt.virConnect) -> None:
    assert_foreign_untouched(conn, lab.foreign)


def test_drift_from_outside_is_planned_and_repaired(lab: Lab) -> None:
    port = f"{lab.name}-vm1-0"
    vsctl("set", "Port", port, "tag=300")
    pending = provision_json("plan", str(lab.path), expect=2)
    assert [(c["action"], c["target"], c["after"]) for c in pending["changes"]] == [
        ("modify", port, {"tag": 100})]
    provision_json("up", str(lab.path))
    assert ovs_row("Port", port)["tag"] == 100
    provision_json("plan", str(lab.path), expect=0)


def test_down_removes_what_the_lab_owns_and_nothing_else(lab: Lab,
                                                         conn: libvirt.virConnect) -> None:
    result = provision_json("down", str(lab.path))
    assert result["changed"] is True
    names = {d.name() for d in conn.listAllDomains()}
    assert not {f"{lab.name}-vm1", f"{lab.name}-vm2"} & names
    assert link(f"{lab.name}-vm1-0") is None and link(f"{lab.name}-vm2-0") is None
    assert lab.bridge not in vsctl("list-br").split()
    owned = vsctl("--format=json", "--columns=name", "find", "Port",
                  f"external_ids:virtio-lab-lab={lab.name}")
    assert json.loads(owned)["data"] == []
    assert_foreign_untouched(conn, lab.foreign)
    again = provision_json("down", str(lab.path))
    assert again["changed"] is False
