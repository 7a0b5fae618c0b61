"""The guest image cache: an entry a crash, a full disk or a hand edit damaged is no build.
`load_image` says to rebuild (exit 4), and `build_image` treats the entry as absent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provision.errors import HostError
from provision.image.cache import MANIFEST, load_image, read_manifest

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
