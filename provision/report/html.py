"""``provision verify LAB --html FILE``: the verify report as one self-contained HTML page.

Input is the JSON form of the report (``VerifyReport.to_dict()``, what ``--json`` writes), so a
stored report renders the same as a fresh one. The page: a summary (verdict, counts, every
failing check linked to its row), the topology picture, one chart per NIC of its packets per
queue, and the checks grouped by hop in the verifier's data-path order (``verify.model.HOPS``),
one table row per check with its evidence.

Self-contained: inline CSS and inline SVG, no script, no external URL; a Content-Security-Policy
meta tag forbids the browser to load anything even so. All text from the report (names come
from the lab file, evidence from the guests) is escaped by the template's autoescape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from provision.errors import HostError
from provision.report import charts
from provision.verify.model import HOPS

TEMPLATE = "report.html.j2"
NO_PICTURE = "no picture was given: draw one with `provision graph LAB --svg FILE`"
STATUSES = ("pass", "fail", "skip")


@dataclass(frozen=True)
class Row:
    """One check as the page shows it."""

    anchor: str  # "check-N", N its index in the report: ids never carry report text
    name: str
    target: str
    status: str  # pass | fail | skip; anything else is shown as "unknown"
    detail: str
    evidence: str
    series: charts.QueueSeries | None = None  # packets per queue, for a queues check


@dataclass
class Group:
    """The checks of one hop (reach and isolation share one: the reachability matrix)."""

    title: str
    rows: list[Row] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.status == status)


@dataclass(frozen=True)
class Chart:
    anchor: str
    target: str
    status: str
    unit: str
    svg: Markup
    rx: str  # charts.spread_words of each direction
    tx: str


def _status(value: Any) -> str:
    return value if value in STATUSES else "unknown"


def _evidence_text(evidence: Any, indent: str = "") -> str:
    """Evidence as indented JSON, a list of scalars (per-queue counts) on one line."""
    if isinstance(evidence, str) and not indent:
        return evidence
    inner = indent + "  "
    if isinstance(evidence, dict) and evidence:
        items = [f"{inner}{json.dumps(str(k))}: {_evidence_text(v, inner)}"
                 for k, v in evidence.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(evidence, list) and any(isinstance(v, dict | list) for v in evidence):
        items = [f"{inner}{_evidence_text(v, inner)}" for v in evidence]
        return "[\n" + ",\n".join(items) + f"\n{indent}]"
    return json.dumps(evidence, default=str)


def _hop(check: Mapping[str, Any]) -> str:
    return str(check.get("hop") or str(check.get("name", "")).split(".", 1)[0])


def rows(report: Mapping[str, Any]) -> list[Row]:
    """One ``Row`` per check, in the report's order, with its per-queue counts if it has any."""
    out = []
    for i, check in enumerate(report.get("checks", [])):
        evidence = check.get("evidence", "")
        out.append(Row(f"check-{i}", str(check.get("name", "")), str(check.get("target", "")),
                       _status(check.get("status")), str(check.get("detail", "")),
                       _evidence_text(evidence), charts.queue_series(evidence)))
    return out


def groups(report: Mapping[str, Any], all_rows: Sequence[Row]) -> list[Group]:
    """The rows by hop title, in ``HOPS`` order; hops the model does not name come last, in
    the order they first appear."""
    by_title: dict[str, Group] = {t: Group(t) for t in dict.fromkeys(HOPS.values())}
    for check, row in zip(report.get("checks", []), all_rows, strict=True):
        hop = _hop(check)
        title = HOPS.get(hop, hop or "other")
        by_title.setdefault(title, Group(title)).rows.append(row)
    return [g for g in by_title.values() if g.rows]


def queue_charts(all_rows: Sequence[Row]) -> list[Chart]:
    """One chart per check that carries per-queue counts (a ``queues`` check per NIC)."""
    return [Chart(r.anchor, r.target, r.status, r.series.unit,
                  Markup(charts.queue_chart_svg(r.series, r.target)),
                  charts.spread_words(r.series.rx), charts.spread_words(r.series.tx))
            for r in all_rows if r.series is not None]


def _counts(all_rows: Sequence[Row]) -> dict[str, int]:
    counts = {s: 0 for s in (*STATUSES, "unknown")}
    for r in all_rows:
        counts[r.status] += 1
    return counts


@cache
def _template() -> jinja2.Template:
    """The page's template from the package's own templates ($VIRTIO_LAB_TEMPLATES names a
    directory for the domain XML, which need not hold this one); HostError (exit 4) when the
    installation lacks it."""
    directory = Path(str(resources.files("provision").joinpath("templates"))).resolve()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(directory)),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    try:
        return env.get_template(TEMPLATE)
    except jinja2.TemplateNotFound as exc:
        raise HostError(f"template {exc.name} not found in {directory}: the installation of "
                        "virtio-lab is broken; reinstall it") from None


def svg_element(svg: str) -> str:
    """An SVG document without what only a file may hold (the XML declaration, the
    DOCTYPE, the comments before the root): the <svg> element, to put inside HTML."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def render_html(report: Mapping[str, Any], topology_svg: str | None, *,
                topology_note: str = NO_PICTURE) -> str:
    """The page for ``report`` (``VerifyReport.to_dict()``, or a stored ``--json`` file).

    ``topology_svg`` is an ``<svg>`` element from ``provision.report.graph``, trusted as
    markup (that module escapes its own text); None shows a placeholder that says the
    picture is unavailable and why (``topology_note``)."""
    all_rows = rows(report)
    counts = _counts(all_rows)
    passed = bool(report.get("passed", counts["fail"] == 0)) and counts["fail"] == 0
    return _template().render(
        lab=str(report.get("lab", "?")),
        passed=passed,
        backend=str(report.get("backend", "unknown")),
        spec_backend=str(report.get("spec_backend", "")),
        seconds=report.get("seconds"),
        counts=counts,
        failing=[r for r in all_rows if r.status == "fail"],
        groups=groups(report, all_rows),
        charts=queue_charts(all_rows),
        topology=None if topology_svg is None else Markup(svg_element(topology_svg)),
        topology_note=topology_note,
    )


def write_html(report: Mapping[str, Any], path: str | Path, topology_svg: str | None, *,
               topology_note: str = NO_PICTURE) -> None:
    """``render_html`` into ``path`` (UTF-8)."""
    page = render_html(report, topology_svg, topology_note=topology_note)
    Path(path).write_text(page, encoding="utf-8")
