"""The guest image cache: where built images live, how a build is read back (``load_image``
for tiny's kernel and initramfs, ``load_disk_image`` for a disk image such as debian) and how
a new one is put in place.

Cache layout, under ``default_cache_dir()``::

    tiny -> tiny-<content hash prefix>/     symlink, swapped atomically after a build
    tiny-<content hash prefix>/{kernel,initrd,image.json}
    debian -> debian-<content hash prefix>/
    debian-<content hash prefix>/{disk.qcow2,image.json}    kind "disk"
    debs/                                   the .deb files of the last debian build
    debian.log                              mmdebstrap's output of the last debian build

Files are written atomically (temp file + rename) and the links are swapped the same
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

# What each image virtio-lab builds is: "kernel" (direct kernel boot) or "disk" (a disk
# booted by its own bootloader).
IMAGE_KINDS = {"tiny": "kernel", "debian": "disk"}
IMAGE_NAMES = tuple(IMAGE_KINDS)
CACHE_ENV = "VIRTIO_LAB_CACHE"
DEFAULT_CACHE_DIR = Path("/var/cache/virtio-lab/images")
MANIFEST = "image.json"
# The keys of image.json a reader needs, every one a non-empty string (the rest informs).
MANIFEST_KEYS = ("input_key", "content_hash", "kernel_version", "kernel", "initrd", "cmdline")
# The same for a disk image (kind "disk"); virtual_size is a positive integer besides.
DISK_MANIFEST_KEYS = ("input_key", "content_hash", "format", "disk")
DISK_FORMATS = ("qcow2", "raw")


@dataclass(frozen=True)
class GuestImage:
    """A built guest, ready for direct kernel boot."""

    name: str  # the lab file's `image:` value, e.g. "tiny"
    kernel: Path  # <os><kernel>, inside the cache dir, mode 0644
    initrd: Path  # <os><initrd>, inside the cache dir, mode 0644
    cmdline: str  # base of <os><cmdline>; guest_cmdline() appends the vlab.* tokens
    content_hash: str  # sha256 of the kernel bytes followed by the initrd bytes
    kernel_version: str  # e.g. "6.1.0-56-amd64"


@dataclass(frozen=True)
class DiskImage:
    """A disk image booted by its own bootloader; VMs boot from qcow2 overlays onto it."""

    name: str  # the lab file's image name, e.g. "debian"; "sha256:<hex>" for a path/URL image
    path: Path  # the base file in the image cache (never written by a lab)
    format: str  # "qcow2" | "raw"
    content_hash: str  # sha256 of the file's bytes
    virtual_size: int  # bytes the guest sees


def default_cache_dir() -> Path:
    """Where built images live: $VIRTIO_LAB_CACHE, else /var/cache/virtio-lab/images."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else DEFAULT_CACHE_DIR


def load_image(name: str = "tiny", cache_dir: Path | None = None) -> GuestImage:
    """The image `name` as last built; HostError if it was never built, or if its cache
    entry is damaged (``build_image`` treats such an entry as absent and builds again)."""
    link, manifest = _load_manifest(name, "kernel", cache_dir)
    return image_from_manifest(name, link, manifest)


def load_disk_image(name: str, cache_dir: Path | None = None) -> DiskImage:
    """The disk image `name` (e.g. "debian") as last built; HostError naming
    `provision image build NAME` if it was never built or its cache entry is damaged."""
    link, manifest = _load_manifest(name, "disk", cache_dir)
    return disk_from_manifest(name, link, manifest)


def _load_manifest(name: str, kind: str, cache_dir: Path | None) -> tuple[Path, dict[str, object]]:
    check_name(name, kind)
    link = (cache_dir or default_cache_dir()) / name
    build = build_command(name)
    if link.parent.exists() and not link.parent.is_dir():
        raise HostError(f"the image cache {link.parent} is not a directory: remove it, or set "
                        f"{CACHE_ENV} to a directory, then run `{build}`")
    manifest, problem = _check_manifest(link)
    if manifest is not None and manifest.get("kind", "kernel") != kind:
        manifest, problem = None, f"{link / MANIFEST} is not of a {kind} image"
    if manifest is None and problem:
        raise HostError(f"guest image {name!r} in {link.parent} is damaged ({problem}): "
                        f"run `{build} --force`")
    if manifest is None:
        raise HostError(f"guest image {name!r} is not built in {link.parent}: run `{build}`")
    return link, manifest


def build_command(name: str) -> str:
    """The command that builds image `name` (tiny is the default of `provision image build`)."""
    return "provision image build" if name == "tiny" else f"provision image build {name}"


def check_name(name: str, kind: str | None = None) -> None:
    """SpecError unless `name` is an image virtio-lab builds (and of `kind`, when given)."""
    if name not in IMAGE_KINDS:
        raise SpecError("image", f"unknown image {name!r}; known: {', '.join(IMAGE_NAMES)}")
    if kind is not None and IMAGE_KINDS[name] != kind:
        same = [n for n, k in IMAGE_KINDS.items() if k == kind]
        raise SpecError("image", f"image {name!r} is a {IMAGE_KINDS[name]} image, not a "
                        f"{kind} image ({', '.join(same)})")


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
    kind = manifest.get("kind", "kernel")  # tiny's manifests before disk images had no kind
    if kind not in ("kernel", "disk"):
        return None, f"{file}: kind {kind!r} is neither kernel nor disk"
    keys, files = (MANIFEST_KEYS, ("kernel", "initrd")) if kind == "kernel" else (
        DISK_MANIFEST_KEYS, ("disk",))
    for key in keys:
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            return None, f"{file}: {key} is missing or not a string"
    if not re.fullmatch(r"[0-9a-f]{64}", manifest["content_hash"]):
        return None, f"{file}: content_hash is not a sha256"
    if kind == "disk" and (problem := _disk_problem(manifest)):
        return None, f"{file}: {problem}"
    for key in files:
        file_name = manifest[key]
        if file_name in (".", "..") or "/" in file_name or "\0" in file_name:
            return None, f"{file}: {key} must name a file of {directory}, not {file_name!r}"
        if not (directory / file_name).is_file():
            return None, f"{directory / file_name} is missing"
    return manifest, ""


def _disk_problem(manifest: dict[str, object]) -> str:
    """What is wrong with the disk-only keys of a manifest; "" if nothing."""
    if manifest["format"] not in DISK_FORMATS:
        return f"format {manifest['format']!r} is not one of {', '.join(DISK_FORMATS)}"
    size = manifest.get("virtual_size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        return "virtual_size is missing or not a positive number of bytes"
    return ""


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


def disk_from_manifest(name: str, link: Path, manifest: dict[str, object]) -> DiskImage:
    size = manifest["virtual_size"]
    assert isinstance(size, int)  # checked by _check_manifest
    return DiskImage(
        name=name,
        path=link.resolve() / str(manifest["disk"]),
        format=str(manifest["format"]),
        content_hash=str(manifest["content_hash"]),
        virtual_size=size,
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


def publish(staging: Path, final: Path) -> None:
    """Put a finished staging directory in ``final``'s place (world-readable: QEMU runs as
    another user), replacing what was there."""
    staging.chmod(0o755)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)


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

