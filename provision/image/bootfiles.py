"""Byte formats of the embedded guest's boot files, with no knowledge of the cache: a
reproducible cpio newc writer, kernel module decompression, and the uncompressed ELF
``vmlinux`` taken out of a bzImage (checked for the PVH entry QEMU boots it through).
"""

from __future__ import annotations

import gzip
import io
import lzma
import stat
import struct
import subprocess
import zlib
from pathlib import Path

from provision.errors import HostError, OperationError

FIXED_MTIME = 0  # every cpio entry's mtime: the archive is byte-for-byte reproducible
_XEN_ELFNOTE_PHYS32_ENTRY = 18
_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"


def run_bytes(argv: list[str], data: bytes | None = None, cwd: Path | None = None) -> bytes:
    """Run a host program (argument list, no shell); typed errors naming it."""
    try:
        return subprocess.run(argv, input=data, check=True, capture_output=True, cwd=cwd).stdout
    except FileNotFoundError:
        raise HostError(f"{argv[0]} not found: install it (`provision host prepare`)") from None
    except subprocess.CalledProcessError as exc:
        raise OperationError(f"{' '.join(argv)} failed: {exc.stderr.decode().strip()}") from None


class Cpio:
    """A newc ("070701") archive built in memory; entries written sorted, owned by root."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, bytes, int, int]] = {}

    def directory(self, path: str) -> None:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            self._entries.setdefault("/".join(parts[:depth]), (stat.S_IFDIR | 0o755, b"", 0, 0))

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._parent(path)
        self._entries[path] = (stat.S_IFREG | mode, data, 0, 0)

    def symlink(self, path: str, target: str) -> None:
        self._parent(path)
        self._entries[path] = (stat.S_IFLNK | 0o777, target.encode(), 0, 0)

    def char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._parent(path)
        self._entries[path] = (stat.S_IFCHR | mode, b"", major, minor)

    def _parent(self, path: str) -> None:
        if "/" in path:
            self.directory(path.rsplit("/", 1)[0])

    def pack(self) -> bytes:
        out = io.BytesIO()
        names = sorted(self._entries)
        for inode, path in enumerate([*names, "TRAILER!!!"], start=1):
            mode, data, major, minor = self._entries.get(path, (0, b"", 0, 0))
            nlink = 2 if stat.S_ISDIR(mode) else 1
            name = path.encode() + b"\0"
            fields = (inode, mode, 0, 0, nlink, FIXED_MTIME, len(data), 0, 0, major, minor)
            header = b"070701" + b"".join(b"%08x" % f for f in (*fields, len(name), 0))
            out.write(header + name + b"\0" * (-(len(header) + len(name)) % 4))
            out.write(data + b"\0" * (-len(data) % 4))
        return out.getvalue()


def module_bytes(module: Path) -> bytes:
    data = module.read_bytes()
    if module.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if module.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if module.name.endswith(".ko.zst"):
        return run_bytes(["zstd", "-dc"], data)
    return data


def kernel_bytes(bzimage: Path) -> bytes:
    """The uncompressed ELF vmlinux inside a bzImage.

    QEMU boots it through its PVH entry point, which skips the in-guest decompression of
    the payload: measured under TCG, about 3 s saved per boot (xz is slow when emulated).
    """
    data = bzimage.read_bytes()
    if data[0x202:0x206] != b"HdrS" or struct.unpack_from("<H", data, 0x206)[0] < 0x208:
        raise HostError(f"{bzimage} is not a bzImage with boot protocol 2.08 or later")
    setup_sectors = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    payload = data[start : start + length]
    if payload.startswith(b"\xfd7zXZ\x00"):
        vmlinux = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    elif payload.startswith(b"\x1f\x8b"):
        vmlinux = zlib.decompressobj(wbits=31).decompress(payload)
    elif payload.startswith(b"\x28\xb5\x2f\xfd"):
        vmlinux = run_bytes(["zstd", "-dc"], payload)
    elif payload.startswith(_LZ4_LEGACY_MAGIC):
        # lz4's legacy frame (Debian's cloud kernel) followed by the kernel's 4-byte
        # uncompressed size, which the lz4 tool would take for a bad frame.
        (size,) = struct.unpack_from("<I", payload, len(payload) - 4)
        vmlinux = run_bytes(["lz4", "-dc"], payload[:-4])
        if len(vmlinux) != size:
            raise HostError(f"{bzimage}: the lz4 payload unpacked to {len(vmlinux)} bytes, "
                            f"not the {size} its trailer says")
    else:
        raise HostError(f"{bzimage}: unsupported kernel compression {payload[:4].hex()}")
    if not has_pvh_entry(vmlinux):
        raise HostError(f"{bzimage}: the kernel has no PVH entry point (CONFIG_PVH)")
    return vmlinux


def has_pvh_entry(elf: bytes) -> bool:
    """True if the ELF64 image carries the Xen PHYS32_ENTRY note QEMU's PVH boot needs."""
    if elf[:5] != b"\x7fELF\x02":
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        (p_type,) = struct.unpack_from("<I", elf, phoff + index * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        (offset,) = struct.unpack_from("<Q", elf, phoff + index * phentsize + 8)
        (size,) = struct.unpack_from("<Q", elf, phoff + index * phentsize + 32)
        end = offset + size
        while offset + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, offset)
            name = elf[offset + 12 : offset + 12 + namesz]
            if name == b"Xen\0" and note_type == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            offset += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False
