"""A bootable disk made from a root tree, byte for byte the same from the same tree: an MBR
partition table, GRUB for i386-pc in the MBR and the gap before the partition, and an ext4
filesystem made by ``mke2fs -d`` without mounting anything.

GRUB is placed here rather than by ``grub-install``, which wants a block device and the
running system's view of it: ``grub-mkimage`` makes the core image (diskboot.img followed
by the compressed kernel and modules), this module writes GRUB's boot.img into sector 0
around the partition table and the core image into sectors 1.., and fills in the two
places that say where the core image is, as grub-bios-setup would for a core image
embedded in the MBR gap (no Reed-Solomon redundancy: the gap is ours alone).

Reproducibility: the filesystem UUID, the directory hash seed and the disk identifier are
inputs; ``E2FSPROGS_FAKE_TIME`` fixes the superblock's and new inodes' times; the tree's
mtimes are settled by the caller. ``mke2fs -d`` copies each inode's ctime and atime from the
build host's tree, which no one can set, so afterwards ``debugfs`` sets both to the epoch on
every inode in use.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from provision.errors import HostError, OperationError

SECTOR = 512
# The partition starts at 1 MiB, the usual alignment; GRUB's core image lives in the gap.
PARTITION_START = 2048
CORE_SECTOR = 1  # the core image's first sector, right after the MBR
GRUB_DIR = Path("/usr/lib/grub/i386-pc")
# Built into the core image, so that nothing is read from $prefix/i386-pc: find the disk and
# the partition, read ext4, run grub.cfg (normal), load a Linux kernel, talk on the serial port.
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "serial", "terminal")
# The root partition of the drive the BIOS booted from: no drive number, no UUID search.
GRUB_PREFIX = "(,msdos1)/boot/grub"

# GRUB's boot.img (grub-core/boot/i386/pc/boot.S, include/grub/i386/pc/boot.h).
KERNEL_SECTOR_AT = 0x5C  # u64: the disk sector of the core image's first sector
BOOT_DRIVE_AT = 0x64  # 0xff: use the drive number the BIOS passes in DL
DRIVE_CHECK_AT = 0x66  # a 2-byte jmp; two nops make boot.img trust only hard-disk numbers
DISK_ID_AT = 0x1B8  # boot code ends here: disk identifier, partition table, 0x55aa follow
# diskboot.img (the core image's first sector) ends with a list of (start, count, segment)
# entries, growing downwards, that say which sectors to load next and where.
BLOCKLIST_ENTRY = struct.Struct("<QHH")
KERNEL_SEGMENT = 0x820  # where the second sector of the core image is loaded


@dataclass(frozen=True)
class DiskLayout:
    """What makes a disk's bytes besides the tree: sizes and the fixed identifiers."""

    size: int  # bytes of the disk (a multiple of 1 MiB)
    fs_uuid: str  # ext4 UUID: root=UUID= on the kernel command line and in fstab
    hash_seed: str  # ext4 directory hash seed (a UUID)
    disk_id: int  # the MBR's 32-bit disk identifier
    label: str  # the ext4 volume label
    epoch: int  # SOURCE_DATE_EPOCH: every time in the filesystem

    @property
    def fs_offset(self) -> int:
        return PARTITION_START * SECTOR

    @property
    def fs_blocks(self) -> int:
        """4 KiB blocks of the filesystem: the partition, to the end of the disk."""
        return (self.size - self.fs_offset) // 4096


# --- the first sectors ---------------------------------------------------------------------


def chs(lba: int) -> bytes:
    """The 3-byte cylinder/head/sector address of `lba` with 255 heads and 63 sectors per
    track, as partitioning tools write it; addresses past cylinder 1023 are written as the
    largest one, and firmware uses the LBA fields instead."""
    cylinder, rest = divmod(lba, 255 * 63)
    head, sector = divmod(rest, 63)
    if cylinder > 1023:
        cylinder, head, sector = 1023, 254, 62
    return bytes((head, (sector + 1) | ((cylinder >> 2) & 0xC0), cylinder & 0xFF))


def partition_table(disk_size: int, disk_id: int) -> bytes:
    """Bytes 0x1b8-0x1ff of the MBR: the disk identifier and one bootable Linux partition
    from PARTITION_START to the end of the disk, then the boot signature."""
    sectors = disk_size // SECTOR - PARTITION_START
    if disk_size % SECTOR or sectors <= 0 or disk_size // SECTOR > 0xFFFFFFFF:
        raise ValueError(f"a disk of {disk_size} bytes cannot hold an MBR partition")
    last = PARTITION_START + sectors - 1
    entry = (bytes((0x80,)) + chs(PARTITION_START) + bytes((0x83,)) + chs(last)
             + struct.pack("<II", PARTITION_START, sectors))
    return struct.pack("<IH", disk_id, 0) + entry + bytes(16 * 3) + b"\x55\xaa"


def boot_sector(boot_img: bytes, table: bytes, core_sector: int = CORE_SECTOR) -> bytes:
    """Sector 0: GRUB's boot.img up to the disk identifier, told where the core image is,
    then the partition table (``partition_table``)."""
    if len(boot_img) != SECTOR or len(table) != SECTOR - DISK_ID_AT:
        raise HostError(f"{GRUB_DIR}/boot.img is not a 512-byte GRUB boot sector: "
                        "reinstall grub-pc-bin (`provision host prepare`)")
    sector = bytearray(boot_img[:DISK_ID_AT] + table)
    struct.pack_into("<Q", sector, KERNEL_SECTOR_AT, core_sector)
    sector[BOOT_DRIVE_AT] = 0xFF
    sector[DRIVE_CHECK_AT : DRIVE_CHECK_AT + 2] = b"\x90\x90"
    return bytes(sector)


def place_core(core_img: bytes, core_sector: int = CORE_SECTOR) -> bytes:
    """The core image with its blocklist saying: load the sectors after its first, all in one
    run, to segment 0x820; the entry below it ends the list. Padded to whole sectors."""
    sectors = -(-len(core_img) // SECTOR)
    if core_sector + sectors > PARTITION_START:
        raise OperationError(f"GRUB's core image ({len(core_img)} bytes) does not fit before "
                             f"the partition at sector {PARTITION_START}")
    image = bytearray(core_img.ljust(sectors * SECTOR, b"\0"))
    first = SECTOR - BLOCKLIST_ENTRY.size
    BLOCKLIST_ENTRY.pack_into(image, first, core_sector + 1, sectors - 1, KERNEL_SEGMENT)
    BLOCKLIST_ENTRY.pack_into(image, first - BLOCKLIST_ENTRY.size, 0, 0, 0)
    return bytes(image)


def grub_core_image(grub_dir: Path = GRUB_DIR) -> bytes:
    """GRUB's i386-pc core image from the build host's grub-pc-bin (grub-mkimage)."""
    if not (grub_dir / "moddep.lst").is_file():
        raise HostError(f"GRUB for i386-pc is missing ({grub_dir}): install grub-pc-bin "
                        "(`provision host prepare`)")
    with tempfile.TemporaryDirectory(prefix="vlab-grub-") as work:
        out = Path(work) / "core.img"
        _run(["grub-mkimage", "-O", "i386-pc", "-d", str(grub_dir), "-p", GRUB_PREFIX,
              "-o", str(out), *GRUB_MODULES])
        return out.read_bytes()


def write_boot_sectors(disk: Path, layout: DiskLayout, grub_dir: Path = GRUB_DIR) -> None:
    """Write the MBR (boot.img and the partition table) and the core image into `disk`."""
    table = partition_table(layout.size, layout.disk_id)
    sector0 = boot_sector((grub_dir / "boot.img").read_bytes(), table)
    core = place_core(grub_core_image(grub_dir))
    with open(disk, "r+b") as fh:
        fh.write(sector0)
        fh.seek(CORE_SECTOR * SECTOR)
        fh.write(core)


# --- the filesystem ------------------------------------------------------------------------


def make_filesystem(disk: Path, tree: Path, layout: DiskLayout) -> None:
    """ext4 from `tree` at the partition's offset in `disk`, with every time the epoch."""
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(layout.epoch), "LC_ALL": "C"}
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", layout.label,
          "-U", layout.fs_uuid,
          "-E", f"offset={layout.fs_offset},hash_seed={layout.hash_seed}",
          "-d", str(tree), disk.name, str(layout.fs_blocks)], cwd=disk.parent, env=env)
    # e2fsprogs opens "FILE?offset=N" at that offset; relative, so the path holds no "?".
    spec = f"{disk.name}?offset={layout.fs_offset}"
    inodes = used_inodes(_run(["dumpe2fs", spec], cwd=disk.parent, env=env).stdout)
    script = "".join(time_commands(inodes, layout.epoch))
    done = _run(["debugfs", "-w", "-f", "-", spec], cwd=disk.parent, env=env, stdin=script)
    # debugfs exits 0 whatever its commands did; anything but its banner is a failure.
    complaints = [line for line in done.stderr.splitlines() if not line.startswith("debugfs ")]
    if complaints:
        raise OperationError(f"debugfs could not set the inode times: {complaints[0]}")
    _run(["e2fsck", "-f", "-n", spec], cwd=disk.parent, env=env)


def used_inodes(dumpe2fs: str) -> list[int]:
    """The inodes in use that ``mke2fs -d`` filled from the tree (the root directory and
    every inode from "First inode" on), from dumpe2fs' per-group "Free inodes:" lists."""
    per_group = int(_field(dumpe2fs, "Inodes per group"))
    first = int(_field(dumpe2fs, "First inode"))
    used: list[int] = [2]
    free_lists = re.findall(r"^[ \t]+Free inodes:[ \t]*([^\n]*)$", dumpe2fs, re.MULTILINE)
    for group, listing in enumerate(free_lists):
        free: set[int] = set()
        for part in filter(None, (p.strip() for p in listing.split(","))):
            low, _, high = part.partition("-")
            free.update(range(int(low), int(high or low) + 1))
        start = max(group * per_group + 1, first)
        used += [i for i in range(start, (group + 1) * per_group + 1) if i not in free]
    return used


def time_commands(inodes: Iterable[int], epoch: int) -> Iterable[str]:
    """debugfs commands setting the access and change times of `inodes` to `epoch`."""
    for inode in inodes:
        yield f"sif <{inode}> atime @{epoch}\n"
        yield f"sif <{inode}> ctime @{epoch}\n"


def _field(dumpe2fs: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}:\s*(\S+)", dumpe2fs, re.MULTILINE)
    if match is None:
        raise OperationError(f"dumpe2fs printed no {name!r}: is e2fsprogs too old?")
    return match.group(1)


# --- qcow2 ---------------------------------------------------------------------------------


def to_qcow2(raw: Path, out: Path) -> None:
    """Convert to an uncompressed qcow2: zero clusters stay unallocated, and qemu-img writes
    the clusters in order, so the same raw bytes give the same qcow2 bytes."""
    _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1",
          str(raw), str(out)])


def _run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True,
                                text=True, check=False)
    except FileNotFoundError:
        raise HostError(f"{argv[0]} not found: install it (`provision host prepare`)") from None
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise OperationError(f"{argv[0]} exited {result.returncode}: {last}")
    return result
