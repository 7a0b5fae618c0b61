"""`provision verify --html` pages as headless Chromium renders them, from a stored report
and variants of it: no VM boots, a few seconds of Chromium each.

tests/unit/verify_samples/report-wrong-vlan.json is a real `verify --json` report, saved by
tests/integration/test_verify.py's wrong-VLAN test on this machine (2026-11-25): three
2-vCPU VMs with 2-queue NICs, vm1's port tagged 300 instead of 100, so ovs.port, reach,
both queues checks and l4.tcp fail. That test opens the page of a live lab the same way."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from chromium_page import FAIL_RED, Chromium

from provision.report.html import write_html

SAMPLE = Path(__file__).parent / "verify_samples" / "report-wrong-vlan.json"
RX_BLUE = (0x15, 0x65, 0xC0)  # svg.queue-chart .bar.rx in templates/report.css
PICTURE = (0x7B, 0x1F, 0xA2)  # the stand-in topology picture's fill
SIZE = (1200, 4000)  # tall enough for the whole sample page


def sample() -> dict[str, Any]:
    return json.loads(SAMPLE.read_text())  # type: ignore[no-any-return]


def healthy() -> dict[str, Any]:
    """The sample as if the tag were right: every check passes, the queues moved evenly."""
    data = copy.deepcopy(sample())
    for check in data["checks"]:
        if check["status"] == "fail":
            check.update(status="pass", detail="")
            check["evidence"].pop("problems", None)
        if check["name"] == "queues" and check["status"] == "pass":
            check["evidence"].update(rx_packets=[6, 5], tx_packets=[7, 5])
    data["passed"] = True
    return data


def test_a_failing_report_renders_every_check_and_marks_the_failures_red(
    chromium: Chromium, tmp_path: Path
) -> None:
    data = sample()
    page = tmp_path / "report.html"
    write_html(data, page, None)
    dom = chromium.dump_dom(page)
    assert [s for _i, s in dom.rows] == [c["status"] for c in data["checks"]]
    fails = [row_id for row_id, status in dom.rows if status == "fail"]
    assert len(fails) == 5 and dom.failing_links == [f"#{i}" for i in fails]
    assert dom.topology == "placeholder" and dom.active == 0
    assert len(dom.charts) == 2  # vm1 and vm2; vm3's queues check is a skip
    shot = chromium.screenshot(page, tmp_path / "report.png", SIZE)
    red = shot.bands(FAIL_RED)
    assert len(red) >= 2, red  # the summary at the top, and failing rows further down
    assert red[0][0] < 100 and red[-1][0] > 600, red
    assert shot.count_near(RX_BLUE) > 200  # the bar charts were painted


def test_a_passing_report_has_no_red_and_shows_the_picture(
    chromium: Chromium, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    svg = ('<svg width="300" height="120" viewBox="0 0 300 120">'
           '<rect x="10" y="10" width="280" height="100" fill="#7b1fa2"/></svg>')
    write_html(healthy(), page, svg)
    dom = chromium.dump_dom(page)
    assert dom.title.endswith("PASSED") and dom.topology == "svg"
    assert {s for _i, s in dom.rows} == {"pass", "skip"} and dom.failing_links == []
    shot = chromium.screenshot(page, tmp_path / "report.png", SIZE)
    assert shot.count_near(FAIL_RED) == 0
    assert shot.count_near(PICTURE, tolerance=8) >= 280 * 100 * 0.9


@pytest.mark.parametrize("hostile", ['<script>document.title="owned"</script>',
                                     '<img src=x onerror="document.title=1">'])
def test_hostile_names_stay_text_in_the_browser(chromium: Chromium, tmp_path: Path,
                                                hostile: str) -> None:
    data = sample()
    data["lab"] = hostile
    data["checks"][0]["target"] = f"demo/{hostile}"
    page = tmp_path / "report.html"
    write_html(data, page, None)
    dom = chromium.dump_dom(page)
    assert dom.active == 0 and dom.title == f"verify {hostile}: FAILED"
    assert len(dom.rows) == len(data["checks"])
