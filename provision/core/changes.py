"""A plan's parts: changes, their order (phases) and the plan that holds them. Data only;
``plan`` decides them, ``engine.converge`` carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provision.core.desired import (
    DesiredBridge,
    DesiredDomain,
    DesiredPort,
    DesiredTap,
    GuestNic,
)
from provision.core.disks import DesiredPool, DesiredVolume
from provision.errors import OperationError

# Apply order, the one place it is written down. Removals run first for domains (they hold
# taps and volumes), then volumes, and last for taps; the OVS phase is one transaction;
# volumes (the pool, overlays and seeds) are made before the domains that boot from them.
PHASES = ("domains-remove", "volumes-remove", "taps", "ovs", "taps-remove", "volumes",
          "domains", "guests")

Desired = (DesiredBridge | DesiredPort | DesiredTap | DesiredDomain | GuestNic | DesiredPool
           | DesiredVolume)


class ConflictError(OperationError):
    """A name the lab needs is taken by an object the lab does not own."""


@dataclass(frozen=True)
class Change:
    phase: str  # one of PHASES
    action: str  # create | modify | delete | start | replace | restart | configure
    kind: str  # bridge | port | tap | domain | guest | guest-nic
    target: str  # the object's name (guest-nic: "<domain>/<mac>")
    before: Any  # observed value(s), None when absent
    after: Any  # desired value(s), None when removed
    reason: str  # why, for a human
    # The typed object this change brings about; None for a removal. apply needs nothing else.
    desired: Desired | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k)
                for k in ("phase", "action", "kind", "target", "before", "after", "reason")}

    def describe(self) -> str:
        """One line: the object, then what differs."""
        return f"{self.kind} {self.target}: {self.reason}"


@dataclass
class Plan:
    lab: str
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the plan left alone, and why

    @property
    def in_sync(self) -> bool:
        return not self.changes

    def by_phase(self, phase: str) -> list[Change]:
        return [c for c in self.changes if c.phase == phase]

    def to_dict(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "in_sync": self.in_sync,
            "changes": [c.to_dict() for c in self.changes],
            "notes": self.notes,
        }


