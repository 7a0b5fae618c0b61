"""The guest image cache: an entry a crash, a full disk or a hand edit damaged is no build.
`load_image` and `load_disk_image` say to rebuild (exit 4), and the builders treat the entry
as absent. A kernel image is no disk image and the other way round."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provision.errors import HostError, SpecError
from provision.image.cache import MANIFEST, load_disk_image, load_image, read_manifest

GOOD: dict[str, Any] = {
    "name": "tiny",
    "input_key": "1" * 64,
    "content_hash": "ab" * 32,
    "kernel_version": "6.1.0-test-amd64",
    "kernel": "kernel",
    "initrd": "initrd",
    "cmdline": "console=ttyS0 quiet",
    "builder_version": 1,
}


def entry(cache: Path, manifest: Any = None, raw: bytes | None = None) -> Path:
    """A cache laid out as build_image leaves it: tiny -> tiny-<hash>/{kernel,initrd,image.json}."""
    build = cache / "tiny-abababababababab"
    build.mkdir(parents=True)
    (build / "kernel").write_bytes(b"k")
    (build / "initrd").write_bytes(b"i")
    text = json.dumps(GOOD if manifest is None else manifest).encode()
    (build / MANIFEST).write_bytes(text if raw is None else raw)
    (cache / "tiny").symlink_to(build.name)
    return build


def test_a_sound_entry_loads(tmp_path: Path) -> None:
    build = entry(tmp_path)
    img = load_image("tiny", tmp_path)
    assert img.kernel == build / "kernel" and img.initrd == build / "initrd"
    assert img.cmdline == GOOD["cmdline"] and img.content_hash == GOOD["content_hash"]


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != key}


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


DAMAGED: list[tuple[str, Callable[[Path], None]]] = [
    *((f"no {key}", lambda c, key=key: entry(c, without(key)))
      for key in ("input_key", "content_hash", "kernel_version", "kernel", "initrd", "cmdline")),
    ("not JSON", lambda c: entry(c, raw=b'{"kernel": ')),
    ("empty file", lambda c: entry(c, raw=b"")),
    ("not UTF-8", lambda c: entry(c, raw=b"\xff\xfe")),
    ("a list", lambda c: entry(c, [GOOD])),
    ("cmdline a number", lambda c: entry(c, with_(cmdline=5))),
    ("kernel_version null", lambda c: entry(c, with_(kernel_version=None))),
    ("content_hash not a sha256", lambda c: entry(c, with_(content_hash="xyz"))),
    ("kernel outside the entry", lambda c: entry(c, with_(kernel="/etc/passwd"))),
    ("initrd up a level", lambda c: entry(c, with_(initrd=".."))),
    ("kernel file gone", lambda c: (entry(c) / "kernel").unlink()),
    ("manifest gone", lambda c: (entry(c) / MANIFEST).unlink()),
    ("dangling link", lambda c: (c / "tiny").symlink_to("tiny-gone")),
    ("tiny a file", lambda c: (c / "tiny").write_text("{}")),
]


@pytest.mark.parametrize("damage", [d for _, d in DAMAGED], ids=[n for n, _ in DAMAGED])
def test_a_damaged_entry_is_no_build(tmp_path: Path, damage: Callable[[Path], None]) -> None:
    damage(tmp_path)
    assert read_manifest(tmp_path / "tiny") is None  # build_image builds it again
    with pytest.raises(HostError, match=r"is damaged \(.*\): run `provision image build --force`"
                       ) as exc:
        load_image("tiny", tmp_path)
    assert exc.value.exit_code == 4 and str(tmp_path) in str(exc.value)


def test_no_entry_says_build(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"is not built in .*: run `provision image build`$"):
        load_image("tiny", tmp_path)
    with pytest.raises(HostError, match=r"is not built"):
        load_image("tiny", tmp_path / "no-cache-yet")


def test_a_cache_that_is_a_file_is_named(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.write_text("")
    with pytest.raises(HostError, match=rf"cache {cache} is not a directory.*VIRTIO_LAB_CACHE"):
        load_image("tiny", cache)


# -- disk images (kind disk): debian -------------------------------------------------------
HASH = "cd" * 32
DISK: dict[str, Any] = {
    "name": "debian",
    "kind": "disk",
    "format": "qcow2",
    "disk": "disk.qcow2",
    "content_hash": HASH,
    "virtual_size": 2 << 30,
    "input_key": "1" * 64,
    "builder_version": 1,
    "packages": {"cloud-init": "22.4.2-1+deb12u4"},
}


def disk_entry(cache: Path, manifest: Any = None, name: str = "debian") -> Path:
    """A cache laid out as build_debian leaves it: debian -> debian-<hash>/{disk.qcow2,...}."""
    build = cache / f"{name}-{HASH[:16]}"
    build.mkdir(parents=True)
    (build / "disk.qcow2").write_bytes(b"QFI\xfb")
    (build / MANIFEST).write_text(json.dumps(DISK if manifest is None else manifest))
    (cache / name).symlink_to(build.name)
    return build


def disk_with(**changes: Any) -> dict[str, Any]:
    return {**DISK, **changes}


def disk_without(key: str) -> dict[str, Any]:
    return {k: v for k, v in DISK.items() if k != key}


def test_a_sound_disk_entry_loads(tmp_path: Path) -> None:
    build = disk_entry(tmp_path)
    img = load_disk_image("debian", tmp_path)
    assert img.path == build / "disk.qcow2" and img.format == "qcow2"
    assert img.content_hash == HASH and img.virtual_size == 2 << 30 and img.name == "debian"


DISK_DAMAGED: list[tuple[str, Callable[[Path], Any]]] = [
    *((f"no {key}", lambda c, key=key: disk_entry(c, disk_without(key)))
      for key in ("input_key", "content_hash", "format", "disk", "virtual_size")),
    ("format vmdk", lambda c: disk_entry(c, disk_with(format="vmdk"))),
    ("virtual_size a string", lambda c: disk_entry(c, disk_with(virtual_size="2G"))),
    ("virtual_size true", lambda c: disk_entry(c, disk_with(virtual_size=True))),
    ("virtual_size 0", lambda c: disk_entry(c, disk_with(virtual_size=0))),
    ("kind unknown", lambda c: disk_entry(c, disk_with(kind="iso"))),
    ("kind kernel", lambda c: disk_entry(c, disk_with(kind="kernel"))),
    ("disk outside the entry", lambda c: disk_entry(c, disk_with(disk="../disk.qcow2"))),
    ("disk file gone", lambda c: (disk_entry(c) / "disk.qcow2").unlink()),
    ("dangling link", lambda c: (c / "debian").symlink_to("debian-gone")),
]


@pytest.mark.parametrize("damage", [d for _, d in DISK_DAMAGED],
                         ids=[n for n, _ in DISK_DAMAGED])
def test_a_damaged_disk_entry_says_to_rebuild_debian(tmp_path: Path, damage: Any) -> None:
    damage(tmp_path)
    with pytest.raises(HostError, match=r"is damaged \(.*\): run "
                       r"`provision image build debian --force`$") as exc:
        load_disk_image("debian", tmp_path)
    assert exc.value.exit_code == 4 and str(tmp_path) in str(exc.value)


def test_a_disk_manifest_is_no_build_for_the_builder_when_damaged(tmp_path: Path) -> None:
    disk_entry(tmp_path, disk_with(virtual_size=-1))
    assert read_manifest(tmp_path / "debian") is None  # build_debian builds it again


def test_no_debian_entry_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"not built in .*: run `provision image build debian`$"):
        load_disk_image("debian", tmp_path)


def test_tiny_is_no_disk_and_debian_no_kernel(tmp_path: Path) -> None:
    disk_entry(tmp_path)
    with pytest.raises(SpecError, match=r"image 'debian' is a disk image, not a kernel image"):
        load_image("debian", tmp_path)
    with pytest.raises(SpecError, match=r"image 'tiny' is a kernel image, not a disk image"):
        load_disk_image("tiny", tmp_path)
    with pytest.raises(SpecError, match=r"unknown image 'bionic'; known: tiny, debian"):
        load_disk_image("bionic", tmp_path)


def test_a_tiny_entry_that_says_disk_is_damaged_for_load_image(tmp_path: Path) -> None:
    tiny = {"input_key": "1" * 64, "content_hash": HASH, "kernel_version": "6.1",
            "kernel": "kernel", "initrd": "initrd", "cmdline": "console=ttyS0"}
    disk_entry(tmp_path, {**DISK, **tiny, "kind": "disk"}, name="tiny")
    with pytest.raises(HostError, match=r"is not of a kernel image\): run "
                       r"`provision image build --force`"):
        load_image("tiny", tmp_path)
