"""What a VM that boots a disk image needs besides its domain: a qcow2 overlay onto the
base image and a cloud-init NoCloud seed made from the lab, both volumes of the lab's pool.
Pure: the seed's bytes are computed here, nothing is written.

A changed seed is a new instance: the overlay is made afresh with it (``plan``), so what a
VM runs is always the base image plus the lab's seed, never leftovers of an earlier lab.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from provision.core.imagespec import CloudInitSpec
from provision.core.owner import Owner, pool_name
from provision.core.spec import Lab, VmSpec
from provision.errors import SpecError
from provision.host.statedir import state_dir
from provision.image.cache import DiskImage
from provision.image.seed import SeedNic, seed_iso, seed_spec

if TYPE_CHECKING:
    from provision.core.desired import GuestNic

POOLS_ENV = "VIRTIO_LAB_POOLS"


def pools_root() -> Path:
    """Where lab pools live: $VIRTIO_LAB_POOLS, else /var/lib/virtio-lab/pools (a namespace
    hypervisor's own, inside one: ``host.statedir``). A lab's pool
    directory is ``<root>/<lab>/volumes``; ``<root>/<lab>/owner.json`` says whose it is."""
    override = os.environ.get(POOLS_ENV)
    return Path(override) if override else state_dir("pools")


def pool_path(lab: str) -> str:
    return str(pools_root() / lab / "volumes")


@dataclass(frozen=True)
class DesiredPool:
    """The libvirt storage pool (type dir) that holds a lab's overlays and seeds. Pools
    carry no metadata: ownership is a file beside the pool's directory (``storage``)."""

    name: str  # libvirt pool name, virtio-lab-<lab>
    path: str  # <target><path>
    owner: Owner


@dataclass(frozen=True)
class DesiredVolume:
    """A volume of the lab's pool: a VM's qcow2 overlay onto its base image, or its
    cloud-init seed."""

    name: str  # <vm>.qcow2 | <vm>-seed.iso
    pool: str  # the lab's pool
    vm: str
    kind: str  # "overlay" | "seed"
    backing: str | None = None  # overlay: the base image file (in the image cache)
    backing_format: str | None = None  # overlay: qcow2 | raw
    capacity: int = 0  # overlay: bytes the guest sees (the base's virtual size)
    content_hash: str | None = None  # seed: sha256 of its bytes
    content: bytes = field(default=b"", compare=False, repr=False)  # seed: the ISO




@dataclass(frozen=True)
class VmDisks:
    """A disk VM's two volumes, and what its domain XML names."""

    overlay: DesiredVolume
    seed: DesiredVolume

    def context(self, lab: str) -> dict[str, str]:
        """The template's ``disk`` variable."""
        return {"pool": pool_name(lab), "overlay": self.overlay.name, "seed": self.seed.name,
                "seed_hash": self.seed.content_hash or ""}


def lab_pool(lab: str) -> DesiredPool:
    return DesiredPool(pool_name(lab), pool_path(lab), Owner(lab))


def vm_disks(lab: Lab, vm: VmSpec, image: DiskImage, nics: tuple[GuestNic, ...],
             mtus: Mapping[str, int | None]) -> VmDisks:
    """The overlay onto ``image`` and the seed that configures ``nics`` (``mtus``: the guest
    MTU per NIC, by MAC, when the lab sets one)."""
    extras = (lab.cloud_init or CloudInitSpec()).merged(vm.cloud_init)
    where = f"lab.vms[{lab.vms.index(vm)}]"
    seed_nics = tuple(
        SeedNic(n.mac, n.ip, n.queues, mtus.get(n.mac), tuple((v.vid, v.ip) for v in n.vlans))
        for n in nics
    )
    try:
        spec = seed_spec(vm.name, seed_nics, extras.ssh_authorized_keys,
                         extras.user_data or None, user_data_path=f"{where}.cloud_init.user_data")
        iso = seed_iso(spec, user_data_path=f"{where}.cloud_init.user_data")
    except SpecError as exc:  # a path below the VM (nics[0].ip) gets the VM's prefix
        if exc.path.startswith("lab."):
            raise
        raise SpecError(f"{where}.{exc.path}" if exc.path else where,
                        str(exc).removeprefix(f"{exc.path}: ")) from None
    pool = pool_name(lab.name)
    seed = DesiredVolume(f"{vm.name}-seed.iso", pool, vm.name, "seed",
                         content_hash=hashlib.sha256(iso).hexdigest(), content=iso)
    overlay = DesiredVolume(f"{vm.name}.qcow2", pool, vm.name, "overlay",
                            backing=str(image.path),
                            backing_format=image.format, capacity=image.virtual_size)
    return VmDisks(overlay, seed)
