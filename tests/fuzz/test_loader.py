"""The lab-file loader on generated input: a valid lab loads; anything else is a one-line
SpecError, in bounded time and memory. No daemons needed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from provision.errors import SpecError

from . import strategies as s
from .conftest import budget
from .oracle import check_spec_error, load, must_reject


@pytest.fixture(scope="module")
def lab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-loader") / "lab.yml"


def judge(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    verdict = load(path)
    if isinstance(verdict, SpecError):
        check_spec_error(verdict)
        return
    doc = yaml.safe_load(data)  # it loaded, so it parses
    why = must_reject(doc)
    assert not why["types"], f"the loader accepted wrong types: {why['types']}"
    assert not why["name"], f"the loader accepted a lab name with '-': {why['name']}"
    assert not why["address"], f"the loader accepted unusable addresses: {why['address']}"


@settings(max_examples=budget(60))
@given(lab=s.valid_labs(), flow=st.sampled_from([False, None, True]))
def test_valid_labs_load(lab_file: Path, lab: s.ValidLab, flow: bool | None) -> None:
    lab_file.write_bytes(s.dump(lab.doc, flow=flow))
    verdict = load(lab_file)
    assert not isinstance(verdict, SpecError), f"a valid lab was rejected: {verdict}"
    assert verdict.name == lab.name
    assert len(verdict.vms) == len(lab.lab.get("vms", []))


@settings(max_examples=budget(250))
@given(doc=s.mutated_docs(), flow=st.sampled_from([False, None]))
@example(doc=s.inventory({"name": "fz-a", "bridges": [{"name": "fzbr"}]}), flow=False)
@example(doc=s.inventory({"name": "fz", "bridges": [{"name": "fzbr"}],
                          "vms": [{"name": "vm", "vcpus": "2"}]}), flow=False)
@example(doc=s.inventory({"name": "fz", "bridges": [{"name": "fzbr"}], "vms": [
    {"name": "vm", "nics": [{"bridge": "fzbr", "ip": "10.0.0.0/24"}]}]}), flow=False)
def test_mutated_labs(lab_file: Path, doc: object, flow: bool | None) -> None:
    judge(lab_file, s.dump(doc, flow=flow))


@settings(max_examples=budget(200))
@given(data=s.mutated_bytes())
@example(data=s.SPECIAL_FILES["non-utf8"])
def test_mutated_lab_text(lab_file: Path, data: bytes) -> None:
    judge(lab_file, data)


@settings(max_examples=budget(100))
@given(data=st.binary(max_size=600))
def test_raw_bytes(lab_file: Path, data: bytes) -> None:
    judge(lab_file, data)


@pytest.mark.parametrize("name", sorted(s.SPECIAL_FILES))
def test_special_files(lab_file: Path, name: str) -> None:
    judge(lab_file, s.SPECIAL_FILES[name])


@pytest.mark.parametrize(("kind", "size_mib"), [("comment", 1), ("scalar", 2)])
def test_large_files(lab_file: Path, kind: str, size_mib: int) -> None:
    """A big file: loaded or refused within the example deadline (5 s)."""
    base = s.dump(s.inventory({"name": "fzbig", "bridges": [{"name": "fzbr"}]}))
    if kind == "comment":
        data = base + (b"# " + b"x" * 1022 + b"\n") * (size_mib * 1024)
    else:
        data = base.replace(b"name: fzbig", b"name: " + b"a" * (size_mib << 20))
    t0 = time.monotonic()
    judge(lab_file, data)
    assert time.monotonic() - t0 < 5, f"{size_mib} MiB took {time.monotonic() - t0:.1f} s"
