"""The lab's pool and volumes through a real libvirtd: an overlay backs onto the base without
copying it, a seed's bytes arrive through a stream, ownership comes from the pool's file, and
removal leaves the base and anything not the lab's alone. Boots nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from provision.backends import storage, virt
from provision.core import disks
from provision.core.disks import DesiredVolume
from provision.core.owner import Owner
from provision.image.seed import SeedNic, seed_iso, seed_spec

LAB = "itstor"


@pytest.fixture
def conn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[libvirt.virConnect]:
    monkeypatch.setenv(disks.POOLS_ENV, str(tmp_path / "pools"))
    c = virt.connect()
    yield c
    for name in (disks.pool_name(LAB),):
        try:
            pool = c.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            continue
        persistent = pool.isPersistent()
        if pool.isActive():
            pool.destroy()
        if persistent:
            pool.undefine()
    c.close()


def _base(tmp_path: Path) -> Path:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1G"], check=True)
    base.chmod(0o444)
    return base


def test_pool_overlay_and_seed_round_trip(conn: libvirt.virConnect, tmp_path: Path) -> None:
    base = _base(tmp_path)
    before = hashlib.sha256(base.read_bytes()).hexdigest()
    pool = disks.lab_pool(LAB)
    storage.ensure_pool(conn, pool)
    assert json.loads((Path(pool.path).parent / "owner.json").read_text()) == \
        Owner(LAB).external_ids()
    overlay = DesiredVolume("vm1.qcow2", pool.name, "vm1", "overlay", str(base), "qcow2", 1 << 30)
    # a real seed: libvirt reports an ISO 9660 volume's format as "iso", not "raw"
    iso = seed_iso(seed_spec("vm1", (SeedNic("52:54:00:00:00:01", "10.0.0.1/24", 1, None),)))
    seed = DesiredVolume("vm1-seed.iso", pool.name, "vm1", "seed",
                         content_hash=hashlib.sha256(iso).hexdigest(), content=iso)
    storage.create_volume(conn, pool.name, overlay)
    storage.create_volume(conn, pool.name, seed)
    pools, vols = storage.observe(conn, LAB, pool.name)
    assert pools[pool.name].owner == Owner(LAB) and pools[pool.name].active
    assert vols["vm1.qcow2"].backing == str(base) and vols["vm1.qcow2"].format == "qcow2"
    assert vols["vm1-seed.iso"].content_hash == seed.content_hash
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                      vols["vm1.qcow2"].path], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["backing-filename"] == str(base) and info["virtual-size"] == 1 << 30
    assert info["actual-size"] < 1 << 20  # an overlay, not a copy of the base
    # a replaced seed is new bytes under the same name
    iso2 = b"other" * 10
    storage.create_volume(conn, pool.name, DesiredVolume(
        "vm1-seed.iso", pool.name, "vm1", "seed", content=iso2))
    assert storage.observe(conn, LAB, None)[1]["vm1-seed.iso"].content_hash == \
        hashlib.sha256(iso2).hexdigest()
    storage.delete_pool(conn, pool.name, pool.path)
    assert storage.observe(conn, LAB, pool.name) == ({}, {})
    assert not Path(pool.path).parent.exists()
    assert hashlib.sha256(base.read_bytes()).hexdigest() == before and base.exists()


def test_a_pool_without_the_labs_file_is_not_the_labs(conn: libvirt.virConnect,
                                                      tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    xml = (f"<pool type='dir'><name>{disks.pool_name(LAB)}</name><target><path>{foreign}"
           "</path></target></pool>")
    conn.storagePoolCreateXML(xml, 0)
    pools, vols = storage.observe(conn, LAB, disks.pool_name(LAB))
    assert pools[disks.pool_name(LAB)].owner is None and vols == {}
    assert storage.observe(conn, LAB, None) == ({}, {})  # not found when not asked by name
