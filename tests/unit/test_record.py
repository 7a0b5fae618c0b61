"""Reproducibility records: their shape and stability, what must match and what only informs,
record files that are not records, and the command lines around them (no daemon needed)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.cli.main import main
from provision.core.desired import desired_state
from provision.engine import record_store
from provision.engine.lab import LabResult
from provision.engine.record import (
    SCHEMA,
    HostFacts,
    RecordMismatch,
    check_expected,
    check_record,
    lab_record,
    record_diff,
    record_notes,
    record_rows,
)
from provision.errors import SpecError
from provision.verify.model import Check, VerifyReport
from provision.verify.output import junit_xml

from .helpers import IMAGE, caps, lab, lab_data

FACTS = HostFacts(name="lab1", kernel="6.1.0-28-amd64", libvirt="9.0.0", qemu="7.2.0",
                  ovs="3.1.0", at="2025-01-31T12:00:00Z")


def make_record(**host: bool) -> dict[str, Any]:
    spec = lab()
    return lab_record(desired_state(spec, caps(**host), IMAGE), spec, FACTS)


def edited(rec: dict[str, Any], key: str, value: object) -> dict[str, Any]:
    """A deep copy of ``rec`` with the dotted ``key`` set to ``value``."""
    out = copy.deepcopy(rec)
    *parents, last = key.split(".")
    node = out
    for part in parents:
        node = node[part]
    node[last] = value
    return out


# -- shape and stability ---------------------------------------------------------------------
def test_a_record_holds_what_the_lab_resolved_to_here() -> None:
    rec = make_record()
    assert rec["schema"] == SCHEMA and rec["lab"] == "ut" and rec["placement"] is None
    assert (rec["backend"], rec["domain_type"]) == ("userspace", "qemu")
    assert rec["bridges"] == {"br-ut": {"datapath_type": "netdev"}}
    assert set(rec["vms"]) == {"vm1", "vm2"}
    vm1 = rec["vms"]["vm1"]
    assert vm1["image"] == "tiny" and vm1["image_hash"] == IMAGE.content_hash
    assert vm1["machine"] == "pc" and vm1["emulator"] == "/usr/bin/qemu-system-x86_64"
    assert len(vm1["spec_hash"]) == 16 and vm1["spec_hash"] != rec["vms"]["vm2"]["spec_hash"]
    assert rec["host"] == {"name": "lab1", "kernel": "6.1.0-28-amd64", "libvirt": "9.0.0",
                           "qemu": "7.2.0", "ovs": "3.1.0"}
    assert rec["recorded_at"] == FACTS.at


def test_a_production_host_records_vhost_net_kvm_and_the_kernel_datapath() -> None:
    rec = make_record(vhost=True, kvm=True, ovs_kernel=True)
    assert (rec["backend"], rec["domain_type"]) == ("vhost-net", "kvm")
    assert rec["bridges"]["br-ut"]["datapath_type"] == "system"


def test_the_same_inputs_give_the_same_record_in_the_same_order() -> None:
    first, second = make_record(), make_record()
    assert first == second
    text = json.dumps(first)  # insertion order, as json.dumps writes it by default
    assert text == json.dumps(second) == json.dumps(first, sort_keys=True)
    assert json.loads(text) == first  # plain JSON: nothing lost on the way


def test_the_placement_and_the_spec_change_the_record() -> None:
    spec = lab(vms=[lab_data()["vms"][0]])
    rec = lab_record(desired_state(spec, caps(), IMAGE), spec, FACTS, placement="hv1")
    assert rec["placement"] == "hv1" and set(rec["vms"]) == {"vm1"}
    assert rec["spec_hash"] != make_record()["spec_hash"]


# -- differences -----------------------------------------------------------------------------
def test_a_record_matches_itself() -> None:
    rec = make_record()
    assert record_diff(rec, rec) == [] and record_notes(rec, rec) == []


MUST_MATCH = [
    ("lab", "other", "the lab file here names ut"),
    ("placement", "hv2", "this run places no --host (every VM)"),
    ("spec_hash", "ffffffffffffffff", "the lab file here has"),
    ("backend", "vhost-net", "record has vhost-net, this host would use userspace"),
    ("domain_type", "kvm", "record has kvm, this host would use qemu"),
    ("bridges.br-ut.datapath_type", "system", "record has system, this host would use netdev"),
    ("vms.vm1.image", "debian", "record has debian, the lab file here names tiny"),
    ("vms.vm1.image_hash", "3f2a" + "1" * 60, "record has 3f2a11111111…, this host has"),
    ("vms.vm2.spec_hash", "0123456789abcdef", "the lab file here has"),
    ("vms.vm1.machine", "pc-i440fx-8.2", "record has pc-i440fx-8.2, this host would use pc"),
]


@pytest.mark.parametrize(("key", "value", "words"), MUST_MATCH, ids=[m[0] for m in MUST_MATCH])
def test_each_must_match_field_is_a_difference_naming_it(key: str, value: str,
                                                         words: str) -> None:
    here = make_record()
    (line,) = record_diff(edited(here, key, value), here)
    assert line.startswith(f"{key}: record has ") and words in line, line
    assert record_notes(edited(here, key, value), here) == []


INFORMATIVE = ["host.name", "host.kernel", "host.libvirt", "host.qemu", "host.ovs",
               "vms.vm2.emulator"]


@pytest.mark.parametrize("key", INFORMATIVE)
def test_informative_fields_are_notes_not_differences(key: str) -> None:
    here = make_record()
    there = edited(here, key, "7.2.1")
    assert record_diff(there, here) == []
    (note,) = record_notes(there, here)
    assert note.startswith(f"{key}: record has 7.2.1, this host ")


def test_the_time_of_a_record_is_never_compared() -> None:
    here = make_record()
    there = edited(here, "recorded_at", "1999-12-31T23:59:59Z")
    assert record_diff(there, here) == [] and record_notes(there, here) == []


def test_a_vm_or_bridge_on_one_side_only_is_one_line() -> None:
    here = make_record()
    there = copy.deepcopy(here)
    there["vms"]["db"] = there["vms"].pop("vm2")
    there["bridges"] = {}
    assert record_diff(there, here) == [
        "bridges.br-ut: this host would build it, the record has none",
        "vms.db: the record has it, this host would not build it",
        "vms.vm2: this host would build it, the record has none",
    ]


def test_hashes_are_cut_just_past_where_they_differ() -> None:
    here = make_record()
    late = IMAGE.content_hash[:40] + "f" * 24  # differs only at character 41
    (line,) = record_diff(edited(here, "vms.vm1.image_hash", late), here)
    assert f"record has {late[:41]}…, this host has {IMAGE.content_hash[:41]}…" in line


def test_up_expect_refuses_with_one_line_per_difference_and_notes_the_rest() -> None:
    here = make_record()
    there = edited(edited(here, "vms.vm1.image_hash", "9b1c" + "0" * 60), "backend",
                   "vhost-net")
    with pytest.raises(RecordMismatch) as caught:
        check_expected(edited(there, "host.qemu", "7.2.1"), here, "old.json")
    lines = str(caught.value).splitlines()
    assert caught.value.exit_code == 4 and caught.value.multiline
    assert len(lines) == 3 and "old.json" in lines[0] and "nothing was changed" in lines[0]
    assert lines[1].startswith("  backend: record has vhost-net")
    assert lines[2].startswith("  vms.vm1.image_hash: record has 9b1c")
    assert check_expected(edited(here, "host.qemu", "7.2.1"), here, "old.json") == [
        "old.json: host.qemu: record has 7.2.1, this host has 7.2.0"]


def test_a_hand_edited_value_cannot_add_lines_or_escapes() -> None:
    here = make_record()
    with pytest.raises(RecordMismatch) as caught:
        check_expected(edited(here, "backend", "vhost\n\x1b[2Jnet"), here, "x.json")
    lines = str(caught.value).splitlines()
    assert len(lines) == 2 and "\\n\\x1b[2Jnet" in lines[1]


# -- records that are not records -----------------------------------------------------------
MALFORMED = [
    ([], "", "is a list, where a record has a JSON object"),
    ({}, "", "has no key schema"),
    ("schema", 2, "schema: is the number 2; this virtio-lab reads records of schema 1"),
    ("schema", "1", "schema: is the string '1'"),
    ("schema", True, "schema: is true, a boolean"),
    ("backend", 5, "backend: is the number 5, where a record has a string"),
    ("placement", ["hv1"], "placement: is a list, where a record has a string or null"),
    ("bridges", [], "bridges: is a list, where a record has a JSON object"),
    ("vms.vm1", None, "vms.vm1: is null, where a record has a JSON object"),
    ("vms.vm1.image_hash", 5, "vms.vm1.image_hash: is the number 5"),
    ("host.qemu", None, "host.qemu: is null, where a record has a string"),
    ("vms.vm1.imagehash", "x", "vms.vm1.imagehash: is not a key of a record"),
    ("colour", "blue", "colour: is not a key of a record"),
]


@pytest.mark.parametrize(("key", "value", "words"), MALFORMED,
                         ids=[f"{m[0]}={m[1]!r}" for m in MALFORMED])
def test_a_record_that_is_not_one_is_a_spec_error_naming_the_key(key: object, value: object,
                                                                  words: str) -> None:
    data = key if not isinstance(key, str) else edited(make_record(), key, value)
    with pytest.raises(SpecError) as caught:
        record_diff(data, make_record(), "old.json")  # type: ignore[arg-type]
    assert caught.value.exit_code == 3
    assert str(caught.value).startswith("old.json: ") and words in str(caught.value)


def test_a_missing_key_is_named() -> None:
    data = make_record()
    del data["vms"]["vm1"]["machine"]
    with pytest.raises(SpecError, match=r"^r\.json: vms\.vm1\.machine: missing"):
        check_record(data, "r.json")


# -- record files ----------------------------------------------------------------------------
@pytest.fixture
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(record_store.RECORDDIR_ENV, str(tmp_path / "records"))
    return tmp_path / "records"


def test_a_record_is_written_whole_read_back_and_removed(records: Path) -> None:
    rec = make_record()
    record_store.save_record(rec)
    assert os.listdir(records) == ["ut.json"]  # no temporary file left beside it
    assert record_store.load_record("ut") == rec == record_store.read_record(records / "ut.json")
    assert (records / "ut.json").read_text() == json.dumps(rec, indent=2, sort_keys=True) + "\n"
    record_store.remove_record("ut")
    record_store.remove_record("ut")  # gone already: nothing to say
    assert os.listdir(records) == []


def test_no_record_is_exit_4_saying_to_run_up(records: Path) -> None:
    with pytest.raises(record_store.HostError, match=r"run `provision up x\.yml`") as caught:
        record_store.load_record("ut", "x.yml")
    assert caught.value.exit_code == 4


def test_a_record_that_cannot_be_written_is_a_warning(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(record_store.RECORDDIR_ENV, str(blocker / "records"))
    with pytest.warns(record_store.RecordWarning, match="is up, but its record was not"):
        record_store.save_record(make_record())


def test_a_namespace_hypervisor_keeps_records_in_its_state_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from provision.host import statedir
    monkeypatch.delenv(record_store.RECORDDIR_ENV, raising=False)
    monkeypatch.setattr(statedir, "inside_hypervisor", lambda: "hv2")
    assert record_store.record_dir() == Path("/var/lib/virtio-lab/hypervisors/hv2/records")
    monkeypatch.setattr(statedir, "inside_hypervisor", lambda: "../../etc")
    assert record_store.record_dir() == Path(record_store.DEFAULT_RECORDDIR)
    monkeypatch.setattr(statedir, "inside_hypervisor", lambda: None)
    assert record_store.record_dir() == Path(record_store.DEFAULT_RECORDDIR)


@pytest.mark.parametrize(("content", "words"), [
    (None, "cannot read the record: No such file or directory"),
    (b"{\"schema\": 1", "is not JSON (line 1 column 13"),
    (b"\xff\xfe", "is not UTF-8 text (byte 0)"),
    (b"[" * 100_000, "its JSON nests too deep"),
    (b" " * (record_store.MAX_BYTES + 1), "too big for a record"),
])
def test_a_record_file_that_is_not_a_record_names_the_file(
    tmp_path: Path, content: bytes | None, words: str
) -> None:
    path = tmp_path / "rec.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SpecError) as caught:
        record_store.read_record(path, "--expect")
    assert str(caught.value).startswith(f"--expect {path}: ") and words in str(caught.value)


def test_a_directory_or_fifo_is_not_a_record_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        with pytest.raises(SpecError, match="is not a regular file"):
            record_store.read_record(path)


def test_rows_show_every_field_and_whether_it_must_match() -> None:
    rows = {key: (value, must) for key, value, must in record_rows(make_record())}
    assert rows["placement"] == ("no --host (every VM)", True)
    assert rows["vms.vm1.image_hash"] == (IMAGE.content_hash, True)
    assert rows["vms.vm1.emulator"][1] is False and rows["host.qemu"] == ("7.2.0", False)
    assert list(rows)[-1] == "recorded_at"


# -- up, verify and the command line ----------------------------------------------------------
def test_up_and_verify_reports_carry_the_record() -> None:
    rec = make_record()
    assert LabResult("ut", None, False, record=rec).record == rec  # type: ignore[arg-type]
    report = VerifyReport("ut", "userspace", [Check("domain.xml", "ut/vm1", "pass", "ok")],
                          record=rec)
    assert report.to_dict()["record"] == rec
    xml = junit_xml(report)
    assert '<property name="record" value="{&quot;backend&quot;' in xml
    assert VerifyReport("ut", "userspace").to_dict()["record"] is None


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, records: Path) -> Path:
    """No daemon answers; locks and records go to a temporary directory."""
    monkeypatch.setenv("VIRTIO_LAB_LIBVIRT_URI", "qemu+unix:///system?socket=/nonexistent/s")
    monkeypatch.setenv("VIRTIO_LAB_OVSDB", "unix:/nonexistent/db.sock")
    monkeypatch.setenv("VIRTIO_LAB_RUNDIR", str(tmp_path / "run"))
    doc = {"all": {"hosts": {"localhost": {}, "hv1": {}}, "vars": {"lab": lab_data()}}}
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("content", "words"), [
    (None, "No such file or directory"),
    (b"not json", "is not JSON"),
    (b'{"schema": 1}', "lab: missing"),
])
def test_up_with_a_bad_expect_file_is_exit_3_naming_it_and_does_nothing(
    capsys: pytest.CaptureFixture[str], nowhere: Path, content: bytes | None, words: str
) -> None:
    expect = nowhere.with_name("old.json")
    if content is not None:
        expect.write_bytes(content)
    for json_flag in ([], ["--json"]):
        code, out, err = run(capsys, "up", str(nowhere), "--expect", str(expect), *json_flag)
        assert code == 3, err
        assert err.startswith(f"provision: error: --expect {expect}: ") and words in err
        assert len(err.splitlines()) == 1 and (out == "") == (json_flag == [])
    # checked before the lab file, the lock or a daemon: none of them was reached
    assert not (nowhere.parent / "run").exists()
    code, _, err = run(capsys, "up", str(nowhere.with_name("nolab.yml")), "--expect",
                       str(expect))
    assert code == 3 and f"--expect {expect}" in err


def test_up_with_a_good_expect_file_goes_on_to_the_host(capsys: pytest.CaptureFixture[str],
                                                        nowhere: Path) -> None:
    expect = nowhere.with_name("old.json")
    expect.write_text(json.dumps(make_record()))
    code, _, err = run(capsys, "up", str(nowhere), "--expect", str(expect))
    assert code == 4 and "libvirtd" in err  # it got as far as asking the daemons


def test_record_without_a_record_is_exit_4_saying_to_run_up(
    capsys: pytest.CaptureFixture[str], nowhere: Path
) -> None:
    code, out, err = run(capsys, "record", str(nowhere), "--json")
    assert code == 4 and f"run `provision up {nowhere}`" in err
    assert json.loads(out)["exit_code"] == 4


def test_record_prints_the_record_as_json_and_as_a_table(
    capsys: pytest.CaptureFixture[str], nowhere: Path
) -> None:
    rec = make_record()
    record_store.save_record(rec)
    code, out, _ = run(capsys, "record", str(nowhere), "--json")
    assert code == 0 and json.loads(out) == rec
    code, out, _ = run(capsys, "record", str(nowhere))
    assert code == 0 and "vms.vm1.image_hash" in out and "must match" in out
    assert "lab file has changed" not in out


def test_record_names_a_changed_lab_file_and_another_placement(
    capsys: pytest.CaptureFixture[str], nowhere: Path
) -> None:
    record_store.save_record(edited(make_record(), "spec_hash", "0" * 16))
    code, out, _ = run(capsys, "record", str(nowhere))
    assert code == 0 and "note: the lab file has changed since" in out
    code, _, err = run(capsys, "record", str(nowhere), "--host", "hv1")
    assert code == 4 and "no --host (every VM), not --host hv1" in err
    code, _, err = run(capsys, "record", str(nowhere), "--host", "hv9")
    assert code == 3 and "--host: 'hv9' is not a host of the inventory" in err


def test_a_refusal_keeps_one_line_per_difference_on_stderr_and_in_json(
    capsys: pytest.CaptureFixture[str], nowhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provision.engine import lab as engine_lab

    here = make_record()
    there = edited(edited(here, "backend", "vhost-net"), "vms.vm1.image", "debian")

    def refuse(*_args: object, **kw: Any) -> None:  # what up_lab does with this expect
        check_expected(kw["expect"], here, kw["expect_source"])

    monkeypatch.setattr(engine_lab, "up_lab", refuse)
    expect = nowhere.with_name("old.json")
    expect.write_text(json.dumps(there))
    code, out, err = run(capsys, "up", str(nowhere), "--expect", str(expect), "--json")
    assert code == 4
    assert err.splitlines()[1:] == ["  backend: record has vhost-net, this host would use "
                                    "userspace", "  vms.vm1.image: record has debian, the lab "
                                    "file here names tiny"]
    assert json.loads(out)["error"].count("\n") == 2
