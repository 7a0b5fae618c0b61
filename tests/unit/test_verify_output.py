"""The report's machine shapes (design.md's JSON, JUnit XML) and the human table."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from provision.verify import output
from provision.verify.model import Check, VerifyReport, hop_order, skipped, verdict


def report() -> VerifyReport:
    checks = [
        verdict("queues", "t/vm1/0", [], {"rx_packets": [3, 4]}, "2 RX + 2 TX queues moved"),
        verdict("ovs.port", "t/vm1/0", ["tag is 300, want 100"], {"tag": 300}),
        skipped("queues", "t/vm3/0", "no NIC of another VM on br-t VLAN 200"),
        Check("domain.running", "t/vm1", "pass", "t-vm1 running [really]"),
    ]
    checks.sort(key=hop_order)
    return VerifyReport("t", "userspace", checks, seconds=1.5)


def test_checks_sort_by_hop_in_data_path_order() -> None:
    assert [c.name for c in report().checks] == ["domain.running", "ovs.port", "queues",
                                                 "queues"]


def test_json_has_the_shape_design_md_promises() -> None:
    data = json.loads(output.to_json(report()))
    assert data["lab"] == "t" and data["passed"] is False and data["backend"] == "userspace"
    assert data["counts"] == {"pass": 2, "fail": 1, "skip": 1}
    for check in data["checks"]:
        assert {"name", "target", "status", "evidence"} <= set(check)
        assert check["status"] in ("pass", "fail", "skip")
    failed = next(c for c in data["checks"] if c["status"] == "fail")
    assert failed["evidence"]["problems"] == ["tag is 300, want 100"]
    skip = next(c for c in data["checks"] if c["status"] == "skip")
    assert skip["evidence"]["reason"].startswith("no NIC")


def test_a_skip_does_not_fail_the_run() -> None:
    r = VerifyReport("t", "userspace", [skipped("queues", "t/vm3/0", "no peer")])
    assert r.passed


def test_junit_has_one_testcase_per_check(tmp_path: Path) -> None:
    path = tmp_path / "verify.xml"
    output.write_junit(report(), path)
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["domain.running t/vm1", "ovs.port t/vm1/0",
                                              "queues t/vm1/0", "queues t/vm3/0"]
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "tag is 300, want 100"
    assert json.loads(failure.text or "")["tag"] == 300
    assert cases[3].find("skipped") is not None and cases[0].find("failure") is None
    assert cases[0].get("classname") == "virtio-lab.t.domain"


def test_table_groups_by_hop_and_ends_with_the_verdict() -> None:
    console = Console(record=True, width=200)
    output.print_report(console, report())
    text = console.export_text()
    assert "Domain (libvirt live XML)" in text and "OVS (OVSDB)" in text
    assert "[really]" in text  # evidence is shown literally, never as markup
    assert "FAILED: 2 passed, 1 failed, 1 skipped" in text
    assert "ovs.port t/vm1/0: tag is 300, want 100" in text


def test_reports_of_several_hosts_merge_into_one_with_each_check_named_by_host() -> None:
    from provision.verify.output import junit_xml, merge_reports

    hv1 = VerifyReport("wide", "userspace", [Check("reach", "wide/a/0->wide/b/0", "pass", {})])
    hv2 = VerifyReport("wide", "userspace", [Check("ovs.tunnel", "vt1", "fail", {"x": 1}, "no"),
                                             Check("l4.tcp", "wide/b/0->wide/a/0", "skip", {})])
    merged = merge_reports({"hv2": hv2.to_dict(), "hv1": hv1.to_dict()})
    assert [c.target for c in merged.checks] == [
        "hv1: wide/a/0->wide/b/0", "hv2: vt1", "hv2: wide/b/0->wide/a/0"]
    assert merged.lab == "wide" and merged.passed is False and merged.counts()["fail"] == 1
    cases = ET.fromstring(junit_xml(merged)).findall(".//testcase")
    assert len(cases) == 3 and cases[1].find("failure") is not None
    other = VerifyReport("other", "userspace", [])
    with pytest.raises(ValueError, match="different labs"):
        merge_reports({"hv1": hv1.to_dict(), "hv3": other.to_dict()})
