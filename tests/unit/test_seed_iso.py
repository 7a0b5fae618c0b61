"""The NoCloud seed's ISO: labelled cidata, both long-name trees, and the same bytes for the
same seed (at any time, in any time zone), so that its hash says whether the seed changed."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml

from provision.image.iso9660 import PINNED
from provision.image.seed import seed_files, seed_hash, seed_iso, seed_spec

from .helpers import SEED_FILES as FILES
from .helpers import SEED_KEY as KEY
from .helpers import SEED_NIC as NIC1
from .helpers import SEED_TRUNK as TRUNK
from .helpers import seed as spec


def read_iso(image: bytes) -> tuple[str, dict[str, dict[str, bytes]]]:
    """The volume id and, per name tree (joliet, rr), the files by name, read by pycdlib."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    trees: dict[str, dict[str, bytes]] = {}
    for tree in ("joliet", "rr"):
        (_, dirs, names), = iso.walk(**{f"{tree}_path": "/"})
        assert dirs == []
        trees[tree] = {}
        for name in names:
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, **{f"{tree}_path": f"/{name}"})
            trees[tree][name] = out.getvalue()
    iso.close()
    pvd = 16 * 2048  # the primary volume descriptor; its volume identifier at 40..71
    return image[pvd + 40:pvd + 72].decode().rstrip(), trees


def test_iso_is_labelled_cidata_and_holds_the_three_files_by_their_long_names() -> None:
    s = spec(NIC1, TRUNK, keys=(KEY,))
    volume, trees = read_iso(seed_iso(s))
    assert volume == "cidata"
    assert trees["joliet"] == trees["rr"] == seed_files(s)
    assert sorted(trees["rr"]) == list(FILES)
    meta = yaml.safe_load(trees["rr"]["meta-data"])
    assert meta == {"instance-id": s.instance_id, "local-hostname": "vm1"}


@pytest.fixture
def time_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


def test_same_spec_same_bytes_in_any_time_zone(time_zone: Any) -> None:
    s = spec(NIC1, TRUNK, keys=(KEY,), extras={"packages": ["iperf3"]})
    time_zone("UTC")
    first = seed_iso(s)
    # A POSIX zone 5:30 ahead (needs no tzdata): every date pycdlib stamps from the clock
    # would differ in its hour and its offset, so any date left unpinned shows.
    time_zone("XYZ-5:30")
    second = seed_iso(s)
    assert first == second
    assert seed_hash(s) == seed_hash(replace(s))


def test_every_date_in_the_iso_is_the_pinned_one() -> None:
    image = seed_iso(spec(NIC1, TRUNK))
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    for tree in ("iso", "joliet", "rr"):
        for name in [".", *FILES] if tree != "iso" else ["."]:
            path = "/" if name == "." else f"/{name}"
            record = iso.get_record(**{f"{tree}_path": path})
            assert (record.date.years_since_1900 + 1900, record.date.month,
                    record.date.day_of_month, record.date.hour, record.date.minute,
                    record.date.second, record.date.gmtoffset) == (*PINNED, 0)
    iso.close()


def test_a_changed_address_changes_the_hash_and_the_instance_id() -> None:
    before = spec(NIC1)
    after = spec(replace(NIC1, address="10.9.0.2/24"))
    assert after.instance_id != before.instance_id
    assert seed_hash(after) != seed_hash(before)
    assert spec(NIC1) == before  # and the same spec gives the same id


@pytest.mark.parametrize("change", [
    lambda: spec(replace(NIC1, queues=2)),
    lambda: spec(replace(NIC1, mtu=1500)),
    lambda: spec(NIC1, keys=(KEY,)),
    lambda: spec(NIC1, extras={"packages": ["iperf3"]}),
    lambda: seed_spec("vm2", (NIC1,)),
])
def test_whatever_the_seed_says_differently_gives_another_instance_id(change: Any) -> None:
    assert change().instance_id != spec(NIC1).instance_id


def test_the_iso_is_a_cidata_iso9660_filesystem_for_blkid(tmp_path: Path) -> None:
    blkid = shutil.which("blkid") or next(
        (p for p in ("/usr/sbin/blkid", "/sbin/blkid") if os.access(p, os.X_OK)), None)
    if blkid is None:
        pytest.skip("blkid is not installed")
    path = tmp_path / "seed.iso"
    path.write_bytes(seed_iso(spec(NIC1, TRUNK)))
    out = subprocess.run([blkid, "-p", "-o", "export", str(path)], capture_output=True,
                         text=True, check=True).stdout
    found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert found["LABEL"] == "cidata"
    assert found["TYPE"] == "iso9660"


def test_isoinfo_lists_the_long_names_in_both_trees(tmp_path: Path) -> None:
    isoinfo = shutil.which("isoinfo")
    if isoinfo is None:
        pytest.skip("isoinfo is not installed")
    path = tmp_path / "seed.iso"
    path.write_bytes(seed_iso(spec()))
    info = subprocess.run([isoinfo, "-d", "-i", str(path)], capture_output=True, text=True,
                          check=True).stdout
    assert "Volume id: cidata" in info
    for flag in ("-J", "-R"):
        listing = subprocess.run([isoinfo, flag, "-l", "-i", str(path)], capture_output=True,
                                 text=True, check=True).stdout
        assert {line.split()[-1] for line in listing.splitlines() if line.strip()} >= set(FILES)



def test_a_vm_without_nics_still_gets_a_seed() -> None:
    assert read_iso(seed_iso(seed_spec("vm1", ())))[0] == "cidata"
