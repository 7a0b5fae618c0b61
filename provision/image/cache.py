"""The guest image cache: where built images live, how a build is read back (``load_image``)
and how a new one is put in place.

Cache layout, under ``default_cache_dir()``::

    tiny -> tiny-<content hash prefix>/     symlink, swapped atomically after a build
    tiny-<content hash prefix>/{kernel,initrd,image.json}

Files are written atomically (temp file + rename) and the ``tiny`` link is swapped the same
way; a build holds an exclusive lock on the cache (``locked``), so concurrent builds serialise.
A build that changes the bytes removes the previous build directory (running guests keep
theirs; defined ones need their domain XML re-rendered, which ``provision up`` does since the
kernel path changed).  An entry whose manifest is missing, unreadable or lacks a key a reader
needs is no build: ``read_manifest`` returns None for it and ``load_image`` says to rebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from provision.errors import HostError, SpecError

IMAGE_NAMES = ("tiny",)
CACHE_ENV = "VIRTIO_LAB_CACHE"
DEFAULT_CACHE_DIR = Path("/var/cache/virtio-lab/images")
MANIFEST = "image.json"
# The keys of image.json a reader needs, every one a non-empty string (the rest informs).
MANIFEST_KEYS = ("input_key", "content_hash", "kernel_version", "kernel", "initrd", "cmdline")


@dataclass(frozen=True)
class GuestImage:
    """A built guest, ready for direct kernel boot."""

    name: str  # the lab file's `image:` value, e.g. "tiny"
    kernel: Path  # <os><kernel>, inside the cache dir, mode 0644
    initrd: Path  # <os><initrd>, inside the cache dir, mode 0644
    cmdline: str  # base of <os><cmdline>; guest_cmdline() appends the vlab.* tokens
    content_hash: str  # sha256 of the kernel bytes followed by the initrd bytes
    kernel_version: str  # e.g. "6.1.0-56-amd64"


def default_cache_dir() -> Path:
    """Where built images live: $VIRTIO_LAB_CACHE, else /var/cache/virtio-lab/images."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else DEFAULT_CACHE_DIR


def load_image(name: str = "tiny", cache_dir: Path | None = None) -> GuestImage:
    """The image `name` as last built; HostError if it was never built, or if its cache
    entry is damaged (``build_image`` treats such an entry as absent and builds again)."""
    check_name(name)
    link = (cache_dir or default_cache_dir()) / name
    if link.parent.exists() and not link.parent.is_dir():
        raise HostError(f"the image cache {link.parent} is not a directory: remove it, or set "
                        f"{CACHE_ENV} to a directory, then run `provision image build`")
    manifest, problem = _check_manifest(link)
    if manifest is None and problem:
        raise HostError(f"guest image {name!r} in {link.parent} is damaged ({problem}): "
                        "run `provision image build --force`")
    if manifest is None:
        raise HostError(
            f"guest image {name!r} is not built in {link.parent}: run `provision image build`"
        )
    return image_from_manifest(name, link, manifest)


def check_name(name: str) -> None:
    if name not in IMAGE_NAMES:
        raise SpecError("image", f"unknown image {name!r}; known: {', '.join(IMAGE_NAMES)}")


def read_manifest(directory: Path) -> dict[str, object] | None:
    """The manifest of a complete, sound build in ``directory``; None for anything else."""
    return _check_manifest(directory)[0]


def _check_manifest(directory: Path) -> tuple[dict[str, object] | None, str]:
    """The manifest of the build in ``directory``, or None and what is wrong with the entry
    ("" when there is no entry at all). Every key a reader needs must be there with the
    right type: a cache entry a crash, a full disk or a hand edit damaged is not a build."""
    file = directory / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except FileNotFoundError:
        if directory.is_symlink() and not directory.exists():
            return None, f"{directory} points to {os.readlink(directory)}, which is missing"
        return None, f"{file} is missing" if directory.exists() else ""
    except OSError as exc:
        return None, f"{file} cannot be read: {exc.strerror}"
    except ValueError:
        return None, f"{file} is not JSON"
    if not isinstance(manifest, dict):
        return None, f"{file} is not a JSON object"
    for key in MANIFEST_KEYS:
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            return None, f"{file}: {key} is missing or not a string"
    if not re.fullmatch(r"[0-9a-f]{64}", manifest["content_hash"]):
        return None, f"{file}: content_hash is not a sha256"
    for key in ("kernel", "initrd"):
        file_name = manifest[key]
        if file_name in (".", "..") or "/" in file_name or "\0" in file_name:
            return None, f"{file}: {key} must name a file of {directory}, not {file_name!r}"
        if not (directory / file_name).is_file():
            return None, f"{directory / file_name} is missing"
    return manifest, ""


def image_from_manifest(name: str, link: Path, manifest: dict[str, object]) -> GuestImage:
    directory = link.resolve()
    return GuestImage(
        name=name,
        kernel=directory / str(manifest["kernel"]),
        initrd=directory / str(manifest["initrd"]),
        cmdline=str(manifest["cmdline"]),
        content_hash=str(manifest["content_hash"]),
        kernel_version=str(manifest["kernel_version"]),
    )


def make_cache_dir(cache: Path) -> None:
    """The cache directory, made if missing; HostError naming it when it cannot be."""
    try:
        _make_dir(cache)
    except OSError as exc:
        raise HostError(f"cannot create the image cache {cache}: {exc.strerror}; "
                        f"set {CACHE_ENV} to a directory you can write") from None
    if not cache.is_dir():
        raise HostError(f"the image cache {cache} is not a directory: remove it, "
                        f"or set {CACHE_ENV} to a directory")


def _make_dir(path: Path) -> None:
    """Create `path` and missing parents 0755 (libvirt's QEMU may run as libvirt-qemu)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o755, exist_ok=True)
        directory.chmod(0o755)


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """Hold an exclusive flock on the cache while building, so concurrent builds serialise."""
    fd = os.open(cache / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write(path: Path, data: bytes) -> None:
    """Write atomically (temp file + rename), mode 0644."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    temp.chmod(0o644)
    temp.replace(path)


def point(link: Path, target: str) -> None:
    if link.is_dir() and not link.is_symlink():  # a damaged entry: the link is ours to make
        shutil.rmtree(link)
    temp = link.with_name(f".{link.name}.link")
    temp.unlink(missing_ok=True)
    temp.symlink_to(target)
    temp.replace(link)


def prune(cache: Path, name: str, keep: str) -> None:
    for old in cache.glob(f"{name}-*"):
        if old.name != keep and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
    for stale in cache.glob(f".{name}-build-*"):
        shutil.rmtree(stale, ignore_errors=True)


@dataclass(frozen=True)
class DiskImage:
    """A disk image booted by its own bootloader; VMs boot from qcow2 overlays onto it."""

    name: str  # the lab file's image name, e.g. "debian"; "sha256:<hex>" for a path/URL image
    path: Path  # the base file in the image cache (never written by a lab)
    format: str  # "qcow2" | "raw"
    content_hash: str  # sha256 of the file's bytes
    virtual_size: int  # bytes the guest sees
