"""Disk images a lab brings (``image: {path|url, sha256}``): copied or downloaded into the
image cache once, checked against their sha256 before anything uses them, and read back
from there afterwards without hashing again.

Cache layout, under ``cache.default_cache_dir()``::

    disks/<sha256>/disk.<format>    mode 0444: the base every overlay of a lab backs onto
    disks/<sha256>/image.json       its format, virtual size and where it came from

An entry is complete only once its directory is renamed into place, so an interrupted fetch
leaves no entry, only a ``.fetch-*`` directory the next fetch removes. The user's own file
is read once and never used by a VM: libvirt relabels (chowns) the backing files of a
running domain, and a file that changes under a lab would change what the lab runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from provision.core.imagespec import DiskImageSpec
from provision.errors import HostError, SpecError
from provision.image.cache import DiskImage, default_cache_dir, locked, make_cache_dir

DISKS = "disks"
CHUNK = 1 << 20
URL_TIMEOUT_S = 60.0  # per read; a stalled server is a HostError, not a hang

OnBytes = Callable[[int, int | None], None]  # (bytes so far, total when known)


def entry_dir(sha256: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / DISKS / sha256


def cached_disk(spec: DiskImageSpec, cache_dir: Path | None = None) -> DiskImage | None:
    """The image as fetched before, or None; never reads the source."""
    entry = entry_dir(spec.sha256, cache_dir)
    try:
        manifest = json.loads((entry / "image.json").read_text())
        disk = entry / f"disk.{manifest['format']}"
        size = int(manifest["virtual_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if manifest["format"] != spec.format or not disk.is_file():
        return None
    return DiskImage(spec.name, disk, spec.format, spec.sha256, size)


def planned_disk(spec: DiskImageSpec, cache_dir: Path | None = None) -> DiskImage:
    """Where the image will be once fetched, for a plan that fetches nothing."""
    entry = entry_dir(spec.sha256, cache_dir)
    return DiskImage(spec.name, entry / f"disk.{spec.format}", spec.format, spec.sha256, 0)


def fetch_disk(spec: DiskImageSpec, key: str, on_bytes: OnBytes | None = None,
               cache_dir: Path | None = None) -> DiskImage:
    """The image in the cache, fetched and checked first if it is not there. ``key`` is the
    lab file's key path of the image, for errors: a wrong hash, a missing file or a file
    that is not of ``format`` is a SpecError naming it, and the cache keeps nothing."""
    cache = cache_dir or default_cache_dir()
    if (found := cached_disk(spec, cache)) is not None:
        return found
    make_cache_dir(cache / DISKS)
    with locked(cache):
        if (found := cached_disk(spec, cache)) is not None:  # another run fetched it
            return found
        for stale in (cache / DISKS).glob(f".fetch-{spec.sha256}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".fetch-{spec.sha256}-", dir=cache / DISKS))
        try:
            _fetch_into(spec, key, work, on_bytes)
            os.chmod(work, 0o755)
            work.rename(entry_dir(spec.sha256, cache))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    found = cached_disk(spec, cache)
    if found is None:
        raise HostError(f"the image of {key} vanished from the cache {cache} after fetching")
    return found


def _fetch_into(spec: DiskImageSpec, key: str, work: Path, on_bytes: OnBytes | None) -> None:
    disk = work / f"disk.{spec.format}"
    with _open_source(spec, key) as (src, total), open(disk, "wb") as out:
        digest = _copy(src, out, total, on_bytes)
    if digest != spec.sha256:
        raise SpecError(f"{key}.sha256", f"{spec.source} has sha256 {digest}, not the "
                        f"{spec.sha256} the lab file pins: fix the hash, or the file")
    size = _virtual_size(disk, spec, key)
    disk.chmod(0o444)
    manifest = {"format": spec.format, "virtual_size": size, "sha256": spec.sha256,
                "source": spec.source}
    (work / "image.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _open_source(spec: DiskImageSpec, key: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """The source as a binary stream and its length when known."""
    if spec.path is not None:
        with _open_file(spec.path, f"{key}.path") as fh:
            yield fh, os.fstat(fh.fileno()).st_size
        return
    # Here, not at the top: urllib.request loads http.client and ssl (~8 ms), which every
    # `plan` and `up` would pay for the images they find in the cache.
    import urllib.error
    import urllib.request

    url = spec.url or ""
    try:
        resp = urllib.request.urlopen(url, timeout=URL_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise HostError(f"{key}.url: {url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise HostError(f"{key}.url: cannot fetch {url}: {reason}") from None
    with resp:
        length = resp.headers.get("Content-Length")
        yield resp, int(length) if length and length.isdigit() else None


def _open_file(path: str, key: str) -> IO[bytes]:
    """A regular file, opened for reading; a FIFO or device is refused before it is opened
    (opening a FIFO would wait for a writer), and checked again once open."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise SpecError(key, f"{path} is not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SpecError(key, f"{path} does not exist") from None
    except OSError as exc:
        raise SpecError(key, f"{path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SpecError(key, f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def _copy(src: IO[bytes], out: IO[bytes], total: int | None, on_bytes: OnBytes | None) -> str:
    digest = hashlib.sha256()
    done = 0
    while True:
        try:
            chunk = src.read(CHUNK)
        except OSError as exc:
            raise HostError(f"reading the image failed after {done} bytes: {exc}") from None
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)
        out.write(chunk)
        done += len(chunk)
        if on_bytes is not None:
            on_bytes(done, total)


def _virtual_size(disk: Path, spec: DiskImageSpec, key: str) -> int:
    """The disk's size as the guest sees it, read with ``qemu-img info -f FORMAT``; a qcow2
    with a backing file of its own is refused (it could name any file of the host)."""
    try:
        out = subprocess.run(
            ["qemu-img", "info", "--output=json", "-f", spec.format, str(disk)],
            capture_output=True, text=True, timeout=60, check=False,
        )
    except FileNotFoundError:
        raise HostError("qemu-img is missing: run `provision host prepare`") from None
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or ["qemu-img failed"])[-1]
        raise SpecError(f"{key}.format", f"{spec.source} is not a {spec.format} image "
                        f"({why}); fix format, or the file")
    info = json.loads(out.stdout)
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise SpecError(key, f"{spec.source} has a backing file of its own "
                        f"({info.get('backing-filename')}); flatten it with "
                        "`qemu-img convert -O qcow2 IN OUT` and pin the result")
    return int(info["virtual-size"])
