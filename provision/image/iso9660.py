"""A small ISO 9660 image of a few files, byte for byte the same for the same files.

``pycdlib`` writes the image: Joliet (level 3) and Rock Ridge (1.09) name trees over the plain
ISO 9660 one, as ``genisoimage -joliet -rock`` does, so that Linux shows long lower-case names
with a dash (``network-config``) as they are; the plain tree has only upper-case 8.3-ish names.

pycdlib stamps every volume descriptor, directory record and Rock Ridge TF entry with the
current local time, and has no way to choose another (its ``creation_time`` sets only one of
the TF stamps). ``pin_dates`` therefore rewrites every date of the finished image, found
through the structures ECMA-119 and SUSP/RRIP define (not through pycdlib's internals), to
``PINNED``, in UTC: the same files give the same bytes at any time and in any time zone.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping

PINNED = (2000, 1, 1, 0, 0, 0)  # year, month, day, hour, minute, second; UTC
# A volume descriptor date: 16 digits (YYYYMMDDHHMMSS, hundredths) and a GMT offset byte.
_VD_DATE = b"%04d%02d%02d%02d%02d%02d00\x00" % PINNED
# A directory record date (and a short TF stamp): years since 1900, month, day, h, m, s, offset.
_DR_DATE = bytes([PINNED[0] - 1900, *PINNED[1:], 0])
_FIRST_VD = 16  # volume descriptors start at sector 16 (ECMA-119 6.2.1)
_SECTOR = 2048
# Offsets in a primary or supplementary volume descriptor (ECMA-119 8.4).
_VD_BLOCK_SIZE = 128
_VD_ROOT = 156
_VD_DATES = (813, 830, 864)  # creation, modification, effective; expiration stays unset
_VD_TERMINATOR = 255
_DIRECTORY = 0x02  # file flag of a directory record
_TF_LONG_FORM = 0x80  # TF flag: 17-byte stamps instead of 7-byte ones


def iso_image(files: Mapping[str, bytes], volume_id: str) -> bytes:
    """An ISO 9660 image holding ``files`` (name -> bytes, all in the root directory) under the
    volume label ``volume_id``, with every date set to ``PINNED``. Names are lower-case
    letters, digits, '-' and '.'; each becomes the Joliet and Rock Ridge name as it is."""
    import pycdlib  # here, not at the top: only disk VMs have a seed (15 ms at every start)

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=volume_id, joliet=3, rock_ridge="1.09",
            app_ident_str="virtio-lab")
    for name in sorted(files):
        data = files[name]
        iso.add_fp(io.BytesIO(data), len(data), iso_path=_iso9660_path(name), rr_name=name,
                   joliet_path=f"/{name}", file_mode=0o100444)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    image = bytearray(out.getvalue())
    pin_dates(image)
    return bytes(image)


def _iso9660_path(name: str) -> str:
    """The plain ISO 9660 name (d-characters, level 3): ``network-config`` -> NETWORK_CONFIG."""
    stem, _, ext = name.upper().replace("-", "_").partition(".")
    return f"/{stem}.{ext};1"


def pin_dates(image: bytearray) -> None:
    """Set every date of an ISO 9660 image to ``PINNED``: those of each volume descriptor, of
    each directory record of each tree, and each Rock Ridge TF stamp."""
    block = struct.unpack_from("<H", image, _FIRST_VD * _SECTOR + _VD_BLOCK_SIZE)[0]
    seen: set[int] = set()
    sector = _FIRST_VD
    while (sector + 1) * _SECTOR <= len(image):
        vd = sector * _SECTOR
        if image[vd + 1:vd + 6] != b"CD001" or image[vd] == _VD_TERMINATOR:
            break
        if image[vd] in (1, 2):  # primary, supplementary (Joliet)
            for offset in _VD_DATES:
                image[vd + offset:vd + offset + len(_VD_DATE)] = _VD_DATE
            _pin_record(image, vd + _VD_ROOT, block)
            _pin_directory(image, vd + _VD_ROOT, block, seen)
        sector += 1


def _pin_directory(image: bytearray, record: int, block: int, seen: set[int]) -> None:
    """Pin the dates of every record in the directory that ``record`` points to, and below."""
    extent, size = struct.unpack_from("<I4xI", image, record + 2)
    if extent in seen:
        return
    seen.add(extent)
    start = extent * block
    pos = start
    while pos < start + size:
        length = image[pos]
        if length == 0:  # no record crosses a block: the rest of this block is padding
            pos = start + ((pos - start) // block + 1) * block
            continue
        _pin_record(image, pos, block)
        name_length = image[pos + 32]
        is_self_or_parent = name_length == 1 and image[pos + 33] in (0, 1)
        if image[pos + 25] & _DIRECTORY and not is_self_or_parent:
            _pin_directory(image, pos, block, seen)
        pos += length


def _pin_record(image: bytearray, record: int, block: int) -> None:
    """Pin a directory record's date and the TF stamps in its system use area."""
    image[record + 18:record + 25] = _DR_DATE
    name_length = image[record + 32]
    system_use = record + 33 + name_length + (1 - name_length % 2)  # a pad byte after even
    _pin_system_use(image, system_use, record + image[record], block)


def _pin_system_use(image: bytearray, pos: int, end: int, block: int) -> None:
    """Walk SUSP entries from ``pos`` to ``end``, following continuation areas (CE)."""
    while pos + 4 <= end:
        signature, length = bytes(image[pos:pos + 2]), image[pos + 2]
        if length < 4 or signature == b"ST":
            return
        if signature == b"TF":
            flags = image[pos + 4]
            stamp = 17 if flags & _TF_LONG_FORM else 7
            date = _VD_DATE if flags & _TF_LONG_FORM else _DR_DATE
            for i in range(bin(flags & 0x7F).count("1")):
                at = pos + 5 + i * stamp
                image[at:at + stamp] = date
        elif signature == b"CE":
            area, offset, size = struct.unpack_from("<I4xI4xI", image, pos + 4)
            at = area * block + offset
            _pin_system_use(image, at, at + size, block)
        pos += length
