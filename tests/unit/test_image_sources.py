"""Disk images by path and URL into the image cache: checked by sha256 before use, fetched
once, refused with the key named (real files, qemu-img and a local HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.core.imagespec import DiskImageSpec
from provision.errors import HostError, SpecError
from provision.image import sources

KEY = "lab.vms[0].image"


def _qcow2(path: Path, size: str = "64M", backing: Path | None = None) -> str:
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        cmd += ["-b", str(backing), "-F", "qcow2"]
    subprocess.run([*cmd, str(path), size], check=True)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on loopback serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(www), **kw)  # type: ignore[arg-type]

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_path_image_is_copied_once_and_read_back_without_its_source(
    tmp_path: Path, cache: Path
) -> None:
    src = tmp_path / "base.qcow2"
    digest = _qcow2(src)
    spec = DiskImageSpec(path=str(src), sha256=digest)
    assert sources.cached_disk(spec, cache) is None
    seen: list[int] = []
    disk = sources.fetch_disk(spec, KEY, lambda done, _total: seen.append(done), cache)
    assert disk.path.parent == cache / "disks" / digest and disk.path.name == "disk.qcow2"
    assert disk.virtual_size == 64 << 20 and disk.content_hash == digest
    assert disk.name == f"sha256:{digest}" and seen[-1] == src.stat().st_size
    assert hashlib.sha256(disk.path.read_bytes()).hexdigest() == digest
    assert disk.path.stat().st_mode & 0o777 == 0o444
    src.unlink()  # the cache entry stands on its own
    assert sources.fetch_disk(spec, KEY, cache_dir=cache) == disk


def test_a_wrong_hash_names_the_key_and_leaves_no_entry(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "base.qcow2"
    digest = _qcow2(src)
    wrong = "0" * 64
    with pytest.raises(SpecError) as exc:
        sources.fetch_disk(DiskImageSpec(path=str(src), sha256=wrong), KEY, cache_dir=cache)
    assert exc.value.path == f"{KEY}.sha256" and digest in str(exc.value)
    assert [p.name for p in (cache / "disks").iterdir()] == []


@pytest.mark.parametrize("make, key, words", [
    (lambda p: None, "path", "does not exist"),
    (lambda p: p.mkdir(), "path", "is not a regular file"),
    (lambda p: p.write_bytes(b"not an image at all" * 100), "format", "is not a qcow2 image"),
])
def test_what_cannot_be_an_image_is_refused(tmp_path: Path, cache: Path, make, key: str,
                                            words: str) -> None:
    src = tmp_path / "img"
    make(src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest() if src.is_file() else "a" * 64
    with pytest.raises(SpecError, match=words) as exc:
        sources.fetch_disk(DiskImageSpec(path=str(src), sha256=digest), KEY, cache_dir=cache)
    assert exc.value.path == f"{KEY}.{key}"
    assert not (cache / "disks").exists() or not any((cache / "disks").iterdir())


def test_a_qcow2_with_its_own_backing_file_is_refused(tmp_path: Path, cache: Path) -> None:
    _qcow2(tmp_path / "under.qcow2")
    digest = _qcow2(tmp_path / "top.qcow2", backing=tmp_path / "under.qcow2")
    spec = DiskImageSpec(path=str(tmp_path / "top.qcow2"), sha256=digest)
    with pytest.raises(SpecError, match="backing file of its own"):
        sources.fetch_disk(spec, KEY, cache_dir=cache)


def test_a_raw_image_takes_its_size_from_the_file(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "disk.img"
    src.write_bytes(b"\0" * (3 << 20))
    spec = DiskImageSpec(path=str(src), sha256=hashlib.sha256(src.read_bytes()).hexdigest(),
                         format="raw")
    disk = sources.fetch_disk(spec, KEY, cache_dir=cache)
    assert disk.format == "raw" and disk.virtual_size == 3 << 20
    assert disk.path.name == "disk.raw"


def test_a_url_image_is_downloaded_once(tmp_path: Path, cache: Path, served: str) -> None:
    digest = _qcow2(tmp_path / "www" / "cloud.qcow2")
    spec = DiskImageSpec(url=f"{served}/cloud.qcow2", sha256=digest)
    totals: list[int | None] = []
    disk = sources.fetch_disk(spec, KEY, lambda _d, total: totals.append(total), cache)
    assert disk.content_hash == digest and totals[-1] == disk.path.stat().st_size
    (tmp_path / "www" / "cloud.qcow2").unlink()  # a second lab run needs no server
    assert sources.fetch_disk(spec, KEY, cache_dir=cache) == disk


def test_a_url_that_fails_is_a_host_error_naming_it(cache: Path, served: str) -> None:
    spec = DiskImageSpec(url=f"{served}/missing.qcow2", sha256="a" * 64)
    with pytest.raises(HostError, match=r"lab.vms\[0\].image.url: .*404"):
        sources.fetch_disk(spec, KEY, cache_dir=cache)
    spec = DiskImageSpec(url="http://127.0.0.1:9/x.qcow2", sha256="a" * 64)
    with pytest.raises(HostError, match="cannot fetch"):
        sources.fetch_disk(spec, KEY, cache_dir=cache)


def test_a_planned_disk_names_where_the_fetch_will_put_it(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "base.qcow2"
    spec = DiskImageSpec(path=str(src), sha256=_qcow2(src))
    planned = sources.planned_disk(spec, cache)
    assert sources.fetch_disk(spec, KEY, cache_dir=cache).path == planned.path
