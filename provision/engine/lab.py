"""The lab operations every front end shares (CLI, Ansible modules, benchmarks): plan, up and
down of a lab file, returning data. No printing here; progress goes through ``Progress``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.core import desired, inventory, plan, spec, tunnels
from provision.core.placement import guest_mtus
from provision.engine import converge, locks, record, record_store
from provision.engine.converge import Progress
from provision.errors import OperationError, SpecError
from provision.host.probe import lab_caps
from provision.image import resolve

RUNDIR_ENV = locks.RUNDIR_ENV


@dataclass
class LabResult:
    """What a lab operation did (or, in check mode, would do)."""

    lab: str
    plan: plan.Plan
    changed: bool  # true exactly when the plan was not empty (and, unless check, applied)
    backend: str | None = None  # "vhost-net" | "userspace": the virtio backend the lab uses
    domain_type: str | None = None  # "kvm" | "qemu"
    accel: str = ""  # DesiredLab.accel: how the domains execute (kvm, tcg and its threads)
    agent_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    readback_seconds: float = 0.0  # observing and planning again after applying
    record: dict[str, Any] | None = None  # `up`: what the lab resolved to here (engine.record)

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "changed": self.changed, "backend": self.backend,
                "domain_type": self.domain_type, "accel": self.accel,
                "agent_seconds": self.agent_seconds, "seconds": round(self.seconds, 3),
                "readback_seconds": round(self.readback_seconds, 3), "record": self.record}


# A lab file, a lab already validated by ``spec.parse_lab`` (Ansible passes its `lab` var),
# or an inventory (Ansible's, when the lab spans hosts: it carries their underlay addresses).
LabSource = str | Path | spec.Lab | inventory.Inventory


def lab_inventory(source: LabSource, extra: Sequence[str | Path] = ()) -> inventory.Inventory:
    """The lab and its inventory: a lab file read with ``extra`` inventories (more hosts and
    host variables, as `ansible-playbook -i hosts.yml -i lab.yml`), or what Ansible gave."""
    if isinstance(source, inventory.Inventory):
        return source
    if isinstance(source, spec.Lab):
        return inventory.Inventory(source, None)
    _check_lab_file(source)
    return inventory.load_inventory(source, extra)


def lab_spec(source: LabSource, host: str | None = None) -> spec.Lab:
    """The validated lab; with ``host``, only the VMs placed on that inventory host."""
    return lab_inventory(source).placed(host)


def _check_lab_file(path: str | Path) -> None:
    """An empty lab file name is a SpecError of its own (the reader would name ``.``); the
    reader (``yamlfile.read_bytes``) refuses anything but a regular file."""
    if not str(path).strip():
        raise SpecError("LAB", "the lab file name is empty; name one, e.g. inventory/demo.yml")


def placement_note(lab: spec.Lab, local_names: Iterable[str] | None = None) -> str | None:
    """What `plan` and `up` without ``--host`` say when the lab places VMs on more than one
    host, or on a host that is not this one: they place every VM here all the same."""
    local = set(local_names if local_names is not None else _local_host_names())
    by_host: dict[str, list[str]] = {}
    for vm in lab.vms:
        by_host.setdefault(vm.host, []).append(vm.name)
    if not by_host or (len(by_host) == 1 and next(iter(by_host)) in local):
        return None
    groups = ", ".join(f"{_and(names)} (host {host})" for host, names in by_host.items())
    return (f"placing every VM on this host (--host not given): {groups}; "
            "use --host NAME to place one host's VMs")


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _local_host_names() -> set[str]:
    name = socket.gethostname()
    return {"localhost", name, name.split(".")[0]}


def _notes(path: LabSource, host: str | None, lab: spec.Lab) -> list[str]:
    """Notes for the plan of a lab file read without --host (Ansible places VMs itself)."""
    if host is not None or isinstance(path, spec.Lab):
        return []
    note = placement_note(lab)
    return [note] if note else []


def run_dir() -> Path:
    """Where lab locks live: $VIRTIO_LAB_RUNDIR, else /run/virtio-lab."""
    return locks.run_dir()


def lock_path(name: str) -> Path:
    return run_dir() / f"lab-{name}.lock"


def lab_lock(name: str) -> contextlib.AbstractContextManager[None]:
    """One writer per lab on this host: a second `up` or `down` of the same lab fails fast
    (``locks.file_lock``; the lock file is removed when the operation ends)."""
    return locks.file_lock(
        lock_path(name), f"lab {name}",
        f"lab {name}: another `provision up` or `down` of this lab is running",
    )


def load(path: LabSource, host: str | None = None, extra: Sequence[str | Path] = (),
         fetch: bool = False, progress: Progress | None = None
         ) -> tuple[spec.Lab, desired.DesiredLab]:
    """Validate the lab file and resolve it against this host; touches nothing but the
    image cache, and that only with ``fetch`` (a pinned disk image not fetched yet). With
    ``host``, the host gets its own VMs and the tunnels of every bridge it shares with other
    hosts (their addresses: each host's ``virtio_lab_underlay_ip``)."""
    inv = lab_inventory(path, extra)
    lab = inv.placed(host)
    resolved = resolve.vm_images(lab, fetch, progress)
    want = desired.desired_state(lab, lab_caps(), resolved.images, mtus=guest_mtus(inv.lab))
    want = dataclasses.replace(want, notes=want.notes + tuple(resolved.notes))
    return lab, with_tunnels(want, inv, host)


def with_tunnels(want: desired.DesiredLab, inv: inventory.Inventory, host: str | None
                 ) -> desired.DesiredLab:
    """``want`` plus the tunnel ports ``host`` holds (none without a host), with a note
    for bridges that span hosts none of which has an underlay address."""
    if host is None:
        return want
    underlay = {vm.host: inv.var(vm.host, tunnels.UNDERLAY_VAR) for vm in inv.lab.vms}
    mesh = tunnels.desired_tunnels(inv.lab, host, underlay, inv.lab.tunnels.type)
    notes = tuple(tunnels.untunnelled(inv.lab, host, underlay))
    return dataclasses.replace(want, ports=want.ports + mesh, notes=want.notes + notes)


def plan_lab(path: LabSource, host: str | None = None, extra: Sequence[str | Path] = ()
             ) -> LabResult:
    """The changes `up` would make; nothing on the host changes."""
    t0 = time.monotonic()
    lab, want = load(path, host, extra)
    with converge.open_backends() as b:
        p = plan.plan_changes(want, converge.observe_lab(b, want.lab, want))
    p.notes[:0] = _notes(path, host, lab)
    return LabResult(want.lab, p, not p.in_sync, want.backend, want.domain_type, want.accel,
                     seconds=time.monotonic() - t0)


def up_lab(path: LabSource, progress: Progress | None = None, agent_timeout: float = 300.0,
           on_plan: Any = None, host: str | None = None, extra: Sequence[str | Path] = (),
           expect: dict[str, Any] | None = None, expect_source: str = "the expected record"
           ) -> LabResult:
    """Converge the host to the lab, then read back: observe and plan again, and fail
    naming every object that did not reach the lab's state. An empty plan changes nothing
    and says so.

    With ``host``, the lab's VMs placed elsewhere are left out, so owned ones found here are
    removed (a VM moved to another hypervisor leaves this one).

    The lab's record (``engine.record``) is written once it is up. With ``expect`` (a
    record, read from ``expect_source``), a must-match difference from this host's record is
    a RecordMismatch (exit 4) before any change; other differences become plan notes.
    """
    t0 = time.monotonic()
    # With a record to match, nothing is fetched before it matched (a pinned image's hash
    # is known from the lab file); then the images are fetched and the lab loaded again.
    lab, want = load(path, host, extra, fetch=expect is None, progress=progress)
    notes: list[str] = []
    if expect is not None:
        notes = _check_expected(lab, want, host, expect, expect_source)
        lab, want = load(path, host, extra, fetch=True, progress=progress)
    with lab_lock(want.lab), converge.open_backends() as b:
        rec = record.lab_record(want, lab, record.host_facts(b.conn, b.ovs), host)
        p = plan.plan_changes(want, converge.observe_lab(b, want.lab, want))
        p.notes[:0] = _notes(path, host, lab) + notes
        result = LabResult(want.lab, p, not p.in_sync, want.backend, want.domain_type,
                           want.accel, record=rec)
        if not p.in_sync:
            if on_plan is not None:
                on_plan(p)
            # OVSDB and libvirtd answered above; a dead ovs-vswitchd or virtlogd would only
            # show once half the lab is made: ask them before the first change. (Imported
            # here: a lab in sync asks no daemon more.)
            from provision.host.ready import wait_for_daemons

            wait_for_daemons(5.0, ("ovsdb-server", "ovs-vswitchd", "virtlogd"), b.ovs)
            applied = converge.apply_plan(b, p, progress, agent_timeout=agent_timeout)
            result.agent_seconds = applied.agent_seconds
            t1 = time.monotonic()
            residual = read_back(b, want)
            result.readback_seconds = time.monotonic() - t1
            if not residual.in_sync:
                raise ReadBackError(residual)
        record_store.save_record(rec)
    result.seconds = time.monotonic() - t0
    return result


def _check_expected(lab: spec.Lab, want: desired.DesiredLab, host: str | None,
                    expect: dict[str, Any], source: str) -> list[str]:
    """The notes of a record that matches ``expect``; RecordMismatch (exit 4) otherwise."""
    with converge.open_backends() as b:
        rec = record.lab_record(want, lab, record.host_facts(b.conn, b.ovs), host)
    return record.check_expected(expect, rec, source)


def read_back(b: converge.Backends, want: desired.DesiredLab, settle_s: float = 10.0
              ) -> plan.Plan:
    """Observe and plan again; an empty plan proves the host holds the lab. What does not
    match yet is looked at again for up to ``settle_s`` (a loaded guest's agent may miss one
    call; ovs-vswitchd publishes ofport after a moment), never longer: what is still off then
    is the residual plan."""
    deadline = time.monotonic() + settle_s
    while True:
        residual = plan.plan_changes(want, converge.observe_lab(b, want.lab, want))
        if residual.in_sync or time.monotonic() >= deadline:
            return residual
        time.sleep(0.5)


class ReadBackError(OperationError):
    """``up`` applied its plan, but reading the host back shows objects not in the lab's
    state; the message has one line per object, saying what is wanted and what is there."""

    def __init__(self, residual: plan.Plan) -> None:
        self.residual = residual
        lines = [f"lab {residual.lab}: after up, {len(residual.changes)} object(s) are not "
                 "in the lab's state:"]
        lines += [f"  {c.kind} {c.target}: {_wanted(c)}" for c in residual.changes]
        super().__init__("\n".join(lines))


def _wanted(change: plan.Change) -> str:
    if change.before is None or change.after is None or not isinstance(change.after, dict):
        return f"{change.reason} (wanted {change.after}, found {change.before})"
    parts = [f"{k} is {change.before.get(k)!r}, want {v!r}" for k, v in change.after.items()
             if not isinstance(change.before, dict) or change.before.get(k) != v]
    return f"{change.reason}: {'; '.join(parts)}" if parts else change.reason


def down_lab(path: LabSource, progress: Progress | None = None, check: bool = False,
             on_plan: Any = None) -> LabResult:
    """Remove every object the lab owns (found by ownership tags), and nothing else."""
    t0 = time.monotonic()
    lab = lab_spec(path)
    lock = contextlib.nullcontext() if check else lab_lock(lab.name)
    with lock, converge.open_backends() as b:
        p = plan.plan_teardown(converge.observe_lab(b, lab.name, guests=False))
        if not p.in_sync and not check:
            if on_plan is not None:
                on_plan(p)
            converge.apply_plan(b, p, progress)
        if not check:
            record_store.remove_record(lab.name)
    return LabResult(lab.name, p, not p.in_sync, seconds=time.monotonic() - t0)
