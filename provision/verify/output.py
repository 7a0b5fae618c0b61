"""The report for people (a rich table grouped by hop) and for machines (JSON in the shape of
design.md, JUnit XML with one testcase per check)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from provision.verify.model import FAIL, HOPS, SKIP, Check, VerifyReport

STYLE = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[yellow]skip[/]"}


def to_json(report: VerifyReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False, default=str)


def write_json(report: VerifyReport, path: str | Path) -> None:
    Path(path).write_text(to_json(report) + "\n")


def _evidence_text(evidence: dict[str, Any] | str) -> str:
    return evidence if isinstance(evidence, str) else json.dumps(evidence, indent=2,
                                                                  default=str)


def junit_xml(report: VerifyReport) -> str:
    """JUnit XML: one testsuite for the lab, one testcase per check."""
    counts = report.counts()
    suites = ET.Element("testsuites", name="virtio-lab verify")
    suite = ET.SubElement(suites, "testsuite", {
        "name": f"verify {report.lab}",
        "tests": str(len(report.checks)),
        "failures": str(counts[FAIL]),
        "errors": "0",
        "skipped": str(counts[SKIP]),
        "time": f"{report.seconds:.3f}",
    })
    props = ET.SubElement(suite, "properties")
    for name, value in (("lab", report.lab), ("backend", report.backend),
                        ("spec_backend", report.spec_backend)):
        ET.SubElement(props, "property", name=name, value=value)
    if report.record is not None:  # the JSON report's record, as one compact JSON value
        ET.SubElement(props, "property", name="record",
                      value=json.dumps(report.record, sort_keys=True, separators=(",", ":")))
    for check in report.checks:
        case = ET.SubElement(suite, "testcase", {
            "classname": f"virtio-lab.{report.lab}.{check.hop}",
            "name": f"{check.name} {check.target}",
        })
        if check.status == FAIL:
            failure = ET.SubElement(case, "failure", message=check.detail or "failed",
                                    type=check.name)
            failure.text = _evidence_text(check.evidence)
        elif check.status == SKIP:
            ET.SubElement(case, "skipped", message=check.detail or "skipped")
        out = ET.SubElement(case, "system-out")
        out.text = _evidence_text(check.evidence)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def write_junit(report: VerifyReport, path: str | Path) -> None:
    Path(path).write_text(junit_xml(report) + "\n")


def _short(check: Check, width: int = 110) -> str:
    text = check.detail
    if not text and isinstance(check.evidence, str):
        text = check.evidence
    return text if len(text) <= width else text[: width - 1] + "…"


def print_report(console: Console, report: VerifyReport) -> None:
    """One table, rows grouped by hop in data-path order, then a one-line verdict."""
    table = Table(title=f"verify lab {report.lab}: QEMU backend {report.backend} "
                        f"(lab.backend {report.spec_backend})")
    for col in ("hop", "check", "target", "status", "evidence"):
        table.add_column(col, overflow="fold")
    last = None
    for check in report.checks:
        hop = HOPS.get(check.hop, check.hop)
        if last is not None and hop != last:
            table.add_section()
        table.add_row(Text(hop if hop != last else ""), Text(check.name), Text(check.target),
                      STYLE[check.status], Text(_short(check)))
        last = hop
    console.print(table)
    counts = report.counts()
    verdict = "[green]PASSED[/]" if report.passed else "[bold red]FAILED[/]"
    console.print(f"{verdict}: {counts['pass']} passed, {counts['fail']} failed, "
                  f"{counts['skip']} skipped in {report.seconds:.1f} s")
    for check in report.failed():
        console.print(f"  [red]✗[/] {escape(check.name)} {escape(check.target)}: "
                      f"{escape(check.detail)}", highlight=False)


def merge_reports(reports: dict[str, dict[str, Any]]) -> VerifyReport:
    """One report for a lab verified on several hypervisors: ``reports`` maps each host to
    its ``VerifyReport.to_dict()``; each check's target is prefixed with the host that made
    it ("hv1: wide/web1/0->wide/web2/0"), since every host checks its own VMs' hops."""
    if not reports:
        raise ValueError("no report to merge")
    checks: list[Check] = []
    backends: set[str] = set()
    labs: set[str] = set()
    for host, data in sorted(reports.items()):
        labs.add(str(data["lab"]))
        backends.add(str(data.get("backend", "unknown")))
        checks += [Check(c["name"], f"{host}: {c['target']}", c["status"], c["evidence"],
                         c.get("detail", "")) for c in data["checks"]]
    if len(labs) != 1:
        raise ValueError(f"the reports are of different labs: {', '.join(sorted(labs))}")
    first = next(iter(reports.values()))
    backend = backends.pop() if len(backends) == 1 else "mixed"
    seconds = max(float(d.get("seconds", 0.0)) for d in reports.values())
    return VerifyReport(labs.pop(), backend, checks, seconds,
                        str(first.get("spec_backend", "auto")))

