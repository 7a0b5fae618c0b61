"""Every shape a user can write comes up, verifies, plans in sync and goes away: one lab,
brought up once, checked per NIC from outside virtio-lab (libvirt, `ip -d -j link`,
`ovs-vsctl`, the guest through libvirt's agent API).

The lab (small TCG guests, 128 MiB):

    vm1  1 vCPU, default queues (1)   br1 VLAN 10      10.61.10.1/24
    vm2  2 vCPUs, queues 2            br1 VLAN 10      10.61.10.2/24
                  queues 1, rx 512    br2 untagged     10.62.0.2/24
    vm3  3 vCPUs, queues 3            br1 VLAN 20      10.61.20.3/24
    vm4  4 vCPUs, queues 4 (router)   br1 trunk 10, 20, 30: VLAN interfaces .10 and .20
    vm5  1 vCPU, queues 1             br2 untagged     10.62.0.5/24

`provision graph --svg --verify` draws it: every bridge, VM, NIC and port, with the real
queue counts, green. Then the queue count of a running NIC crosses 1 and N both ways through
`up`, and a port that OVS cannot attach (its tap deleted from outside) shows in `plan` and is
repaired by `up`.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from .conftest import (
    force_cleanup,
    guest_exec,
    link,
    ovs_row,
    provision,
    provision_json,
    run,
    unique_name,
    vsctl,
    write_lab,
)

pytestmark = pytest.mark.integration

TRUNK = [{"vlan": 10, "ip": "10.61.10.254/24"}, {"vlan": 20, "ip": "10.61.20.254/24"}, 30]


def shapes(name: str) -> dict[str, Any]:
    br1, br2 = f"br-{name}a", f"br-{name}b"

    def vm(n: int, vcpus: int, *nics: dict[str, Any]) -> dict[str, Any]:
        return {"name": f"vm{n}", "vcpus": vcpus, "memory_mib": 128, "nics": list(nics)}

    return {"name": name, "bridges": [{"name": br1}, {"name": br2}], "vms": [
        vm(1, 1, {"bridge": br1, "vlan": 10, "ip": "10.61.10.1/24"}),
        vm(2, 2, {"bridge": br1, "vlan": 10, "queues": 2, "ip": "10.61.10.2/24"},
           {"bridge": br2, "queues": 1, "rx_queue_size": 512, "ip": "10.62.0.2/24"}),
        vm(3, 3, {"bridge": br1, "vlan": 20, "queues": 3, "ip": "10.61.20.3/24"}),
        vm(4, 4, {"bridge": br1, "queues": 4, "trunks": TRUNK}),
        vm(5, 1, {"bridge": br2, "queues": 1, "ip": "10.62.0.5/24"}),
    ]}


@dataclass(frozen=True)
class Nic:
    vm: str
    index: int
    queues: int
    bridge: str
    tag: int | None
    trunks: tuple[int, ...]
    rx_queue_size: int | None = None


@dataclass
class ShapesLab:
    name: str
    path: Path
    doc: dict[str, Any]

    def nics(self) -> list[Nic]:
        out = []
        for vm in self.doc["vms"]:
            for i, nic in enumerate(vm["nics"]):
                trunks = tuple(sorted(t if isinstance(t, int) else t["vlan"]
                                      for t in nic.get("trunks", [])))
                out.append(Nic(vm["name"], i, nic.get("queues", vm["vcpus"]), nic["bridge"],
                               nic.get("vlan"), trunks, nic.get("rx_queue_size")))
        return out

    def tap(self, nic: Nic) -> str:
        return f"{self.name}-{nic.vm}-{nic.index}"

    def domain(self, vm: str) -> str:
        return f"{self.name}-{vm}"


@pytest.fixture(scope="module")
def shaped(conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ShapesLab]:
    name = unique_name()
    doc = shapes(name)
    path = write_lab(tmp_path_factory.mktemp("shapes") / f"{name}.yml", doc)
    try:
        provision_json("up", str(path))
        yield ShapesLab(name, path, doc)
    finally:
        force_cleanup(conn, name, path)
        for br in doc["bridges"]:
            vsctl("--if-exists", "del-br", br["name"], check=False)


def test_every_nic_matches_its_shape_from_outside(shaped: ShapesLab,
                                                  conn: libvirt.virConnect) -> None:
    for nic in shaped.nics():
        tap = shaped.tap(nic)
        # libvirt: the live definition
        dom = conn.lookupByName(shaped.domain(nic.vm))
        ifaces = ET.fromstring(dom.XMLDesc(0)).findall("devices/interface")
        driver = next(i for i in ifaces if i.find("target").get("dev") == tap).find("driver")
        # libvirt leaves out queues="1" from the live XML: one queue is its default
        assert driver.get("queues", "1") == str(nic.queues), (tap, ET.tostring(driver))
        if nic.rx_queue_size:
            assert driver.get("rx_queue_size") == str(nic.rx_queue_size)
        # the kernel: a multi_queue tap exactly when the NIC has several queues
        info = link(tap)
        assert info is not None and "UP" in info["flags"], tap
        data = info["linkinfo"]["info_data"]
        assert bool(data.get("multi_queue")) == (nic.queues > 1), (tap, data)
        if nic.queues > 1:
            assert data["numqueues"] - data.get("numdisabled", 0) == nic.queues, (tap, data)
        # OVS: the bridge, the VLAN settings, attached
        assert vsctl("port-to-br", tap) == nic.bridge
        row = ovs_row("Port", tap)
        assert row["tag"] == (nic.tag if nic.tag is not None else []), (tap, row["tag"])
        trunks = row["trunks"] if isinstance(row["trunks"], list) else [row["trunks"]]
        assert tuple(sorted(trunks)) == nic.trunks, (tap, row["trunks"])
        iface = ovs_row("Interface", tap)
        assert iface["ofport"] > 0 and iface["error"] == [], (tap, iface["error"])


def test_guests_show_one_channel_per_queue_and_the_trunk_vlans(
        shaped: ShapesLab, conn: libvirt.virConnect) -> None:
    for vm in shaped.doc["vms"]:
        dom = conn.lookupByName(shaped.domain(vm["name"]))
        for i, nic in enumerate(vm["nics"]):
            want = nic.get("queues", vm["vcpus"])
            out = guest_exec(dom, "/bin/sh", "-c", f"ethtool -l eth{i}")
            combined = [int(line.split()[1]) for line in out.splitlines()
                        if line.startswith("Combined:")]
            assert combined == [want, want], (vm["name"], i, out)
    router = conn.lookupByName(shaped.domain("vm4"))
    addrs = " ".join(guest_exec(router, "/bin/sh", "-c", "ip -o -4 addr show").split())
    for vlan in (t for t in TRUNK if isinstance(t, dict)):
        assert re.search(rf"eth0\.{vlan['vlan']}(@eth0)? inet {vlan['ip']}", addrs), addrs
    assert "eth0.30" not in addrs, "a trunk VLAN without ip gets no guest interface"


def test_verify_passes_and_covers_trunk_vlans(shaped: ShapesLab) -> None:
    proc = provision("verify", str(shaped.path), "--json", "-", check=False)
    report = json.loads(proc.stdout)
    failed = [(c["name"], c["target"], c["detail"]) for c in report["checks"]
              if c["status"] == "fail"]
    assert proc.returncode == 0 and not failed, failed
    by = {(c["name"], c["target"]): c["status"] for c in report["checks"]}
    for (name, target), status in list(by.items()):  # a pair is checked in one direction
        if "->" in target:
            by[(name, "->".join(reversed(target.split("->"))))] = status
    n = shaped.name
    # the router reaches each access VLAN through its VLAN interface, and its queues move
    assert by[("reach", f"{n}/vm4/0.10->{n}/vm1/0")] == "pass"
    assert by[("reach", f"{n}/vm4/0.10->{n}/vm2/0")] == "pass"
    assert by[("reach", f"{n}/vm4/0.20->{n}/vm3/0")] == "pass"
    assert by[("queues", f"{n}/vm4/0.10")] == "pass"
    assert by[("l4.tcp", f"{n}/vm3/0->{n}/vm4/0.20")] == "pass"
    assert by[("reach", f"{n}/vm2/1->{n}/vm5/0")] == "pass"
    # VLAN 10 and 20 share the bridge and are isolated (different subnets: skipped, said why)
    assert by[("isolation", f"{n}/vm1/0->{n}/vm3/0")] in ("pass", "skip")
    for nic in shaped.nics():
        target = f"{n}/{nic.vm}/{nic.index}"
        for check in ("domain.nic", "qemu.netdev", "tap", "ovs.port", "guest.nic"):
            assert by[(check, target)] == "pass", (check, target)


def _svg_nodes(svg: str) -> dict[str, tuple[list[str], set[str]]]:
    """Each node and cluster of a picture, by <title>: its text lines and fill colours."""
    ns = "{http://www.w3.org/2000/svg}"
    out = {}
    for g in ET.fromstring(svg).iter(f"{ns}g"):
        title = g.find(f"{ns}title")
        if title is not None and g.get("class") in ("node", "cluster"):
            texts = [t.text or "" for t in g.iter(f"{ns}text")]
            fills = {e.get("fill", "") for e in g.iter() if e.tag in (f"{ns}path",
                                                                     f"{ns}polygon")}
            out[str(title.text)] = (texts, fills)
    return out


def test_graph_draws_the_lab_with_its_real_queues_coloured_by_verify(
        shaped: ShapesLab, tmp_path: Path) -> None:
    report, svg = tmp_path / "report.json", tmp_path / "lab.svg"
    provision("verify", str(shaped.path), "--json", str(report))
    assert provision_json("graph", str(shaped.path), "--svg", str(svg), "--verify",
                          str(report)) == {"svg": str(svg)}
    nodes = _svg_nodes(svg.read_text())
    backends = {c["target"]: c["evidence"]["backend"] for c in
                json.loads(report.read_text())["checks"] if c["name"] == "qemu.netdev"}
    green = "#c8e6c9"
    for br in shaped.doc["bridges"]:
        assert green in nodes[f"bridge/{br['name']}"][1], nodes[f"bridge/{br['name']}"]
    for vm in shaped.doc["vms"]:
        texts, fills = nodes[f"cluster_vm/{vm['name']}"]
        vcpus = f"{vm['vcpus']} vCPU{'s' if vm['vcpus'] > 1 else ''}"
        assert f"{vcpus}, running, agent answers" in texts and green in fills, texts
    for nic in shaped.nics():
        texts, fills = nodes[f"nic/{nic.vm}/{nic.index}"]
        queues = f"{nic.queues} queue{'s' if nic.queues > 1 else ''}"
        backend = backends[f"{shaped.name}/{nic.vm}/{nic.index}"]
        assert f"{queues}, {backend}" in texts and green in fills, (nic, texts, fills)
        assert any(t.startswith(f"guest: {nic.queues} combined") for t in texts), texts
        texts, fills = nodes[f"port/{shaped.tap(nic)}"]
        kind = "multi_queue" if nic.queues > 1 else "single queue"
        assert f"tap {kind}, {nic.queues} attached" in texts and green in fills, texts
        vlan = (f"VLAN {nic.tag}" if nic.tag else
                f"trunks {','.join(map(str, nic.trunks))}" if nic.trunks else "untagged")
        assert any(t.startswith(f"OVS {vlan}, ofport ") for t in texts), texts
    dot = provision("graph", str(shaped.path)).stdout  # no --svg: the DOT source
    assert dot.startswith(f"digraph {shaped.name} {{") and "fillcolor=white" in dot


def test_second_up_and_plan_are_in_sync(shaped: ShapesLab) -> None:
    again = provision_json("up", str(shaped.path))
    assert again["changed"] is False and again["changes"] == []
    provision_json("plan", str(shaped.path), expect=0)


def _set_queues(shaped: ShapesLab, vm: int, queues: int) -> Path:
    shaped.doc["vms"][vm - 1]["nics"][0]["queues"] = queues
    return write_lab(shaped.path, shaped.doc)


def test_queues_across_one_and_many_replace_the_tap_and_restart_the_vm(
        shaped: ShapesLab) -> None:
    tap = f"{shaped.name}-vm2-0"
    for queues, multi in ((1, False), (2, True)):
        path = _set_queues(shaped, 2, queues)
        pending = provision_json("plan", str(path), expect=2)
        actions = {(c["action"], c["kind"], c["target"]) for c in pending["changes"]}
        assert ("replace", "tap", tap) in actions and \
            ("replace", "domain", f"{shaped.name}-vm2") in actions, actions
        provision_json("up", str(path))
        data = link(tap)["linkinfo"]["info_data"]
        assert bool(data.get("multi_queue")) is multi, data
        provision_json("plan", str(path), expect=0)


def test_a_port_ovs_cannot_attach_is_planned_and_repaired(shaped: ShapesLab) -> None:
    tap = f"{shaped.name}-vm3-0"
    vsctl("set", "Interface", tap, "type=patch")  # ovs-vswitchd: "requires valid 'peer'"
    assert ovs_row("Interface", tap)["ofport"] == -1
    pending = provision_json("plan", str(shaped.path), expect=2)
    (port,) = pending["changes"]
    assert (port["action"], port["kind"], port["target"]) == ("replace", "port", tap)
    assert "could not attach" in port["reason"] and "peer" in port["reason"], port
    provision_json("up", str(shaped.path))
    iface = ovs_row("Interface", tap)
    assert iface["ofport"] > 0 and iface["error"] == [] and iface["type"] == ""
    provision_json("plan", str(shaped.path), expect=0)


def test_a_tap_deleted_from_outside_is_recreated_with_its_port(shaped: ShapesLab) -> None:
    """The port must be recreated too: ovs-vswitchd keeps reading the vanished device."""
    tap = f"{shaped.name}-vm5-0"
    run("ip", "link", "del", tap)  # OVS keeps the port, with its old ofport, on nothing
    pending = provision_json("plan", str(shaped.path), expect=2)
    actions = [(c["action"], c["kind"], c["target"]) for c in pending["changes"]]
    assert actions == [("create", "tap", tap), ("replace", "port", tap),
                       ("restart", "domain", f"{shaped.name}-vm5")], actions
    provision_json("up", str(shaped.path))
    provision_json("plan", str(shaped.path), expect=0)
    # and the whole lab passes again: vm2 after its queue changes, vm3 after its port repair
    proc = provision("verify", str(shaped.path), "--json", "-", check=False)
    report = json.loads(proc.stdout)
    failed = [(c["name"], c["target"], c["detail"]) for c in report["checks"]
              if c["status"] == "fail"]
    assert proc.returncode == 0 and not failed, failed
    n = shaped.name
    by = {(c["name"], c["target"]): c["status"] for c in report["checks"]}
    reach = [s for (name, target), s in by.items()
             if name == "reach" and f"{n}/vm5/0" in target.split("->")]
    assert reach == ["pass"], report
    assert by[("tap", f"{n}/vm5/0")] == "pass" and by[("queues", f"{n}/vm5/0")] == "pass"


def test_down_leaves_nothing(shaped: ShapesLab, conn: libvirt.virConnect) -> None:
    provision_json("down", str(shaped.path))
    assert not [d for d in conn.listAllDomains() if d.name().startswith(f"{shaped.name}-")]
    assert all(link(shaped.tap(nic)) is None for nic in shaped.nics())
    bridges = set(vsctl("list-br").split())
    assert not {b["name"] for b in shaped.doc["bridges"]} & bridges
    owned = vsctl("--format=json", "--columns=name", "find", "Port",
                  f"external_ids:virtio-lab-lab={shaped.name}")
    assert json.loads(owned)["data"] == []
