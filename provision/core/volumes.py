"""The plan for a lab's storage: its pool, and each disk VM's overlay and seed. Pure.

An overlay is made afresh (and its VM restarted) when it backs onto another base than the
lab's image (the image changed), when its domain is new, and when the VM's seed changed: a
new seed is a new instance, never a guest that half remembers the last one.
"""

from __future__ import annotations

from provision.core.changes import Change, ConflictError, Plan
from provision.core.desired import DesiredDomain, DesiredLab
from provision.core.disks import DesiredVolume
from provision.core.observed import ObservedLab
from provision.core.owner import owned_by

SEED_HASH = "seed-hash"  # the domain metadata key that records which seed a domain booted


def check_conflicts(desired: DesiredLab, observed: ObservedLab) -> None:
    pool = desired.pool
    seen = observed.pools.get(pool.name) if pool else None
    if pool and seen is not None and not owned_by(seen.owner, desired.lab):
        raise ConflictError(
            f"storage pool {pool.name}: exists and lab {desired.lab} does not own it; "
            "undefine or rename it, or rename the lab (virtio-lab never touches what it does "
            "not own)"
        )


def plan_storage(desired: DesiredLab, observed: ObservedLab, plan: Plan) -> set[str]:
    """Pool and volume changes; returns the VMs whose volumes are (re)made."""
    if desired.pool is not None:
        seen = observed.pools.get(desired.pool.name)
        if seen is None or not seen.active:
            plan.changes.append(Change(
                "volumes", "create", "pool", desired.pool.name,
                None if seen is None else {"active": False},
                {"path": desired.pool.path, "active": True},
                "absent" if seen is None else "not active", desired.pool))
    remade: set[str] = set()
    by_vm = _by_vm(desired)
    for vol in desired.volumes:
        why = _why_remake(by_vm, observed, vol)
        if why is None:
            continue
        seen_vol = observed.volumes.get(vol.name)
        before = None if seen_vol is None else _view(seen_vol.backing, seen_vol.content_hash)
        plan.changes.append(Change(
            "volumes", "create" if seen_vol is None else "replace", "volume", vol.name,
            before, _view(vol.backing, vol.content_hash), why, vol))
        remade.add(vol.vm)
    return remade


def _view(backing: str | None, content_hash: str | None) -> dict[str, str]:
    return {"backing": backing} if backing else {"sha256": content_hash or ""}


# A VM's domain and its seed volume, looked up by VM name.
_ByVm = tuple[dict[str, DesiredDomain], dict[str, DesiredVolume]]


def _by_vm(desired: DesiredLab) -> _ByVm:
    """Each VM's domain and seed, found once per plan (the first of each, as a scan would):
    a scan per volume grows with volumes times domains."""
    domains: dict[str, DesiredDomain] = {}
    seeds: dict[str, DesiredVolume] = {}
    for dom in desired.domains:
        domains.setdefault(dom.vm, dom)
    for vol in desired.volumes:
        if vol.kind == "seed":
            seeds.setdefault(vol.vm, vol)
    return domains, seeds


def _why_remake(by_vm: _ByVm, observed: ObservedLab, vol: DesiredVolume) -> str | None:
    seen = observed.volumes.get(vol.name)
    if seen is None:
        return "absent"
    if vol.kind == "seed":
        return None if seen.content_hash == vol.content_hash else "the seed's content differs"
    if seen.backing != vol.backing:
        return f"backs onto {seen.backing}, not the lab's image {vol.backing}"
    domains, seeds = by_vm
    dom = domains.get(vol.vm)
    have = observed.domains.get(dom.name) if dom else None
    if have is None:
        return "its domain is new: a new VM starts from the image"
    seed = seeds.get(vol.vm)
    booted = (have.facts.get("owner") or {}).get(SEED_HASH)
    if seed is not None and booted != seed.content_hash:
        return "the VM's seed changed: a new instance starts from the image"
    return None


def plan_orphans(desired: DesiredLab, observed: ObservedLab, plan: Plan, reason: str) -> None:
    """Owned volumes and pools the lab no longer wants."""
    want = {v.name for v in desired.volumes}
    want_pool = desired.pool.name if desired.pool else None
    for name, vol in sorted(observed.volumes.items()):
        pool = observed.pools.get(vol.pool)
        if name not in want and pool is not None and owned_by(pool.owner, desired.lab):
            before = {"pool": vol.pool} | _view(vol.backing, vol.content_hash)
            plan.changes.append(Change("volumes-remove", "delete", "volume", name, before,
                                       None, reason))
    for name, pool in sorted(observed.pools.items()):
        if name != want_pool and owned_by(pool.owner, desired.lab):
            plan.changes.append(Change("volumes-remove", "delete", "pool", name,
                                       {"path": pool.path}, None, reason))
