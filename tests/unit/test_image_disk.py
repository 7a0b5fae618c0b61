"""The disk's bytes (image.disk): the MBR partition table, where GRUB's boot sector and core
image go and what is patched in them, the inodes whose times are settled, and a small
filesystem made twice from trees with different ctimes and atimes (real e2fsprogs, GRUB
and sfdisk when the host has them)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from provision.errors import HostError, OperationError
from provision.image import disk

MIB = 1 << 20
LAYOUT = disk.DiskLayout(size=16 * MIB, fs_uuid="0ae1b6b2-58b4-4a37-9f6a-5e8b0a7d7c11",
                         hash_seed="4d3c2b1a-0000-4000-8000-000000000001",
                         disk_id=0x12345678, label="test-root", epoch=1_700_000_000)


def needs(*programs: str) -> pytest.MarkDecorator:
    missing = [p for p in programs if shutil.which(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


# -- partition table -------------------------------------------------------------------------
def test_chs_of_the_usual_first_sector_and_beyond_1023_cylinders() -> None:
    assert disk.chs(2048) == bytes((0x20, 0x21, 0x00))  # what fdisk writes for 1 MiB
    assert disk.chs(0) == bytes((0x00, 0x01, 0x00))
    assert disk.chs(2 << 30) == bytes((0xFE, 0xFF, 0xFF))


def test_one_bootable_linux_partition_from_1_mib_to_the_end() -> None:
    table = disk.partition_table(2 << 30, 0xCAFEF00D)
    assert len(table) == 72 and table[-2:] == b"\x55\xaa"
    disk_id, zero = struct.unpack_from("<IH", table)
    assert (disk_id, zero) == (0xCAFEF00D, 0)
    status, kind = table[6], table[6 + 4]
    start, sectors = struct.unpack_from("<II", table, 6 + 8)
    assert (status, kind, start) == (0x80, 0x83, 2048)
    assert start + sectors == (2 << 30) // 512
    assert table[6 + 16 : -2] == bytes(48)  # the other three entries are empty


@pytest.mark.parametrize("size", [0, 512, 1 * MIB, 1 * MIB + 1, (1 << 32) * 512 + MIB])
def test_no_partition_table_for_impossible_sizes(size: int) -> None:
    with pytest.raises(ValueError, match="cannot hold an MBR partition"):
        disk.partition_table(size, 1)


# -- GRUB's boot sector and core image -------------------------------------------------------
def test_the_boot_sector_is_boot_img_told_where_the_core_is_around_the_table() -> None:
    boot_img = bytes(range(256)) * 2
    table = disk.partition_table(64 * MIB, 7)
    sector = disk.boot_sector(boot_img, table)
    assert len(sector) == 512 and sector[0x1B8:] == table
    assert struct.unpack_from("<Q", sector, 0x5C)[0] == 1  # the core image's first sector
    assert sector[0x64] == 0xFF and sector[0x66:0x68] == b"\x90\x90"
    patched = set(range(0x5C, 0x64)) | {0x64, 0x66, 0x67}
    assert all(sector[i] == boot_img[i] for i in range(0x1B8) if i not in patched)


def test_a_boot_img_of_the_wrong_size_is_a_host_error() -> None:
    with pytest.raises(HostError, match="not a 512-byte GRUB boot sector"):
        disk.boot_sector(bytes(510), disk.partition_table(64 * MIB, 7))


def test_the_core_blocklist_loads_the_rest_of_the_core_in_one_run() -> None:
    core = bytes(512) + bytes([0xAB]) * 3000  # diskboot.img, then 3000 bytes: 7 sectors
    placed = disk.place_core(core)
    assert len(placed) == 7 * 512 and placed[512:3512] == core[512:]
    assert struct.unpack_from("<QHH", placed, 0x1F4) == (2, 6, 0x820)
    assert placed[0x1F4 - 12 : 0x1F4] == bytes(12)  # the list's terminator


def test_a_core_that_does_not_fit_the_gap_is_refused() -> None:
    with pytest.raises(OperationError, match="does not fit before the partition"):
        disk.place_core(bytes(2047 * 512 + 1))


@needs("grub-mkimage")
@pytest.mark.skipif(not (disk.GRUB_DIR / "moddep.lst").is_file(), reason="needs grub-pc-bin")
def test_the_blocklist_agrees_with_grub_mkimage() -> None:
    """grub-mkimage already fills in the list for a core image right after diskboot.img in
    one run; placing it at sector 1 must say exactly that."""
    core = disk.grub_core_image()
    assert disk.place_core(core)[: len(core)] == core


# -- the filesystem --------------------------------------------------------------------------
DUMPE2FS = """\
Inode count:              48
Inodes per group:         16
First inode:              11

Group 0: (Blocks 0-8191) csum 0x1234 [ITABLE_ZEROED]
  Free inodes: 14-16
Group 1: (Blocks 8192-16383) csum 0x5678 [ITABLE_ZEROED]
  Free inodes:\x20
Group 2: (Blocks 16384-24575) csum 0x9abc [INODE_UNINIT]
  Free inodes: 33-36, 39, 42-48
"""


def test_used_inodes_are_root_and_those_from_first_inode_on_not_free() -> None:
    # Group 1 has no free inode: its empty list must not swallow the next line.
    assert disk.used_inodes(DUMPE2FS) == [2, 11, 12, 13, *range(17, 33), 37, 38, 40, 41]


def test_time_commands_set_atime_and_ctime() -> None:
    assert list(disk.time_commands([2, 12], 5)) == [
        "sif <2> atime @5\n", "sif <2> ctime @5\n", "sif <12> atime @5\n",
        "sif <12> ctime @5\n"]


def tree(root: Path) -> Path:
    for name, text in {"etc/hostname": "debian\n", "usr/bin/tool": "#!/bin/sh\n",
                       "var/empty/.keep": ""}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "usr/bin/tool").chmod(0o755)
    (root / "bin").symlink_to("usr/bin")
    for path in [root, *root.rglob("*")]:
        os.utime(path, (LAYOUT.epoch, LAYOUT.epoch), follow_symlinks=False)
    return root


def make_disk(work: Path) -> bytes:
    raw = work / "disk.raw"
    with open(raw, "wb") as fh:
        fh.truncate(LAYOUT.size)
    disk.make_filesystem(raw, work / "root", LAYOUT)
    return raw.read_bytes()


@needs("mke2fs", "dumpe2fs", "debugfs", "e2fsck")
def test_the_filesystem_is_the_same_from_trees_with_other_ctimes_and_atimes(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    tree(first / "root")
    tree(second / "root")
    time.sleep(1.1)  # the second tree's inodes change a second later
    for path in (second / "root").rglob("*"):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode)  # a new ctime, same content and mode
        if path.is_file() and not path.is_symlink():
            path.read_bytes()  # a new atime, where the host keeps them
    a, b = make_disk(first), make_disk(second)
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    stat = subprocess.run(["debugfs", "-R", "stat /etc/hostname",
                           f"disk.raw?offset={LAYOUT.fs_offset}"], cwd=first,
                          capture_output=True, text=True, check=True).stdout
    assert stat.count(f"0x{LAYOUT.epoch:x}:00000000") == 4  # ctime, atime, mtime, crtime


@needs("mke2fs", "dumpe2fs", "debugfs", "e2fsck", "grub-mkimage", "sfdisk")
@pytest.mark.skipif(not (disk.GRUB_DIR / "moddep.lst").is_file(), reason="needs grub-pc-bin")
def test_a_whole_small_disk_is_partitioned_bootable_and_reproducible(tmp_path: Path) -> None:
    hashes = []
    for run in ("a", "b"):
        work = tmp_path / run
        tree(work / "root")
        make_disk(work)
        disk.write_boot_sectors(work / "disk.raw", LAYOUT)
        hashes.append(hashlib.sha256((work / "disk.raw").read_bytes()).hexdigest())
    assert hashes[0] == hashes[1]
    table = json.loads(subprocess.run(["sfdisk", "--json", str(tmp_path / "a/disk.raw")],
                                      capture_output=True, text=True, check=True).stdout)
    (part,) = table["partitiontable"]["partitions"]
    assert table["partitiontable"]["id"] == "0x12345678"
    assert (part["start"], part["type"], part.get("bootable")) == (2048, "83", True)
    assert part["start"] + part["size"] == LAYOUT.size // 512
