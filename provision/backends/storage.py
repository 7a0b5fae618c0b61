"""Disks of the lab's VMs through libvirt's storage API: one directory pool per lab that
holds each VM's qcow2 overlay (a volume whose ``backingStore`` is the base image in the
image cache, never a copy of it) and its cloud-init seed (a raw volume uploaded through a
libvirt stream).

Pools carry no metadata, so ownership is a file: the pool's directory is
``<root>/<lab>/volumes`` and ``<root>/<lab>/owner.json`` names the lab. A pool is the lab's
only if that file says so; a pool of the wanted name without it is someone else's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import libvirt

from provision.core.disks import DesiredPool, DesiredVolume
from provision.core.observed import ObservedPool, ObservedVolume
from provision.core.owner import Owner, from_external_ids
from provision.errors import OperationError

OWNER_FILE = "owner.json"
SEED_MAX = 16 << 20  # a seed is a few hundred KiB; anything bigger is not one of ours


T = TypeVar("T")


def _owner_of(path: str) -> Owner | None:
    """The lab named by the ownership file beside a pool directory, if there is one."""
    try:
        ids = json.loads((Path(path).parent / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return from_external_ids(ids) if isinstance(ids, dict) else None


def _target(xml: str) -> str:
    return ET.fromstring(xml).findtext("target/path") or ""


def observe(conn: libvirt.virConnect, lab: str, wanted: str | None
            ) -> tuple[dict[str, ObservedPool], dict[str, ObservedVolume]]:
    """The lab's pools (by ownership file) and their volumes, plus a pool holding the
    ``wanted`` name whoever owns it."""
    pools: dict[str, ObservedPool] = {}
    volumes: dict[str, ObservedVolume] = {}
    for pool in conn.listAllStoragePools():
        try:
            name, path = pool.name(), _target(pool.XMLDesc(0))
            active = bool(pool.isActive())
        except libvirt.libvirtError:
            continue  # vanished while we looked
        owner = _owner_of(path) if path else None
        if not ((owner is not None and owner.lab == lab) or name == wanted):
            continue
        pools[name] = ObservedPool(name, path, owner, active)
        if owner is not None and owner.lab == lab and active:
            volumes.update(_volumes(pool, name))
    return pools, volumes


def _volumes(pool: libvirt.virStoragePool, pool_name_: str) -> dict[str, ObservedVolume]:
    out: dict[str, ObservedVolume] = {}
    try:
        pool.refresh(0)
        vols = pool.listAllVolumes(0)
    except libvirt.libvirtError:
        return out
    for vol in vols:
        try:
            root = ET.fromstring(vol.XMLDesc(0))
            path = vol.path()
        except libvirt.libvirtError:
            continue
        fmt = root.find("target/format")
        name = vol.name()
        out[name] = ObservedVolume(
            name, pool_name_, path, None if fmt is None else fmt.get("type"),
            root.findtext("backingStore/path"),
            # a seed is raw bytes; libvirt reports it as "iso" once it sees ISO 9660 in it
            None if fmt is None or fmt.get("type") == "qcow2" else _file_hash(path),
        )
    return out


def _file_hash(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read(SEED_MAX + 1)
    except OSError:
        return None
    return None if len(data) > SEED_MAX else hashlib.sha256(data).hexdigest()


def ensure_pool(conn: libvirt.virConnect, want: DesiredPool) -> libvirt.virStoragePool:
    """The lab's pool, defined (persistent, autostarted) and active; its ownership file is
    written before libvirt hears of the pool, so a crash leaves nothing unowned."""
    path = Path(want.path)
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    owner_file = path.parent / OWNER_FILE
    temp = owner_file.with_suffix(".tmp")
    temp.write_text(json.dumps(want.owner.external_ids(), sort_keys=True) + "\n")
    temp.replace(owner_file)
    try:
        pool = conn.storagePoolLookupByName(want.name)
    except libvirt.libvirtError:
        xml = _pool_xml(want)
        pool = _call(want.name, "define", lambda: conn.storagePoolDefineXML(xml, 0))
    if not pool.isActive():
        _call(want.name, "start", lambda: pool.create(0))
    _call(want.name, "autostart", lambda: pool.setAutostart(1))
    return pool


def _call(name: str, what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except libvirt.libvirtError as exc:
        raise OperationError(f"storage pool {name}: cannot {what}: "
                             f"{exc.get_error_message()}") from None


def create_volume(conn: libvirt.virConnect, pool_name_: str, want: DesiredVolume) -> None:
    """Create ``want`` in the pool, replacing a volume of that name."""
    pool = conn.storagePoolLookupByName(pool_name_)
    delete_volume(conn, pool_name_, want.name)
    if want.kind == "overlay":
        xml = _overlay_xml(want)
        _call(pool_name_, f"create {want.name}", lambda: pool.createXML(xml, 0))
        return
    xml = _seed_xml(want)
    vol = _call(pool_name_, f"create {want.name}", lambda: pool.createXML(xml, 0))
    stream = conn.newStream(0)
    try:
        vol.upload(stream, 0, len(want.content), 0)
        stream.send(want.content)
        stream.finish()
    except libvirt.libvirtError as exc:
        stream.abort()
        raise OperationError(f"storage pool {pool_name_}: cannot write {want.name}: "
                             f"{exc.get_error_message()}") from None


def _el(tag: str, *children: ET.Element, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.Element(tag, attrs)
    element.text = text
    element.extend(children)
    return element


def _pool_xml(want: DesiredPool) -> str:
    pool = _el("pool", _el("name", text=want.name),
               _el("target", _el("path", text=want.path)), type="dir")  # fmt: skip
    return ET.tostring(pool, encoding="unicode")


def _seed_xml(want: DesiredVolume) -> str:
    volume = _el("volume", _el("name", text=want.name),
                 _el("capacity", text=str(len(want.content)), unit="bytes"),
                 _el("target", _el("format", type="raw"),
                     _el("permissions", _el("mode", text="0644"))))  # fmt: skip
    return ET.tostring(volume, encoding="unicode")


def _overlay_xml(want: DesiredVolume) -> str:
    volume = _el("volume", _el("name", text=want.name),
                 _el("capacity", text=str(want.capacity), unit="bytes"),
                 _el("target", _el("format", type="qcow2"),
                     _el("permissions", _el("mode", text="0600"))),
                 _el("backingStore", _el("path", text=want.backing or ""),
                     _el("format", type=want.backing_format or "qcow2")))  # fmt: skip
    return ET.tostring(volume, encoding="unicode")


def delete_volume(conn: libvirt.virConnect, pool_name_: str, name: str) -> None:
    try:
        vol = conn.storagePoolLookupByName(pool_name_).storageVolLookupByName(name)
    except libvirt.libvirtError:
        return
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        raise OperationError(f"storage pool {pool_name_}: cannot delete {name}: "
                             f"{exc.get_error_message()}") from None


def delete_pool(conn: libvirt.virConnect, name: str, path: str) -> None:
    """Stop, empty and undefine an owned pool, then remove its directory and ownership
    file (the base images it backed onto live in the image cache and stay)."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        pool = None
    if pool is not None:
        if pool.isActive():
            for vol in pool.listAllVolumes(0):
                _call(name, f"delete {vol.name()}", lambda v=vol: v.delete(0))
            _call(name, "stop", pool.destroy)
        _call(name, "undefine", pool.undefine)
    directory = Path(path)
    with contextlib.suppress(FileNotFoundError):
        directory.rmdir()  # emptied through libvirt above; a file left by hand keeps it
    (directory.parent / OWNER_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.parent.rmdir()  # something else lives there: not ours to remove
