"""The embedded guest's kernel: the choice is an input of the image key, apt's lists name the
package exactly, a packaged kernel not in the cache is no current image (and check mode
downloads nothing), and an lz4 bzImage (Debian's cloud kernel) unpacks to its vmlinux."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from provision.errors import HostError
from provision.image import bootfiles, build, kernels

META = """Package: linux-image-cloud-amd64
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
"""
IMAGE = """Package: linux-image-6.1.0-56-cloud-amd64
Version: 6.1.192-2
SHA256: e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee
"""


def _fake_apt(monkeypatch: pytest.MonkeyPatch, records: dict[str, str]) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        out = records.get(argv[-1], "")
        return subprocess.CompletedProcess(argv, 0 if out else 100, out, "")

    monkeypatch.setattr(kernels.subprocess, "run", run)
    return calls


def test_apt_names_the_exact_package(monkeypatch: pytest.MonkeyPatch) -> None:
    records = {"linux-image-cloud-amd64": META, "linux-image-6.1.0-56-cloud-amd64=6.1.192-2": IMAGE}
    _fake_apt(monkeypatch, records)
    pkg = kernels.resolve("linux-image-cloud-amd64")
    assert pkg == kernels.KernelPackage(
        "linux-image-6.1.0-56-cloud-amd64",
        "6.1.192-2",
        "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee",
    )
    assert pkg.kernel_version == "6.1.0-56-cloud-amd64"


def test_a_package_apt_does_not_know_says_update(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_apt(monkeypatch, {})
    with pytest.raises(HostError, match="apt-get update"):
        kernels.resolve("linux-image-cloud-amd64")


def test_check_mode_downloads_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    records = {"linux-image-cloud-amd64": META, "linux-image-6.1.0-56-cloud-amd64=6.1.192-2": IMAGE}
    calls = _fake_apt(monkeypatch, records)
    assert kernels.package_kernel("cloud", tmp_path, ("virtio_net",), fetch=False) is None
    assert all(call[0] == "apt-cache" for call in calls)
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "image.json").write_text(
        '{"input_key": "k", "content_hash": "h", "kernel_version": "v", "kernel": "kernel",'
        ' "initrd": "initrd", "cmdline": "c"}'
    )
    assert build.image_current(cache_dir=tmp_path, kernel="cloud") is False
    assert all(call[0] == "apt-cache" for call in calls)


def test_an_unknown_kernel_is_named(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="unknown guest kernel 'generic'"):
        build._gather_inputs(tmp_path, "generic", fetch=False)


def test_the_kernel_choice_is_in_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    inputs = build._Inputs("6.1", kernel, {"flavour": "host"}, "c", (), (), {}, (), b"")
    cloud = {"flavour": "cloud", "package": "p", "version": "1", "sha256": "s"}
    other = build._Inputs("6.1", kernel, cloud, "c", (), (), {}, (), b"")
    assert build._input_key(inputs) != build._input_key(other)


def _bzimage(payload: bytes) -> bytes:
    setup_sectors = 1
    image = bytearray((setup_sectors + 1) * 512)
    image[0x1F1] = setup_sectors
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x20F)
    struct.pack_into("<II", image, 0x248, 0, len(payload))
    return bytes(image) + payload


def _pvh_elf() -> bytes:
    """The smallest ELF64 with a PT_NOTE carrying Xen's PHYS32_ENTRY note."""
    note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + b"\0" * 4
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    program = bytearray(56)
    struct.pack_into("<I", program, 0, 4)  # PT_NOTE
    struct.pack_into("<Q", program, 8, 64 + 56)  # p_offset
    struct.pack_into("<Q", program, 32, len(note))  # p_filesz
    return bytes(header + program) + note + b"\0" * 1000


@pytest.mark.skipif(shutil.which("lz4") is None, reason="no lz4 tool")
def test_an_lz4_bzimage_unpacks(tmp_path: Path) -> None:
    elf = _pvh_elf()
    packed = subprocess.run(["lz4", "-l", "-c"], input=elf, capture_output=True, check=True)
    bzimage = tmp_path / "vmlinuz"
    # As the kernel's build appends it: the uncompressed size after the lz4 stream.
    bzimage.write_bytes(_bzimage(packed.stdout + struct.pack("<I", len(elf))))
    assert bootfiles.kernel_bytes(bzimage) == elf
    bzimage.write_bytes(_bzimage(packed.stdout + struct.pack("<I", len(elf) + 1)))
    with pytest.raises(HostError, match="trailer"):
        bootfiles.kernel_bytes(bzimage)
