"""`provision verify --html`: the page rendered from reports, read back with the same DOM
reader the browser tests use (tests/chromium_page.py), without a browser."""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from chromium_page import parse_dom

from provision.report import charts
from provision.report.html import NO_PICTURE, render_html
from provision.verify import parse, traffic
from provision.verify.model import HOPS, Check, VerifyReport, hop_order, skipped, verdict

SAMPLES = Path(__file__).parent / "verify_samples"
HOSTILE = '<script>alert("x")</script>'


def queues_evidence(rx: list[int], tx: list[int], **more: Any) -> dict[str, Any]:
    return {"rx_packets": rx, "tx_packets": tx, "rx_interrupts": rx, "tx_interrupts": tx,
            "source": "ethtool -S", **more}


def report(*checks: Check, lab: str = "t") -> dict[str, Any]:
    ordered = sorted(checks, key=hop_order)
    return VerifyReport(lab, "userspace", ordered, seconds=2.5).to_dict()


def mixed() -> dict[str, Any]:
    return report(
        Check("domain.running", "t/vm1", "pass", "t-vm1 running"),
        verdict("ovs.port", "t/vm1/0", ["tag is 300, want 100"], {"tag": 300}),
        verdict("reach", "t/vm1/0->t/vm2/0", ["0/3 replies"], {"sent": 3}),
        verdict("isolation", "t/vm1/0->t/vm3/0", [], {"replies": 0}, "0/3 replies"),
        verdict("queues", "t/vm1/0", [], queues_evidence([7, 5, 6, 6], [7, 5, 6, 6]), "ok"),
        skipped("queues", "t/vm3/0", "no NIC of another VM on br-t VLAN 200"),
        Check("l4.tcp", "t/vm1/0->t/vm2/0", "pass", {"bytes": 1048576}, "1 MiB intact"),
    )


def test_one_row_per_check_with_its_status_class_and_badge() -> None:
    data = mixed()
    page = render_html(data, None)
    dom = parse_dom(page)
    assert [status for _id, status in dom.rows] == [c["status"] for c in data["checks"]]
    assert len({row_id for row_id, _ in dom.rows}) == len(data["checks"])
    assert dom.title == "verify t: FAILED"
    fail_rows = re.findall(r'<tr id="[^"]+" class="check fail">.*?</tr>', page, re.S)
    assert len(fail_rows) == 2
    assert all('<span class="badge fail">FAIL</span>' in r for r in fail_rows)


def test_the_summary_counts_and_links_every_failing_check_to_its_row() -> None:
    data = mixed()
    dom = parse_dom(render_html(data, None))
    failing_ids = [row_id for row_id, status in dom.rows if status == "fail"]
    assert dom.failing_links == [f"#{i}" for i in failing_ids]
    page = render_html(data, None)
    assert '<span class="badge fail">FAIL</span> 2</li>' in page
    assert '<span class="badge pass">PASS</span> 4</li>' in page
    assert '<span class="badge skip">SKIP</span> 1</li>' in page


def test_a_passing_report_has_no_fail_marking() -> None:
    data = report(Check("domain.running", "t/vm1", "pass", "running"),
                  skipped("queues", "t/vm1/0", "no peer"))
    page = render_html(data, None)
    dom = parse_dom(page)
    assert dom.title == "verify t: PASSED" and dom.failing_links == []
    assert 'class="summary passed"' in page and 'class="badge fail"' not in page
    assert '<span class="badge zero">FAIL</span> 0</li>' in page


def test_a_report_that_says_passed_but_holds_a_failure_is_shown_failed() -> None:
    data = mixed()
    data["passed"] = True  # a hand-edited or merged report: the rows decide
    assert parse_dom(render_html(data, None)).title == "verify t: FAILED"


def test_checks_are_grouped_by_hop_in_the_verifiers_order() -> None:
    data = mixed()
    data["checks"].append({"name": "future.thing", "target": "t/x", "status": "pass",
                           "evidence": "", "detail": ""})  # a hop this version does not know
    page = render_html(data, None)
    titles = re.findall(r"<h3>(.*?) <small>", page)
    assert titles == [HOPS["domain"], HOPS["ovs"], HOPS["reach"], HOPS["queues"], HOPS["l4"],
                      "future"]
    assert HOPS["reach"] == HOPS["isolation"]  # one group holds both


@pytest.mark.parametrize("where", ["lab", "target", "detail", "evidence", "name"])
def test_hostile_text_from_the_lab_file_or_guests_is_never_markup(where: str) -> None:
    check = {"name": "ovs.port", "target": "t/vm1/0", "status": "fail", "hop": "ovs",
             "detail": "tag differs", "evidence": {"tag": 300}}
    data = {"lab": "t", "passed": False, "backend": "userspace", "checks": [check]}
    if where == "lab":
        data["lab"] = HOSTILE
    elif where == "evidence":
        check["evidence"] = {"ifname": HOSTILE, "rx_packets": [1], "tx_packets": [1]}
    else:
        check[where] = HOSTILE
    page = render_html(data, None)
    dom = parse_dom(page)
    assert dom.active == 0 and "<script" not in page
    assert "&lt;script&gt;" in page
    assert len(dom.rows) == 1


def test_a_target_cannot_break_out_of_an_attribute_or_the_chart() -> None:
    target = 't/"><img src=x onerror=alert(1)>/0'
    data = report(verdict("queues", target, [], queues_evidence([1, 2], [2, 1]), "ok"))
    page = render_html(data, None)
    assert "<img" not in page and "onerror=alert(1)>" not in page.replace("&gt;", "")
    assert len(parse_dom(page).charts) == 1


def test_chart_bars_are_proportional_to_the_counts() -> None:
    rx, tx = [40, 10, 0, 20], [5, 40, 40, 40]
    dom = parse_dom(render_html(report(verdict("queues", "t/vm1/0", [],
                                               queues_evidence(rx, tx), "ok")), None))
    (bars,) = dom.charts
    assert [c for c, _ in bars] == ["bar rx", "bar rx", "bar rx idle", "bar rx",
                                    "bar tx", "bar tx", "bar tx", "bar tx"]
    for (css, height), count in zip(bars, rx + tx, strict=True):
        want = charts.IDLE_STUB if count == 0 else charts.PLOT_HEIGHT * count / 40
        assert height == pytest.approx(want, abs=0.01), (css, count)


def test_an_uneven_spread_is_visible_and_said() -> None:
    series = charts.queue_series(queues_evidence([97, 1, 1, 1], [25, 25, 25, 25]))
    assert series is not None
    svg = charts.queue_chart_svg(series, "t/vm1/0")
    heights = [float(h) for h in re.findall(r'class="bar rx"[^>]*height="([\d.]+)"', svg)]
    assert max(heights) / min(heights) == pytest.approx(97, rel=0.01)
    assert charts.spread_words(series.rx) == "97..1 (busiest 97 %)"
    assert charts.spread_words(series.tx) == "25..25 (busiest 25 %)"
    assert "RX 97..1 (busiest 97 %)" in svg


def test_interrupt_counts_are_charted_when_the_driver_has_no_queue_counters() -> None:
    evidence = {"rx_packets": [], "tx_packets": [], "rx_interrupts": [3, 4],
                "tx_interrupts": [5, 6], "source": "/proc/interrupts"}
    assert charts.queue_series(evidence) == charts.QueueSeries((3, 4), (5, 6), "interrupts")


@pytest.mark.parametrize("evidence", [
    "text evidence", {}, {"reason": "no peer"},
    {"rx_packets": [1, True], "tx_packets": [1, 1]},
    {"rx_packets": [1, -1], "tx_packets": [1, 1]},
    {"rx_packets": "1 2", "tx_packets": [1, 1]},
])
def test_evidence_without_per_queue_counts_gets_no_chart(evidence: Any) -> None:
    assert charts.queue_series(evidence) is None
    data = report(Check("queues", "t/vm1/0", "fail", evidence, "could not drive traffic"))
    dom = parse_dom(render_html(data, None))
    assert dom.charts == [] and len(dom.rows) == 1


def test_the_chart_reads_the_evidence_the_traffic_check_writes() -> None:
    """The keys the chart needs, as traffic.py's own function produces them from a real
    guest's `ethtool -S` (tests/unit/verify_samples/ethtool-S-4q.txt)."""
    after = parse.ethtool_stats((SAMPLES / "ethtool-S-4q.txt").read_text())
    before = {k: 0 for k in after}
    counters: dict[str, Any] = {"ethtool": defaultdict(dict), "irq": {}}
    counters["ethtool"]["before"]["eth0"] = ("virtio0", before)
    counters["ethtool"]["after"]["eth0"] = ("virtio0", after)
    evidence = traffic._queue_deltas(counters, "eth0", 4)
    series = charts.queue_series(json.loads(json.dumps(evidence)))  # through the JSON report
    assert series is not None and series.unit == "packets"
    assert list(series.rx) == evidence["rx_packets"] and len(series.rx) == 4
    assert series.rx[0] == after["rx_queue_0_packets"]


def test_the_placeholder_says_the_picture_is_unavailable_and_why() -> None:
    page = render_html(mixed(), None)
    assert parse_dom(page).topology == "placeholder"
    assert "Topology picture unavailable" in page and NO_PICTURE in page
    page = render_html(mixed(), None, topology_note="graph failed: <oops>")
    assert "graph failed: &lt;oops&gt;" in page


def test_a_topology_svg_is_embedded_as_it_is() -> None:
    svg = '<svg class="lab" viewBox="0 0 10 10"><rect class="vm" width="4" height="4"/></svg>'
    page = render_html(mixed(), svg)
    assert svg in page and parse_dom(page).topology == "svg"
    assert "Topology picture unavailable" not in page


def test_the_page_is_self_contained() -> None:
    page = render_html(mixed(), None)
    assert not re.search(r"https?://", page)
    assert not re.search(r"<(script|link|iframe|object|embed|img)\b", page, re.I)
    assert not re.search(r"\bsrc\s*=", page, re.I)
    assert not re.search(r"url\(|@import", page, re.I)
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(h.startswith("#") for h in hrefs)
    assert "default-src 'none'" in page  # and the browser may load nothing even so
    ids = set(re.findall(r'id="([^"]*)"', page))
    assert {h[1:] for h in hrefs} <= ids  # every link lands somewhere


def test_a_report_with_no_checks_renders() -> None:
    page = render_html({"lab": "t", "passed": True, "checks": []}, None)
    dom = parse_dom(page)
    assert dom.rows == [] and "The report has no checks." in page


def test_evidence_is_json_that_reads_back_with_queue_counts_on_one_line() -> None:
    evidence = {**queues_evidence([7, 5], [6, 6]), "ovs": {"rx_packets": 8, "source": "x"},
                "problems": ["a", "b"], "nested": [{"k": [1]}], "empty": {}}
    page = render_html(report(verdict("queues", "t/vm1/0", ["a", "b"], evidence)), None)
    (pre,) = re.findall(r"<pre>(.*?)</pre>", page, re.S)
    text = html.unescape(pre)
    assert json.loads(text) == {**evidence, "problems": ["a", "b"]}
    assert '"rx_packets": [7, 5],' in text


def test_an_svg_document_is_embedded_as_its_element_only() -> None:
    """The picture from dot_to_svg is a document (XML declaration, DOCTYPE, comments); inside
    HTML only its <svg> element may go."""
    document = ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<!DOCTYPE svg PUBLIC '
                '"-//W3C//DTD SVG 1.1//EN" "x.dtd">\n<!-- Generated by graphviz -->\n'
                '<svg width="8pt" height="8pt"><g id="graph0"></g></svg>\n')
    page = render_html({"lab": "w", "passed": True, "checks": []}, document)
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page and "Generated by" not in page
    assert '<svg width="8pt" height="8pt"><g id="graph0"></g></svg>' in page
