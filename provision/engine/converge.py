"""Observe and apply: the only module that drives all backends (OVS, taps, libvirt, guests)
for a lab. ``observe_lab()`` fills an ``ObservedLab``; ``apply_plan()`` carries out a
``Plan`` phase by phase, domains in parallel, the OVS phase in one transaction.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import libvirt

from provision.backends import agent, taps, virt
from provision.backends.ovs import Ovs
from provision.core.desired import DesiredLab
from provision.core.observed import ObservedGuestNic, ObservedLab
from provision.core.plan import Change, Plan
from provision.errors import OperationError, ProvisionError

T = TypeVar("T")
R = TypeVar("R")


class Progress(Protocol):
    """What long operations report; the CLI draws it with rich, the tests ignore it."""

    def task(self, description: str, total: int) -> Any: ...
    def advance(self, task: Any, note: str = "") -> None: ...


class NoProgress:
    def task(self, description: str, total: int) -> Any:
        return None

    def advance(self, task: Any, note: str = "") -> None:
        return None


@dataclass
class Backends:
    """Open connections to the daemons, shared by observe and apply."""

    ovs: Ovs
    conn: libvirt.virConnect

    def close(self) -> None:
        self.ovs.close()
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.close()


@contextlib.contextmanager
def open_backends() -> Iterator[Backends]:
    conn = virt.connect()
    try:
        ovs = Ovs()
    except ProvisionError:
        conn.close()
        raise
    backends = Backends(ovs, conn)
    try:
        yield backends
    finally:
        backends.close()


def parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """Run ``fn`` over ``items`` in threads, wait for all, then raise: one failure as it is,
    several as one OperationError naming each (so a timeout names every VM that missed it)."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
    errors = [e for e in (f.exception() for f in futures) if e is not None]
    if len(errors) == 1 or (errors and not all(isinstance(e, ProvisionError) for e in errors)):
        raise errors[0]
    if errors:
        raise OperationError(f"{len(errors)} failures: " + "; ".join(str(e) for e in errors))
    return [f.result() for f in futures]


def observe_lab(
    b: Backends, lab: str, desired: DesiredLab | None = None, guests: bool = True
) -> ObservedLab:
    """What the host holds for ``lab``: owned objects plus those holding wanted names."""
    want_br = [x.name for x in desired.bridges] if desired else []
    want_ports = [x.name for x in desired.ports] if desired else []
    want_doms = [x.name for x in desired.domains] if desired else []
    bridges, ports = b.ovs.observe(lab, want_br, want_ports)
    observed = ObservedLab(
        lab=lab,
        bridges=bridges,
        ports=ports,
        taps=taps.observe_taps(lab, want_ports),
        domains=virt.observe_domains(b.conn, lab, want_doms),
    )
    if guests:
        running = [d for d in observed.domains.values() if d.running and d.owner]
        results = parallel(lambda d: (d.name, _try_observe_guest(b.conn, d.name)), running)
        observed.guests = {name: nics for name, nics in results if nics is not None}
        observed.guests_observed = True
    return observed


def _try_observe_guest(conn: libvirt.virConnect, name: str) -> dict[str, ObservedGuestNic] | None:
    dom = virt.lookup(conn, name)
    if dom is None:
        return None
    try:
        return agent.observe_nics_fast(dom)
    except agent.AgentError:
        return None


@dataclass
class ApplyResult:
    applied: list[Change] = field(default_factory=list)
    agent_seconds: dict[str, float] = field(default_factory=dict)


def apply_plan(
    b: Backends,
    plan: Plan,
    desired: DesiredLab | None,
    progress: Progress | None = None,
    agent_timeout: float = 300.0,
) -> ApplyResult:
    """Carry out ``plan``; with ``desired``, wait for every lab guest's agent at the end."""
    progress = progress or NoProgress()
    result = ApplyResult()
    _remove_domains(b, plan.by_phase("domains-remove"), progress)
    for change in plan.by_phase("taps"):
        tap = next(t for t in desired.taps if t.name == change.target)  # type: ignore[union-attr]
        if change.action == "replace":
            taps.delete_tap(tap.name)
        taps.ensure_tap(tap)
    ovs_changes = plan.by_phase("ovs")
    if ovs_changes:
        task = progress.task("OVS transaction", 1)
        b.ovs.apply(ovs_changes, desired)
        progress.advance(task)
    for change in plan.by_phase("taps-remove"):
        taps.delete_tap(change.target)
    if desired is not None:
        _converge_domains(b, plan.by_phase("domains"), desired, progress)
        result.agent_seconds = _converge_guests(b, plan, desired, progress, agent_timeout)
    result.applied = list(plan.changes)
    return result


def _remove_domains(b: Backends, changes: list[Change], progress: Progress) -> None:
    if not changes:
        return
    task = progress.task("removing domains", len(changes))

    def remove(change: Change) -> None:
        dom = virt.lookup(b.conn, change.target)
        if dom is not None:
            virt.remove(dom)
        progress.advance(task, change.target)

    parallel(remove, changes)


def _converge_domains(
    b: Backends, changes: list[Change], desired: DesiredLab, progress: Progress
) -> None:
    if not changes:
        return
    xml = {d.name: d.xml for d in desired.domains}
    task = progress.task("starting domains", len(changes))

    def converge(change: Change) -> None:
        dom = virt.lookup(b.conn, change.target)
        if dom is not None and change.action in ("replace", "restart"):
            virt.stop(dom)
        if dom is None or change.action == "replace":
            dom = virt.define(b.conn, xml[change.target])
        virt.start(dom)
        progress.advance(task, change.target)

    parallel(converge, changes)


def _converge_guests(
    b: Backends, plan: Plan, desired: DesiredLab, progress: Progress, timeout: float
) -> dict[str, float]:
    """Wait for every guest agent, then make each guest NIC match the lab."""
    for change in plan.by_phase("guests"):
        if change.kind == "domain":  # the guest lost a NIC: reboot it from its definition
            dom = virt.lookup(b.conn, change.target)
            if dom is not None:
                virt.stop(dom)
                virt.start(dom)
    task = progress.task("waiting for guest agents", len(desired.domains))

    def settle(d: Any) -> tuple[str, float]:
        dom = virt.lookup(b.conn, d.name)
        if dom is None:
            raise OperationError(f"domain {d.name}: vanished during up")
        waited = agent.wait_agent(dom, timeout)
        _settle_nics(dom, d)
        progress.advance(task, d.name)
        return d.name, waited

    return dict(parallel(settle, desired.domains))


def _settle_nics(dom: libvirt.virDomain, d: Any, attempts: int = 50) -> None:
    """Configure guest NICs that differ from the lab; the guest's init may still be busy."""
    for _ in range(attempts):
        seen = agent.observe_nics_fast(dom)
        pending = [n for n in d.nics if not _nic_ok(seen.get(n.mac), n)]
        if not pending:
            return
        for nic in pending:
            if nic.mac in seen:
                agent.configure_nic(dom, seen[nic.mac].ifname, nic)
        time.sleep(0.1)
    raise OperationError(f"domain {d.name}: guest NICs did not reach the lab's settings")


def _nic_ok(seen: ObservedGuestNic | None, nic: Any) -> bool:
    return (
        seen is not None
        and seen.up
        and seen.combined == nic.queues
        and (nic.ip is None or nic.ip in seen.addresses)
    )
