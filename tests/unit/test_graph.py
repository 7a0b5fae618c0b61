"""The lab's picture (``provision.report``): from a lab spec and a constructed observed state,
laid out by Graphviz's own ``dot`` into JSON, so the assertions read the graph as Graphviz
understood it (nodes, clusters, edges, labels), not our DOT text. Verify reports are made by
the verifier's own check functions where they are pure (bridge, tap, port, uplink).
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import graphviz
import pytest

from provision.core.desired import DesiredLab, desired_state
from provision.core.inventory import load_lab
from provision.core.observed import ObservedDomain, ObservedLab, ObservedPort
from provision.core.owner import Owner
from provision.core.spec import Lab, parse_lab
from provision.core.tunnels import desired_tunnels, tunnel_name
from provision.report.graph import dot_to_svg, lab_dot, lab_graph, lab_svg
from provision.report.marks import Element, report_marks
from provision.verify import host_checks, matrix
from provision.verify.model import Check, VerifyReport, skipped, verdict

from .helpers import IMAGE, caps, in_sync, lab, lab_data

SVG = "{http://www.w3.org/2000/svg}"


@dataclass
class Picture:
    """A laid-out graph: nodes and clusters by name, edges as (tail, head, attributes)."""

    nodes: dict[str, dict[str, Any]]
    clusters: dict[str, dict[str, Any]]
    edges: list[tuple[str, str, dict[str, Any]]]
    caption: list[str]

    def label(self, name: str) -> list[str]:
        item = self.nodes.get(name) or self.clusters[name]
        return str(item["label"]).split("\\n")

    def members(self, cluster: str) -> set[str]:
        by_id = {o["_gvid"]: o["name"] for o in self.nodes.values()}
        return {by_id[i] for i in self.clusters[cluster].get("nodes", [])}

    def linked(self, a: str, b: str) -> dict[str, Any] | None:
        return next((e for t, h, e in self.edges if {t, h} == {a, b}), None)


def laid_out(dot: str) -> Picture:
    data = json.loads(graphviz.Source(dot).pipe(format="json", encoding="utf-8"))
    objects = data.get("objects", [])
    nodes = {o["name"]: o for o in objects if "nodes" not in o}
    clusters = {o["name"]: o for o in objects if "nodes" in o}
    names = {o["_gvid"]: o["name"] for o in objects}
    edges = [(names[e["tail"]], names[e["head"]], e) for e in data.get("edges", [])]
    return Picture(nodes, clusters, edges, str(data["label"]).split("\\n"))


def in_sync_lab(spec: Lab) -> tuple[DesiredLab, ObservedLab]:
    want = desired_state(spec, caps(), IMAGE)
    return want, in_sync(want)


def backends_of(spec: Lab, backend: str = "userspace") -> dict[str, str]:
    return {f"{vm.name}/{i}": backend for vm in spec.vms for i in range(len(vm.nics))}


# -- shapes -----------------------------------------------------------------------------
def test_access_and_trunk_nics_show_queues_vlans_backend_and_vcpus() -> None:
    spec = lab()
    _, seen = in_sync_lab(spec)
    pic = laid_out(lab_dot(spec, seen, backends=backends_of(spec)))
    assert pic.members("cluster_vm/vm1") == {"nic/vm1/0"}
    assert "4 vCPUs, running, agent answers" in pic.label("cluster_vm/vm1")
    assert "2 vCPUs, running, agent answers" in pic.label("cluster_vm/vm2")
    assert "4 queues, userspace" in pic.label("nic/vm1/0")
    assert "2 queues, userspace" in pic.label("nic/vm2/0")
    assert "eth0.100 10.9.0.2/24" in pic.label("nic/vm2/0")  # the trunk's guest VLAN
    assert pic.label("port/ut-vm1-0")[1:] == ["tap multi_queue, 4 attached",
                                              "OVS VLAN 100, ofport 7"]
    assert "OVS trunks 100,200, ofport 7" in pic.label("port/ut-vm2-0")
    assert pic.label("bridge/br-ut") == ["br-ut", "datapath netdev"]
    assert pic.nodes["bridge/br-ut"]["shape"] == "box3d"
    for vm in ("vm1", "vm2"):  # the data path: NIC - tap/port - bridge
        assert pic.linked(f"nic/{vm}/0", f"port/ut-{vm}-0")
        assert pic.linked(f"port/ut-{vm}-0", "bridge/br-ut")
    assert pic.caption == ["lab ut on this host (lab.backend auto)"]


def test_without_an_observed_backend_the_domain_xml_says_what_was_asked() -> None:
    spec = lab()
    _, seen = in_sync_lab(spec)
    pic = laid_out(lab_dot(spec, seen))
    assert "4 queues, userspace (domain XML)" in pic.label("nic/vm1/0")
    vhost = laid_out(lab_dot(spec, seen, backends={"vm1/0": "vhost-net"}))
    assert "4 queues, vhost-net" in vhost.label("nic/vm1/0")


def test_one_queue_nics_on_two_bridges_and_an_uplink_trunk() -> None:
    data = lab_data(
        bridges=[{"name": "br-a", "uplink": {"interface": "eth9", "vlans": [10, 20]}},
                 {"name": "br-b", "datapath_type": "netdev"}],
        vms=[{"name": "one", "vcpus": 1, "nics": [
            {"bridge": "br-a", "vlan": 10, "ip": "10.1.0.1/24"},
            {"bridge": "br-b", "ip": "10.2.0.1/24"}]}])
    spec = parse_lab(data)
    _, seen = in_sync_lab(spec)
    pic = laid_out(lab_dot(spec, seen))
    assert pic.members("cluster_vm/one") == {"nic/one/0", "nic/one/1"}
    assert "1 queue, userspace (domain XML)" in pic.label("nic/one/1")
    assert "tap single queue, 1 attached" in pic.label("port/ut-one-1")
    assert "OVS untagged, ofport 7" in pic.label("port/ut-one-1")
    assert pic.linked("port/ut-one-0", "bridge/br-a")
    assert pic.linked("port/ut-one-1", "bridge/br-b")
    assert pic.nodes["port/eth9"]["shape"] == "invhouse"
    assert pic.label("port/eth9") == ["eth9 (uplink)", "OVS trunks 10,20, ofport 7"]
    assert pic.linked("port/eth9", "bridge/br-a")


# -- the host as it stands ----------------------------------------------------------------
def test_nothing_on_the_host_draws_every_object_absent_from_the_lab_file() -> None:
    spec = lab()
    pic = laid_out(lab_dot(spec, ObservedLab(lab="ut")))
    for name in ("bridge/br-ut", "nic/vm1/0", "port/ut-vm1-0", "port/ut-vm2-0"):
        assert pic.label(name)[-1] == "absent", name
        assert "dashed" in pic.nodes[name]["style"], name
    assert pic.label("cluster_vm/vm1") == ["vm1 (ut-vm1)", "4 vCPUs", "absent"]
    assert "VLAN 100 (lab file)" in pic.label("port/ut-vm1-0")
    assert "trunks 100,200 (lab file)" in pic.label("port/ut-vm2-0")


def test_observed_state_wins_over_the_lab_file() -> None:
    spec = lab()
    _, seen = in_sync_lab(spec)
    seen.ports["ut-vm1-0"] = dataclasses.replace(seen.ports["ut-vm1-0"], tag=300, ofport=-1,
                                                 error="could not open network device")
    del seen.ports["ut-vm2-0"]
    seen.domains["ut-vm2"] = dataclasses.replace(seen.domains["ut-vm2"], running=False)
    del seen.guests["ut-vm2"]
    pic = laid_out(lab_dot(spec, seen))
    assert pic.label("port/ut-vm1-0")[2:] == ["OVS VLAN 300, ofport -1",
                                              "error: could not open network device"]
    assert pic.label("port/ut-vm2-0")[1:] == ["tap multi_queue, 2 attached", "OVS port absent"]
    assert "2 vCPUs, shut off" in pic.label("cluster_vm/vm2")


def test_owned_objects_the_lab_file_no_longer_names_are_drawn_as_such() -> None:
    spec = lab()
    _, seen = in_sync_lab(spec)
    bigger = parse_lab(lab_data(vms=[*lab_data()["vms"], {"name": "vm9", "vcpus": 3, "nics": [
        {"bridge": "br-ut", "vlan": 100, "ip": "10.9.0.9/24"}]}]))
    old = in_sync(desired_state(bigger, caps(), IMAGE))
    seen.domains["ut-vm9"] = old.domains["ut-vm9"]
    seen.ports["ut-vm9-0"], seen.taps["ut-vm9-0"] = old.ports["ut-vm9-0"], old.taps["ut-vm9-0"]
    pic = laid_out(lab_dot(spec, seen))
    assert pic.label("cluster_domain/ut-vm9") == ["ut-vm9", "3 vCPUs, running",
                                                  "owned, not in the lab file"]
    assert pic.clusters["cluster_domain/ut-vm9"]["color"] == "darkorange"
    (nic,) = pic.members("cluster_domain/ut-vm9")
    assert "3 queues" in pic.label(nic)
    assert pic.label("port/ut-vm9-0")[-1] == "owned, not in the lab file"
    assert pic.linked(nic, "port/ut-vm9-0") and pic.linked("port/ut-vm9-0", "bridge/br-ut")
    # a domain holding a wanted name without the lab's tag: drawn, and said to be a conflict
    seen.domains["ut-vm1"] = dataclasses.replace(seen.domains["ut-vm1"], owner=None)
    assert "not owned by lab ut: a conflict" in laid_out(lab_dot(spec, seen)).label(
        "cluster_vm/vm1")


# -- a verify report ---------------------------------------------------------------------
def host_report(spec: Lab, want: DesiredLab, seen: ObservedLab, *extra: Check) -> dict:
    """The report of the verifier's pure host checks (bridge, tap, OVS port) on ``seen``."""
    eps = matrix.endpoints(spec)
    checks = host_checks.bridge_checks(want, seen)
    checks += [host_checks.tap_check(ep, want, seen) for ep in eps]
    checks += [host_checks.port_check(ep, want, seen) for ep in eps]
    checks += host_checks.link_port_checks(want, seen)
    return VerifyReport(spec.name, "userspace", [*checks, *extra]).to_dict()


def test_a_failing_port_is_red_with_its_check_named_and_the_rest_green_or_grey() -> None:
    spec = lab()
    want, seen = in_sync_lab(spec)
    seen.ports["ut-vm1-0"] = dataclasses.replace(seen.ports["ut-vm1-0"], tag=300)
    report = host_report(spec, want, seen,
                         verdict("domain.running", "ut/vm1", [], {}),
                         verdict("guest.nic", "ut/vm2/0", [], {}),
                         verdict("reach", "ut/vm1/0->ut/vm2/0.100", ["0 of 3 replies"], {}),
                         skipped("queues", "ut/vm2/0.200", "no ip"))
    pic = laid_out(lab_dot(spec, seen, report))
    port = pic.nodes["port/ut-vm1-0"]
    assert port["fillcolor"] == "#ffcdd2" and port["color"] == "#c62828"
    assert pic.label("port/ut-vm1-0")[-1] == "FAIL ovs.port"
    assert "FAIL ovs.port: tag is 300, want 100" in port["tooltip"]
    assert "PASS tap: ut-vm1-0 up, multi_queue, 4 of 4 queue(s) attached" in port["tooltip"]
    assert pic.nodes["port/ut-vm2-0"]["fillcolor"] == "#c8e6c9"
    assert pic.nodes["bridge/br-ut"]["fillcolor"] == "#c8e6c9"
    assert pic.clusters["cluster_vm/vm1"]["fillcolor"] == "#c8e6c9"
    assert pic.clusters["cluster_vm/vm2"]["fillcolor"] == "#e0e0e0"  # no check of the VM
    assert pic.nodes["nic/vm2/0"]["fillcolor"] == "#c8e6c9"  # guest.nic pass, queues skip
    assert pic.nodes["nic/vm1/0"]["fillcolor"] == "#e0e0e0"
    pair = pic.linked("nic/vm1/0", "nic/vm2/0")
    assert pair is not None and pair["label"] == "reach" and pair["color"] == "#c62828"
    assert "0 of 3 replies" in pair["tooltip"]
    assert pic.caption[1] == ("verify FAILED: 6 passed, 2 failed, 1 skipped; "
                              "QEMU backend userspace")


def test_a_report_backend_fills_in_for_proc_and_unknown_targets_are_counted() -> None:
    spec = lab()
    want, seen = in_sync_lab(spec)
    netdev = Check("qemu.netdev", "ut/vm1/0", "pass", {"backend": "vhost-net"})
    report = host_report(spec, want, seen, netdev,
                         verdict("domain.running", "ut/gone", ["domain ut-gone is absent"], {}),
                         verdict("tap", "other/vm1/0", [], {}))
    pic = laid_out(lab_dot(spec, seen, report))
    assert "4 queues, vhost-net" in pic.label("nic/vm1/0")
    assert pic.caption[-1] == "2 check(s) on nothing drawn here, failed: domain.running"


def test_a_missing_port_fails_and_is_drawn_absent_and_red() -> None:
    spec = lab()
    want, seen = in_sync_lab(spec)
    del seen.ports["ut-vm2-0"], seen.taps["ut-vm2-0"]
    pic = laid_out(lab_dot(spec, seen, host_report(spec, want, seen)))
    assert pic.label("port/ut-vm2-0")[-2:] == ["absent", "FAIL ovs.port, tap"]
    assert pic.nodes["port/ut-vm2-0"]["style"] == "filled,dashed"
    assert pic.nodes["port/ut-vm2-0"]["fillcolor"] == "#ffcdd2"


@pytest.mark.parametrize(("report", "key"), [
    ([], "is not a verify report"),
    ({"checks": []}, "lab: is missing"),
    ({"lab": "ut", "checks": {}}, "checks: is missing or not a list"),
    ({"lab": "ut", "checks": [{"name": "tap", "target": "ut/vm1/0", "status": "ok"}]},
     "checks[0].status: is 'ok'"),
    ({"lab": "ut", "checks": [{"name": 1, "target": "x", "status": "pass"}]},
     "checks[0].name: is missing"),
])
def test_a_malformed_report_is_a_spec_error_naming_the_key(report: Any, key: str) -> None:
    from provision.errors import SpecError

    with pytest.raises(SpecError, match=key.replace("[", r"\[").replace("]", r"\]")):
        lab_graph(lab(), ObservedLab(lab="ut"), report)


# -- several hosts -----------------------------------------------------------------------
def two_hosts() -> tuple[Lab, ObservedLab]:
    data = lab_data()
    data["vms"][0]["host"], data["vms"][1]["host"] = "hv1", "hv2"
    spec = parse_lab(data)
    here = spec.model_copy(update={"vms": spec.vms[:1]})
    want = desired_state(here, caps(), IMAGE)
    mesh = desired_tunnels(spec, "hv1", {"hv1": "192.0.2.1", "hv2": "192.0.2.2"})
    seen = in_sync(dataclasses.replace(want, ports=want.ports + mesh))
    for t in mesh:
        seen.ports[t.name] = ObservedPort(t.name, t.bridge, None, (), dict(t.external_ids),
                                          ofport=9, type=t.type, options=dict(t.options))
    return spec, seen


def test_several_hosts_are_clusters_joined_by_their_tunnels() -> None:
    spec, seen = two_hosts()
    pic = laid_out(lab_dot(spec, seen, host="hv1"))
    assert set(pic.clusters) >= {"cluster_host/hv1", "cluster_host/hv2", "cluster_hv1/vm/vm1",
                                 "cluster_hv2/vm/vm2"}
    assert pic.label("cluster_host/hv2") == ["host hv2 (not observed here)"]
    assert {"hv1/bridge/br-ut", "hv1/port/ut-vm1-0"} <= pic.members("cluster_host/hv1")
    assert "hv2/bridge/br-ut" in pic.members("cluster_host/hv2")
    assert pic.label("hv2/port/ut-vm2-0")[-1] == "not observed here"
    assert "dotted" in pic.nodes["hv2/port/ut-vm2-0"]["style"]
    there, back = tunnel_name("ut", "br-ut", "hv2"), tunnel_name("ut", "br-ut", "hv1")
    assert "geneve to 192.0.2.2 key" in " ".join(pic.label(f"hv1/port/{there}"))
    link = pic.linked(f"hv1/port/{there}", f"hv2/port/{back}")
    assert link is not None and link["label"] == "underlay"
    assert pic.linked(f"hv1/port/{there}", "hv1/bridge/br-ut")


def test_a_merged_report_colours_each_host_s_elements() -> None:
    spec, seen = two_hosts()
    report = VerifyReport("ut", "userspace", [
        verdict("guest.nic", "hv2: ut/vm2/0", ["no interface with MAC"], {}),
        verdict("ovs.bridge", "hv1: br-ut", [], {}),
        verdict("ovs.bridge", "hv2: br-ut", ["bridge br-ut does not exist"], {}),
    ]).to_dict()
    pic = laid_out(lab_dot(spec, seen, report, host="hv1"))
    assert pic.nodes["hv2/nic/vm2/0"]["fillcolor"] == "#ffcdd2"
    assert pic.nodes["hv1/bridge/br-ut"]["fillcolor"] == "#c8e6c9"
    assert pic.nodes["hv2/bridge/br-ut"]["fillcolor"] == "#ffcdd2"


def test_without_host_a_multi_host_lab_is_drawn_as_placed_here() -> None:
    spec, _ = two_hosts()
    pic = laid_out(lab_dot(spec, ObservedLab(lab="ut")))
    assert not any(c.startswith("cluster_host") for c in pic.clusters)
    assert pic.caption[1] == "every VM placed on this host (no --host)"


# -- SVG ---------------------------------------------------------------------------------
def test_dot_to_svg_is_svg_naming_every_node() -> None:
    spec = lab()
    _, seen = in_sync_lab(spec)
    svg = lab_svg(spec, seen)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    titles = {t.text for t in root.iter(f"{SVG}title")}
    assert {"bridge/br-ut", "nic/vm1/0", "port/ut-vm2-0", "cluster_vm/vm1"} <= titles
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "4 queues" in texts and "trunks 100,200" in texts
    assert dot_to_svg("digraph { a -> b }").count("<title>a</title>") == 1


def test_labels_are_taken_literally() -> None:
    spec = lab()
    _, seen = in_sync_lab(spec)
    seen.ports["ut-vm1-0"] = dataclasses.replace(seen.ports["ut-vm1-0"],
                                                 error='<b>"x"</b> \\N \\n')
    root = ET.fromstring(lab_svg(spec, seen))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert 'error: <b>"x"</b> \\N \\n' in texts


def test_an_unowned_domain_in_observed_is_not_drawn_as_the_lab_s() -> None:
    spec = lab()
    _, seen = in_sync_lab(spec)
    seen.domains["other-vm1"] = ObservedDomain("other-vm1", Owner("other", "vm1"), True,
                                               seen.domains["ut-vm1"].facts)
    pic = laid_out(lab_dot(spec, seen))
    assert not any("other" in c for c in pic.clusters)


# -- a real report -----------------------------------------------------------------------
SAMPLES = Path(__file__).with_name("verify_samples")


def sample() -> tuple[Lab, ObservedLab, dict[str, Any]]:
    """The lab of ``lab-gsample.yml`` (a trunk router, a VM with two access NICs) as `up`
    left it, and ``report-gsample.json``: `provision verify --json` of that lab on the
    development machine (userspace backend, netdev datapath), 26 passed and 3 skipped."""
    spec = load_lab(SAMPLES / "lab-gsample.yml")
    _, seen = in_sync_lab(spec)
    return spec, seen, json.loads((SAMPLES / "report-gsample.json").read_text())


def test_every_check_of_a_real_report_lands_on_an_element() -> None:
    spec, seen, report = sample()
    pic = laid_out(lab_dot(spec, seen, report))
    assert pic.caption[1:] == ["verify PASSED: 26 passed, 0 failed, 3 skipped; "
                               "QEMU backend userspace"]  # no check left on nothing drawn
    marks = report_marks(report, spec)
    assert not marks.unplaced
    assert {e.kind for e in marks.by_element} == {"vm", "nic", "port", "bridge", "pair"}
    assert [m.name for m in marks.of(Element("nic", None, "rtr/0"))] == [
        "domain.nic", "qemu.netdev", "guest.nic", "reach", "queues"]  # VLAN 20 has nothing
    # to ping (skipped), VLAN 10's queues are the NIC's
    assert {m.name for m in marks.of(Element("port", None, "gsample-a-1"))} == {"tap",
                                                                                "ovs.port"}
    for name in ("cluster_vm/rtr", "cluster_vm/a", "nic/rtr/0", "nic/a/0", "nic/a/1",
                 "port/gsample-rtr-0", "port/gsample-a-0", "port/gsample-a-1",
                 "bridge/br-gsample"):
        item = pic.nodes.get(name) or pic.clusters[name]
        assert item["fillcolor"] == "#c8e6c9", name
    assert "2 queues, userspace" in pic.label("nic/rtr/0")  # the report's qemu.netdev
    assert "1 vCPU" in pic.label("cluster_vm/a")[1]


def test_one_failure_in_a_real_report_turns_its_element_red() -> None:
    spec, seen, report = sample()
    check = next(c for c in report["checks"]
                 if c["name"] == "ovs.port" and c["target"] == "gsample/a/1")
    check.update(status="fail", detail="tag is 30, want 20")
    pic = laid_out(lab_dot(spec, seen, report))
    assert pic.nodes["port/gsample-a-1"]["fillcolor"] == "#ffcdd2"
    assert pic.label("port/gsample-a-1")[-1] == "FAIL ovs.port"
    assert pic.nodes["port/gsample-a-0"]["fillcolor"] == "#c8e6c9"
    assert pic.caption[1].startswith("verify FAILED: 25 passed, 1 failed, 3 skipped")


def test_dot_errors_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    from provision.errors import HostError, OperationError

    with pytest.raises(OperationError, match="Graphviz's dot failed"):
        dot_to_svg("digraph { a -> }")
    monkeypatch.setenv("PATH", "/nonexistent")  # a host without the graphviz package
    with pytest.raises(HostError, match="run `provision host prepare`"):
        dot_to_svg("digraph { a }")


@pytest.mark.parametrize("line", ["<b>bold</b>", "<x>", "a\\N b", "tab\\t"])
def test_labels_stay_literal_text(line: str) -> None:
    """A label that looks like an HTML-like label or holds DOT escapes (a check name from a
    --verify report, a name from the lab file) is drawn as the very characters."""
    from provision.report.graph import dot_to_svg
    from provision.report.scene import text

    g = graphviz.Digraph()
    g.node("n", label=text([line]))
    root = ET.fromstring(dot_to_svg(g.source))
    drawn = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert drawn == [line]
