"""What each VM of a lab boots, found in the image cache: tiny's kernel and initrd, a disk
image virtio-lab built (``debian``), or a disk image the lab pins by sha256, fetched into
the cache once (``sources``). ``fetch=False`` (plan, verify) fetches nothing and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provision.core.imagespec import DiskImageSpec
from provision.core.spec import Lab
from provision.image import cache, sources
from provision.image.cache import DiskImage, GuestImage


@dataclass
class Resolved:
    images: dict[str, GuestImage | DiskImage] = field(default_factory=dict)  # by VM name
    notes: list[str] = field(default_factory=list)


def vm_images(lab: Lab, fetch: bool, progress: Any = None) -> Resolved:
    """The image of every VM of ``lab``; each image is looked up once however many VMs
    share it. HostError when a built image is missing; SpecError (naming the VM's image
    key) when a pinned image's file or hash is wrong."""
    out = Resolved()
    found: dict[Any, GuestImage | DiskImage] = {}
    for index, vm in enumerate(lab.vms):
        ref = vm.image
        if ref not in found:
            found[ref] = _resolve(ref, f"lab.vms[{index}].image", fetch, progress, out.notes)
        out.images[vm.name] = found[ref]
    return out


def _resolve(ref: Any, key: str, fetch: bool, progress: Any, notes: list[str]
             ) -> GuestImage | DiskImage:
    if ref == "tiny":
        return cache.load_image("tiny")
    if isinstance(ref, str):
        return cache.load_disk_image(ref)
    assert isinstance(ref, DiskImageSpec)
    if not fetch:
        have = sources.cached_disk(ref)
        if have is None:
            notes.append(f"{key}: {ref.source} is not in the image cache yet; "
                         "`provision up` fetches it and checks its sha256")
        return have or sources.planned_disk(ref)
    return sources.fetch_disk(ref, key, _bytes_progress(progress, ref.source))


def _bytes_progress(progress: Any, source: str) -> sources.OnBytes | None:
    """Progress in MiB for a fetch (a task appears once the first MiB arrived)."""
    if progress is None:
        return None
    state: dict[str, Any] = {"task": None, "mib": 0}

    def on_bytes(done: int, total: int | None) -> None:
        mib = done >> 20
        if state["task"] is None:
            name = source.rsplit("/", 1)[-1]
            state["task"] = progress.task(f"fetching {name} (MiB)", (total or 0) >> 20)
        if mib > state["mib"]:
            progress.advance(state["task"], "", mib - state["mib"])
            state["mib"] = mib

    return on_bytes
