"""A verify report read back (the JSON of ``provision verify --json FILE``) and its checks laid
on the elements of the lab's picture (``provision.report.graph``). Pure, except
``read_report``, which reads the file.

Which element each check judged, from the check names and targets of ``provision.verify``:

    check                                         target            element
    domain.running, domain.owner, qemu.backend    lab/vm            the VM
    domain.nic, qemu.netdev, guest.nic, queues,   lab/vm/i[.vid]    the NIC (a trunk VLAN's
      reach (skipped: nothing to ping)                                checks are its NIC's)
    tap, ovs.port                                 lab/vm/i          the NIC's tap and port
    ovs.bridge                                    bridge            the bridge
    ovs.uplink, ovs.tunnel                        port name         that port
    reach, isolation, l4.tcp, perf.*              a->b              the pair (NIC to NIC, or
                                                                    NIC to an uplink's probe)

A merged report (the Ansible ``report`` module) prefixes each target with the host that made
the check, ``hv1: lab/vm/0``. A check whose target names nothing of the lab is kept apart
(``Marks.unplaced``), so the picture can say it exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.core.owner import tap_name
from provision.core.spec import Lab
from provision.core.yamlfile import read_small_json
from provision.errors import SpecError

MAX_BYTES = 64 << 20  # a report is a few kB per NIC; perf evidence adds little
STATUSES = ("pass", "fail", "skip")
FIX = "pass a report written by `provision verify LAB --json FILE`"
PAIR_HOPS = ("reach", "isolation", "l4", "perf")
PORT_CHECKS = ("tap", "ovs.port")
LINK_CHECKS = ("ovs.uplink", "ovs.tunnel")
_NIC = re.compile(r"^(?P<vm>[^/]+)/(?P<index>\d+)(?:\.\d+)?$")
_OUTSIDE = re.compile(r" via uplink (?P<port>\S+)$")


@dataclass(frozen=True)
class Element:
    """One thing the picture draws. ``host``: the hypervisor's cluster (None: one host).
    ``name``: the VM, ``vm/i`` for a NIC, the port's or bridge's name; a pair's ends are
    ``src`` and ``dst``."""

    kind: str  # "vm" | "nic" | "port" | "bridge" | "pair"
    host: str | None
    name: str
    src: Element | None = None
    dst: Element | None = None


@dataclass(frozen=True)
class Mark:
    """One check's verdict, as the picture shows it."""

    name: str
    status: str  # pass | fail | skip
    detail: str


@dataclass
class Marks:
    """The verify report's checks by element, and those that name no element."""

    by_element: dict[Element, list[Mark]] = field(default_factory=dict)
    unplaced: list[Mark] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))

    def of(self, element: Element) -> list[Mark]:
        return self.by_element.get(element, [])

    def pairs(self) -> list[tuple[Element, list[Mark]]]:
        return [(e, m) for e, m in self.by_element.items() if e.kind == "pair"]


def status_of(marks: list[Mark]) -> str | None:
    """fail if any check failed, else pass if any passed, else skip; None: no check."""
    statuses = {m.status for m in marks}
    return next((s for s in ("fail", "pass", "skip") if s in statuses), None)


def read_report(path: str | Path, flag: str = "--verify") -> dict[str, Any]:
    """The verify report in ``path``, checked (``check_report``); SpecError (exit 3) naming
    the option and the file when it cannot be read or is not a verify report."""
    source = f"{flag} {os.fspath(path)}"
    return check_report(read_small_json(path, source, "report", FIX, MAX_BYTES), source)


def check_report(report: Any, source: str = "report") -> dict[str, Any]:
    """``report`` when it has the verify report's shape (a lab name, checks each with name,
    target and a status of pass, fail or skip); SpecError naming ``source`` and the key."""
    if not isinstance(report, dict):
        raise SpecError(source, f"is not a verify report: a JSON object is wanted, not "
                        f"{type(report).__name__}; {FIX}")
    if not isinstance(report.get("lab"), str):
        raise SpecError(f"{source}: lab", f"is missing or not a string; {FIX}")
    checks = report.get("checks")
    if not isinstance(checks, list):
        raise SpecError(f"{source}: checks", f"is missing or not a list; {FIX}")
    for i, check in enumerate(checks):
        where = f"{source}: checks[{i}]"
        if not isinstance(check, dict):
            raise SpecError(where, "is not an object with name, target and status")
        for key in ("name", "target"):
            if not isinstance(check.get(key), str):
                raise SpecError(f"{where}.{key}", "is missing or not a string")
        if check.get("status") not in STATUSES:
            raise SpecError(f"{where}.status", f"is {check.get('status')!r}; one of "
                            f"{', '.join(STATUSES)} is wanted")
    return report


def report_marks(report: Mapping[str, Any], lab: Lab, here: str | None = None,
                 clustered: bool = False) -> Marks:
    """The report's checks by element. ``clustered``: the picture has one cluster per host,
    so an element's host is its VM's ``host:``, else the target's prefix, else ``here``;
    otherwise every element's host is None."""
    marks = Marks()
    for check in report["checks"]:
        mark = Mark(check["name"], check["status"], str(check.get("detail") or ""))
        marks.counts[mark.status] += 1
        prefix, _, target = check["target"].rpartition(": ")
        host = (prefix or here) if clustered else None
        element = _element(mark.name, target, lab, host, clustered)
        if element is None:
            marks.unplaced.append(mark)
        else:
            marks.by_element.setdefault(element, []).append(mark)
    return marks


def _element(name: str, target: str, lab: Lab, host: str | None, clustered: bool
             ) -> Element | None:
    hop = name.split(".", 1)[0]
    if name == "ovs.bridge":
        known = any(b.name == target for b in lab.bridges)
        return Element("bridge", host, target) if known else None
    if name in LINK_CHECKS:
        return Element("port", host, target)
    if hop in PAIR_HOPS and "->" in target:
        src, _, dst = target.partition("->")
        a = _endpoint(src, lab, host, clustered)
        b = _endpoint(dst, lab, host, clustered)
        return None if a is None or b is None else Element("pair", host, name=target,
                                                            src=a, dst=b)
    lab_part, _, rest = target.partition("/")
    if lab_part != lab.name:
        return None
    vm = next((v for v in lab.vms if v.name == rest.split("/", 1)[0]), None)
    if vm is None:
        return None
    host = vm.host if clustered else None
    if "/" not in rest:
        return Element("vm", host, vm.name)
    nic = _NIC.match(rest)
    if nic is None or int(nic["index"]) >= len(vm.nics):
        return None
    if name in PORT_CHECKS:
        return Element("port", host, tap_name(lab.name, vm.name, int(nic["index"])))
    return Element("nic", host, f"{vm.name}/{nic['index']}")


def _endpoint(target: str, lab: Lab, host: str | None, clustered: bool) -> Element | None:
    """One end of a pair: a NIC, or an uplink's probe address (the uplink's port)."""
    outside = _OUTSIDE.search(target)
    if outside:
        return Element("port", host, outside["port"])
    lab_part, _, rest = target.partition("/")
    nic = _NIC.match(rest)
    if lab_part != lab.name or nic is None:
        return None
    vm = next((v for v in lab.vms if v.name == nic["vm"]), None)
    if vm is None or int(nic["index"]) >= len(vm.nics):
        return None
    return Element("nic", vm.host if clustered else None, f"{vm.name}/{nic['index']}")
