"""How the lab's picture draws an element: its node id, its label, and its look from its
state on the host (present, absent, not observed here, owned but not in the lab file) and its
verify verdict. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import graphviz

from provision.core.spec import Lab
from provision.report.marks import Element, Marks, status_of

# an element's state on the host -> (Graphviz style, border colour without a report)
STATES = {"present": ("filled", "black"), "absent": ("filled,dashed", "gray40"),
          "remote": ("filled,dotted", "gray40"), "unexpected": ("filled,dashed", "darkorange")}
# what a state adds to the label, so the picture reads without colour too
STATE_WORDS = {"present": "", "absent": "absent", "remote": "not observed here",
               "unexpected": "owned, not in the lab file"}
# verify verdict (None: no check of this element) -> (fill, border)
VERDICT = {"pass": ("#c8e6c9", "#2e7d32"), "fail": ("#ffcdd2", "#c62828"),
           "skip": ("#e0e0e0", "#757575"), None: ("#e0e0e0", "#757575")}
PLAIN = {"present": "white", "absent": "#f5f5f5", "remote": "#f5f5f5", "unexpected": "#fff3e0"}
FAILED_PAIR = {"color": "#c62828", "fontcolor": "#c62828", "style": "dashed",
               "constraint": "false", "dir": "forward"}


@dataclass
class Scene:
    """What drawing one picture needs, and what it has drawn so far. Edges wait in
    ``edges`` until every node is declared: an edge naming an undeclared node inside a
    cluster would put that node there."""

    lab: Lab
    marks: Marks | None
    backends: Mapping[str, str]  # "vm/i" -> the virtio backend QEMU uses
    clustered: bool  # one cluster per host
    drawn: set[Element] = field(default_factory=set)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    tunnels: dict[tuple[str | None, str, str], str] = field(default_factory=dict)

    def node(self, g: graphviz.Digraph, element: Element, lines: list[str], state: str,
             rounded: bool = False, **attrs: str) -> str:
        """Draw ``element`` as a node in ``g``; returns its id (the SVG <title>)."""
        self.drawn.add(element)
        node_id = element_id(element)
        style = self.style(element, state)
        if rounded:
            style["style"] += ",rounded"
        g.node(node_id, self.label(element, lines, state), **{**style, **attrs})
        return node_id

    def cluster(self, g: graphviz.Digraph, element: Element, lines: list[str], state: str
                ) -> Any:
        """A cluster for ``element`` (a VM holding its NICs), styled as a node would be."""
        self.drawn.add(element)
        sub = g.subgraph(name=f"cluster_{element_id(element)}")
        return _Styled(sub, {"label": self.label(element, lines, state), "fontsize": "11",
                             **self.style(element, state)})

    def edge(self, tail: str, head: str, **attrs: str) -> None:
        self.edges.append((tail, head, attrs))

    def label(self, element: Element, lines: list[str], state: str) -> str:
        return text([*lines, STATE_WORDS[state], *self.failing(element)])

    def style(self, element: Element, state: str) -> dict[str, str]:
        style, color = STATES[state]
        fill = PLAIN[state]
        tooltip = [f"{element.kind} {element.name}" + (f": {STATE_WORDS[state]}"
                                                       if STATE_WORDS[state] else "")]
        if self.marks is not None:
            marks = self.marks.of(element)
            fill, verdict_color = VERDICT[status_of(marks)]
            color = color if state == "unexpected" else verdict_color
            tooltip += [f"{m.status.upper()} {m.name}" + (f": {m.detail}" if m.detail else "")
                        for m in marks] or ["no verify check"]
        return {"style": style, "color": color, "fillcolor": fill,
                "tooltip": graphviz.escape("\n".join(tooltip))}

    def failing(self, element: Element) -> list[str]:
        if self.marks is None:
            return []
        failed = sorted({m.name for m in self.marks.of(element) if m.status == "fail"})
        return [f"FAIL {', '.join(failed)}"] if failed else []


class _Styled:
    """``g.subgraph()``'s context manager, with the cluster's attributes set on entry."""

    def __init__(self, sub: Any, attrs: dict[str, str]) -> None:
        self.sub, self.attrs = sub, attrs

    def __enter__(self) -> graphviz.Digraph:
        g: graphviz.Digraph = self.sub.__enter__()
        g.attr(**self.attrs)
        return g

    def __exit__(self, *exc: object) -> None:
        self.sub.__exit__(*exc)


def element_id(element: Element) -> str:
    """The node's id in DOT and its <title> in the SVG: host/kind/name (no ':', which DOT
    reads as a node's port)."""
    return "/".join(p for p in (element.host, element.kind, element.name) if p
                    ).replace(":", "_")


def text(lines: list[str]) -> str:
    """A label of several lines, each taken literally (no DOT escapes, no HTML)."""
    # nohtml: the joined label stays plain text even when it starts with < and ends with >
    return graphviz.nohtml("\\n".join(graphviz.escape(line) for line in lines if line))


def vlan_text(tag: int | None, trunks: tuple[int, ...] | list[int]) -> str:
    if tag:
        return f"VLAN {tag}"
    return f"trunks {','.join(map(str, trunks))}" if trunks else "untagged"
