"""The lab operations every front end shares (CLI, Ansible modules, benchmarks): plan, up and
down of a lab file, returning data. No printing here; progress goes through ``Progress``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision import converge, desired, image, plan, spec
from provision.converge import Progress
from provision.host import lab_caps


@dataclass
class LabResult:
    """What a lab operation did (or, in check mode, would do)."""

    lab: str
    plan: plan.Plan
    changed: bool  # true exactly when the plan was not empty (and, unless check, applied)
    datapath: str | None = None  # "vhost-net" | "userspace": the backend the lab uses
    domain_type: str | None = None  # "kvm" | "qemu"
    agent_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "changed": self.changed, "datapath": self.datapath,
                "domain_type": self.domain_type, "agent_seconds": self.agent_seconds,
                "seconds": round(self.seconds, 3)}


def load(path: str | Path) -> tuple[spec.Lab, desired.DesiredLab]:
    """Validate the lab file and resolve it against this host; touches nothing."""
    lab = spec.load_lab(path)
    img = image.load_image(lab.vms[0].image if lab.vms else "tiny")
    return lab, desired.desired_state(lab, lab_caps(), img)


def plan_lab(path: str | Path) -> LabResult:
    """The changes `up` would make; nothing on the host changes."""
    t0 = time.monotonic()
    _lab, want = load(path)
    with converge.open_backends() as b:
        p = plan.plan_changes(want, converge.observe_lab(b, want.lab, want))
    return LabResult(want.lab, p, not p.in_sync, want.datapath, want.domain_type,
                     seconds=time.monotonic() - t0)


def up_lab(path: str | Path, progress: Progress | None = None, agent_timeout: float = 300.0,
           on_plan: Any = None) -> LabResult:
    """Converge the host to the lab; an empty plan changes nothing and says so."""
    t0 = time.monotonic()
    _lab, want = load(path)
    with converge.open_backends() as b:
        p = plan.plan_changes(want, converge.observe_lab(b, want.lab, want))
        result = LabResult(want.lab, p, not p.in_sync, want.datapath, want.domain_type)
        if not p.in_sync:
            if on_plan is not None:
                on_plan(p)
            applied = converge.apply_plan(b, p, want, progress, agent_timeout=agent_timeout)
            result.agent_seconds = applied.agent_seconds
    result.seconds = time.monotonic() - t0
    return result


def down_lab(path: str | Path, progress: Progress | None = None, check: bool = False,
             on_plan: Any = None) -> LabResult:
    """Remove every object the lab owns (found by ownership tags), and nothing else."""
    t0 = time.monotonic()
    lab = spec.load_lab(path)
    with converge.open_backends() as b:
        p = plan.plan_teardown(converge.observe_lab(b, lab.name, guests=False))
        if not p.in_sync and not check:
            if on_plan is not None:
                on_plan(p)
            converge.apply_plan(b, p, None, progress)
    return LabResult(lab.name, p, not p.in_sync, seconds=time.monotonic() - t0)
