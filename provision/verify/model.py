"""The verifier's data: one ``Check`` per hop and target, gathered in a ``VerifyReport``.

Check names are stable (CI systems and scripts match on them); the hop of a check is the part
of its name before the first dot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "skip"]
PASS: Status = "pass"
FAIL: Status = "fail"
SKIP: Status = "skip"

# Hops in data-path order: the table groups by these, the JSON carries them.
HOPS: dict[str, str] = {
    "domain": "Domain (libvirt live XML)",
    "qemu": "QEMU (netdev, fds, threads)",
    "tap": "Tap (host kernel)",
    "ovs": "OVS (OVSDB)",
    "guest": "Guest (virtio_net, via the agent)",
    "reach": "Reachability matrix",
    "isolation": "Reachability matrix",
    "queues": "Every queue carries traffic",
    "l4": "Transport (TCP across the data path)",
    "perf": "Throughput (informational)",
}


@dataclass
class Check:
    """One verdict: what was checked (name, target), the verdict, and what was seen."""

    name: str  # e.g. "qemu.netdev"
    target: str  # "lab/vm/nic", "lab/vm", a bridge name, or "lab/vm/0->lab/vm2/0"
    status: Status
    evidence: dict[str, Any] | str
    detail: str = ""  # one line for humans: the problem on fail, the reason on skip

    @property
    def hop(self) -> str:
        return self.name.split(".", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "status": self.status,
            "hop": self.hop,
            "detail": self.detail,
            "evidence": self.evidence,
        }


def verdict(name: str, target: str, problems: list[str], evidence: dict[str, Any],
            ok_detail: str = "") -> Check:
    """pass when ``problems`` is empty, else fail naming them."""
    if problems:
        return Check(name, target, FAIL, {**evidence, "problems": problems}, "; ".join(problems))
    return Check(name, target, PASS, evidence, ok_detail)


def skipped(name: str, target: str, reason: str, evidence: dict[str, Any] | None = None) -> Check:
    return Check(name, target, SKIP, {**(evidence or {}), "reason": reason}, reason)


@dataclass
class VerifyReport:
    """Everything ``provision verify`` found about one lab."""

    lab: str
    backend: str  # what QEMU actually uses: vhost-net | userspace | mixed | unknown
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    spec_backend: str = "auto"  # the lab file's backend
    record: dict[str, Any] | None = None  # what the lab resolves to here (engine.record)

    @property
    def passed(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        out = {PASS: 0, FAIL: 0, SKIP: 0}
        for c in self.checks:
            out[c.status] += 1
        return out

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def to_dict(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "passed": self.passed,
            "backend": self.backend,
            "datapath": self.backend,  # deprecated alias of backend (design.md's first key)
            "spec_backend": self.spec_backend,
            "seconds": round(self.seconds, 2),
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
            "record": self.record,
        }


def hop_order(check: Check) -> int:
    hops = list(HOPS)
    return hops.index(check.hop) if check.hop in hops else len(hops)
