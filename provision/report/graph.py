"""The lab as a picture: a Graphviz graph of what a lab has on the host as it stands, coloured
by a verify report when one is given (``provision graph``). Graphviz lays it out; nothing here
places a node.

For other front ends (``provision verify --html`` embeds the picture), one call::

    lab_svg(lab: Lab, observed: ObservedLab, report: Mapping[str, Any] | None = None,
            *, host: str | None = None, backends: Mapping[str, str] | None = None) -> str

``lab``: the whole lab spec; ``observed``: ``engine.converge.observe_lab`` of this host;
``report``: ``VerifyReport.to_dict()`` or the JSON of ``provision verify --json FILE``
(checked by ``marks.check_report``); ``host``: the inventory host this is (``--host``; None:
every VM placed here, as ``up`` without ``--host`` does); ``backends``: the virtio backend
QEMU really uses per NIC, ``{"vm/0": "userspace"}`` (``observed_backends`` in the CLI reads
it from /proc; without it the report's ``qemu.netdev`` evidence, else the domain XML, says).
Returns the SVG document. ``lab_graph`` (the ``graphviz.Digraph``) and ``dot_to_svg`` are
its two halves; only ``dot_to_svg`` runs a process (Graphviz's ``dot``).

What is drawn: bridges (datapath type), their uplinks and tunnels; a tap and OVS port per NIC
(queues attached, VLAN tag or trunks, ofport); each VM as a box (vCPUs, state) holding its
NICs (queues, backend, MAC, addresses). The observed state wins over the spec: an object the
lab wants that is not there is drawn dashed, "absent"; one the lab owns but no longer names,
"not in the lab file". With ``host`` and VMs on other hosts, each host is a cluster; the other
hosts are drawn from the spec, dotted, "not observed here". With a report: green pass, red any
failure (the failing checks' names in the label, details in the tooltip), grey skipped or not
checked; a failing NIC pair is a red dashed edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import graphviz

from provision.core.observed import ObservedLab
from provision.core.spec import Lab
from provision.errors import HostError, OperationError
from provision.report import parts
from provision.report.marks import check_report, report_marks
from provision.report.scene import Scene, text

DOT_MISSING = ("Graphviz's dot is not installed: run `provision host prepare` (it installs "
               "the graphviz package), or apt-get install graphviz")


def lab_graph(lab: Lab, observed: ObservedLab, report: Mapping[str, Any] | None = None, *,
              host: str | None = None, backends: Mapping[str, str] | None = None
              ) -> graphviz.Digraph:
    """The picture of ``lab`` on this host (the module docstring says what each argument
    is); SpecError when ``report`` is not a verify report."""
    hosts = cluster_hosts(lab, host)
    clustered = len(hosts) > 1
    marks = None
    if report is not None:
        marks = report_marks(check_report(report), lab, host, clustered)
    seen_backends = {**parts.report_backends(report, lab.name), **(backends or {})}
    scene = Scene(lab, marks, seen_backends, clustered)
    g = graphviz.Digraph(name=lab.name, graph_attr={
        "rankdir": "LR", "fontname": "Helvetica", "labelloc": "t",
        "tooltip": f"lab {lab.name}"})
    g.attr("node", shape="box", fontname="Helvetica", fontsize="10")
    g.attr("edge", fontname="Helvetica", fontsize="9")
    for h in hosts:
        seen = observed if h == host or not clustered else None
        if not clustered:
            parts.draw_host(scene, g, None, observed)
            continue
        with g.subgraph(name=f"cluster_host/{h}") as c:
            c.attr(label=f"host {h}" + ("" if seen else " (not observed here)"),
                   style="rounded" if seen else "rounded,dotted", tooltip=f"host {h}")
            parts.draw_host(scene, c, h, seen)
    parts.draw_tunnel_links(scene)
    if marks is not None:
        parts.draw_failed_pairs(scene, marks)
    for tail, head, attrs in scene.edges:
        g.edge(tail, head, **attrs)
    g.attr(label=text(title(lab, host, report, scene)))
    return g


def cluster_hosts(lab: Lab, host: str | None) -> list[str | None]:
    """With ``host`` named and VMs on other hosts too: every host with VMs, this one first
    (one cluster each); otherwise the one host drawn."""
    if host is None:
        return [None]
    return [host, *sorted({vm.host for vm in lab.vms} - {host})]


def title(lab: Lab, host: str | None, report: Mapping[str, Any] | None, scene: Scene
          ) -> list[str]:
    """The picture's caption: the lab, the host, the verify verdict, and the checks that
    judged nothing the picture shows."""
    lines = [f"lab {lab.name} on {f'host {host}' if host else 'this host'} "
             f"(lab.backend {lab.backend})"]
    if host is None and len({vm.host for vm in lab.vms}) > 1:
        lines.append("every VM placed on this host (no --host)")
    if report is None or scene.marks is None:
        return lines
    counts = scene.marks.counts
    verdict = "FAILED" if counts["fail"] else "PASSED"
    lines.append(f"verify {verdict}: {counts['pass']} passed, {counts['fail']} failed, "
                 f"{counts['skip']} skipped; QEMU backend {report.get('backend', '?')}")
    undrawn = [m for e, ms in scene.marks.by_element.items()
               if e.kind != "pair" and e not in scene.drawn for m in ms]
    undrawn += scene.marks.unplaced
    failed = sorted({m.name for m in undrawn if m.status == "fail"})
    if undrawn:
        lines.append(f"{len(undrawn)} check(s) on nothing drawn here"
                     + (f", failed: {', '.join(failed)}" if failed else ""))
    return lines


def dot_to_svg(dot: str) -> str:
    """SVG of the DOT source ``dot``, laid out by Graphviz's ``dot`` (the Debian package
    ``graphviz``): HostError (exit 4) when it is not installed, OperationError when it
    fails."""
    try:
        svg: str = graphviz.Source(dot).pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        raise HostError(DOT_MISSING) from None
    except graphviz.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) \
            else str(exc.stderr or "")
        raise OperationError(f"Graphviz's dot failed (exit {exc.returncode}): "
                             f"{err.strip()}") from None
    return svg


def lab_svg(lab: Lab, observed: ObservedLab, report: Mapping[str, Any] | None = None, *,
            host: str | None = None, backends: Mapping[str, str] | None = None) -> str:
    """The picture as an SVG document (the module docstring says what each argument is)."""
    return dot_to_svg(lab_graph(lab, observed, report, host=host, backends=backends).source)


def lab_dot(lab: Lab, observed: ObservedLab, report: Mapping[str, Any] | None = None, *,
            host: str | None = None, backends: Mapping[str, str] | None = None) -> str:
    """The picture as DOT source."""
    return lab_graph(lab, observed, report, host=host, backends=backends).source

