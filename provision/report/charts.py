"""Inline SVG bar charts of a NIC's packets per RX and TX queue, for the HTML report.

The numbers come from a ``queues`` check's evidence (``provision/verify/traffic.py``): the
guest's ``ethtool -S`` deltas per queue (``rx_packets``, ``tx_packets``), or, when the
driver has no per-queue counters, the ``/proc/interrupts`` deltas (``rx_interrupts``,
``tx_interrupts``; ``source`` says which). One scale for both directions, so that the
height of every bar in one chart compares with every other. The SVG is built here as text:
every piece of text in it goes through ``html.escape``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

PLOT_HEIGHT = 80  # px of the tallest bar
LABELS_MAX = 16  # queues past which bars carry no per-bar labels (they would overlap)
PANEL_MIN = 120  # px: a 1-queue chart stays readable
IDLE_STUB = 2  # px: a queue that moved nothing still shows a (differently coloured) mark


@dataclass(frozen=True)
class QueueSeries:
    """Per-queue counts of one NIC: RX and TX, and what was counted."""

    rx: tuple[int, ...]
    tx: tuple[int, ...]
    unit: str  # "packets" (ethtool -S) or "interrupts" (/proc/interrupts)

    @property
    def peak(self) -> int:
        return max((*self.rx, *self.tx, 0))


def _counts(value: Any) -> tuple[int, ...] | None:
    """A list of non-negative ints (bools and anything else refused), else None."""
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return None
    return tuple(value)


def queue_series(evidence: Mapping[str, Any] | str) -> QueueSeries | None:
    """The per-queue counts in a ``queues`` check's evidence; None when it has none (a skip,
    a NIC whose traffic could not be driven, or a report written by something else)."""
    if not isinstance(evidence, Mapping):
        return None
    by_irq = evidence.get("source") == "/proc/interrupts"
    keys = ("rx_interrupts", "tx_interrupts") if by_irq else ("rx_packets", "tx_packets")
    rx, tx = (_counts(evidence.get(k)) for k in keys)
    if rx is None or tx is None:
        return None
    return QueueSeries(rx, tx, "interrupts" if by_irq else "packets")


def _bar_width(queues: int) -> int:
    return 18 if queues <= 8 else 10 if queues <= LABELS_MAX else max(2, 512 // queues)


def _panel(direction: str, counts: Sequence[int], peak: int, x0: int) -> tuple[list[str], int]:
    """One direction's bars from ``x0``: the SVG elements and the panel's width."""
    bar = _bar_width(len(counts))
    gap = max(1, bar // 3)
    width = max(PANEL_MIN, len(counts) * (bar + gap) + gap)
    top, labels = 28, len(counts) <= LABELS_MAX
    base = top + PLOT_HEIGHT
    parts = [f'<text class="axis" x="{x0}" y="12">{escape(direction.upper())}</text>',
             f'<line class="base" x1="{x0}" y1="{base}" x2="{x0 + width}" y2="{base}"/>']
    for q, value in enumerate(counts):
        x = x0 + gap + q * (bar + gap)
        height = round(PLOT_HEIGHT * value / peak, 2) if peak else 0.0
        idle = value == 0
        shown = IDLE_STUB if idle else height
        css = f"bar {direction}" + (" idle" if idle else "")
        parts.append(f'<rect class="{css}" data-queue="{q}" data-count="{value}" '
                     f'x="{x}" y="{round(base - shown, 2)}" width="{bar}" height="{shown}">'
                     f'<title>{escape(direction)} queue {q}: {value}</title></rect>')
        if labels:
            cx = x + bar / 2
            parts.append(f'<text class="count" x="{cx}" y="{round(base - shown - 3, 2)}">'
                         f'{value}</text>')
            parts.append(f'<text class="queue" x="{cx}" y="{base + 12}">{q}</text>')
    return parts, width


def spread_words(counts: Sequence[int]) -> str:
    """How even one direction is: "7..5 (busiest 29 %)", or "no traffic"."""
    total = sum(counts)
    if not total:
        return "no traffic"
    return f"{max(counts)}..{min(counts)} (busiest {round(100 * max(counts) / total)} %)"


def queue_chart_svg(series: QueueSeries, title: str) -> str:
    """An inline ``<svg>``: RX bars, then TX bars, heights proportional to the counts on one
    scale (the largest count of either direction is full height). A queue that moved nothing
    gets a short bar of the ``idle`` class, so that it is visible rather than absent."""
    rx, rx_width = _panel("rx", series.rx, series.peak, 4)
    tx, tx_width = _panel("tx", series.tx, series.peak, 4 + rx_width + 24)
    width, height = 4 + rx_width + 24 + tx_width + 4, 28 + PLOT_HEIGHT + 18
    label = (f"{title}: {series.unit} per queue; RX {spread_words(series.rx)}; "
             f"TX {spread_words(series.tx)}")
    return (f'<svg class="queue-chart" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" aria-label="{escape(label)}">'
            f'<title>{escape(label)}</title>{"".join(rx + tx)}</svg>')
