"""Reproducibility records on the real daemons: `up` records what a 1-VM lab resolved to here,
`provision record` prints it, `up --expect` with it changes nothing, `up --expect` with an
edited record refuses (exit 4, naming each difference) and changes nothing, `verify` reports
the same record, and `down` removes it.

The host is observed straight through libvirt, OVSDB (ovs-vsctl) and iproute2.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from .conftest import (
    force_cleanup,
    link,
    ovs_row,
    provision,
    provision_json,
    unique_name,
    write_lab,
)

pytestmark = pytest.mark.integration


@dataclass
class Lab:
    name: str
    path: Path
    workdir: Path  # where the test writes record files of its own
    up: dict[str, Any]  # `up --json` of the first up

    @property
    def domain(self) -> str:
        return f"{self.name}-vm1"

    @property
    def record_file(self) -> Path:
        """Where `up` keeps the record on this machine (see README, "Reproducibility")."""
        base = os.environ.get("VIRTIO_LAB_RECORDDIR") or "/var/lib/virtio-lab/records"
        return Path(base) / f"{self.name}.json"


@pytest.fixture(scope="module")
def lab(conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    name = unique_name()
    workdir = tmp_path_factory.mktemp("record")
    path = write_lab(workdir / f"{name}.yml", {
        "name": name,
        "bridges": [{"name": f"br-{name}"}],
        "vms": [{"name": "vm1", "vcpus": 2, "memory_mib": 256, "nics": [
            {"bridge": f"br-{name}", "vlan": 100, "ip": "10.78.0.1/24"}]}],
    })
    try:
        yield Lab(name, path, workdir, provision_json("up", str(path)))
    finally:
        force_cleanup(conn, name, path)


def host_state(conn: libvirt.virConnect, lab: Lab) -> dict[str, Any]:
    """What an `up` would change, read without virtio-lab: the domain (its id changes when it
    restarts), the tap, the OVS port and bridge, and the record file."""
    dom = conn.lookupByName(lab.domain)
    tap = link(f"{lab.name}-vm1-0")
    return {
        "domain": (dom.ID(), dom.XMLDesc(0)),
        "tap": tap and (tap["ifindex"], tap["flags"]),
        "port": ovs_row("Port", f"{lab.name}-vm1-0"),
        "bridge": ovs_row("Bridge", f"br-{lab.name}"),
        "record": (lab.record_file.read_bytes(), lab.record_file.stat().st_mtime_ns),
    }


def without_time(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "recorded_at"}


def test_up_records_what_the_lab_resolved_to(lab: Lab, conn: libvirt.virConnect) -> None:
    rec = provision_json("record", str(lab.path))
    assert json.loads(lab.record_file.read_text()) == rec == lab.up["record"]
    assert rec["schema"] == 1 and rec["lab"] == lab.name and rec["placement"] is None
    expected = "vhost-net" if Path("/dev/vhost-net").exists() else "userspace"
    assert rec["backend"] == lab.up["backend"] == expected
    assert rec["domain_type"] == lab.up["domain_type"]
    live = ET.fromstring(conn.lookupByName(lab.domain).XMLDesc(0))
    assert rec["vms"]["vm1"]["machine"] == live.find("os/type").get("machine")
    assert rec["domain_type"] == live.get("type")
    owner = live.find("metadata/{https://virtio-lab.dev/xmlns/owner/1}owner")
    assert rec["vms"]["vm1"]["image_hash"] == owner.findtext(
        "{https://virtio-lab.dev/xmlns/owner/1}image-hash")
    datapath = ovs_row("Bridge", f"br-{lab.name}")["datapath_type"]
    assert rec["bridges"] == {f"br-{lab.name}": {"datapath_type": datapath}}
    assert rec["host"]["kernel"] == os.uname().release
    assert all(rec["host"][k] for k in ("libvirt", "qemu", "ovs", "name"))


def test_up_expecting_its_own_record_changes_nothing(lab: Lab) -> None:
    expect = lab.workdir / "same.json"
    expect.write_text(provision("record", str(lab.path), "--json").stdout)
    again = provision_json("up", str(lab.path), "--expect", str(expect))
    assert again["changed"] is False and again["changes"] == []
    assert again["notes"] == []  # same host: not even an informative difference
    assert without_time(again["record"]) == without_time(json.loads(expect.read_text()))


def test_up_expecting_an_edited_record_refuses_and_changes_nothing(
    lab: Lab, conn: libvirt.virConnect
) -> None:
    rec = provision_json("record", str(lab.path))
    other = "userspace" if rec["backend"] == "vhost-net" else "vhost-net"
    edited = json.loads(json.dumps(rec))
    edited["backend"] = other
    edited["vms"]["vm1"]["image_hash"] = "0" * 64
    edited["host"]["qemu"] = "0.0.1"  # informative: named nowhere in the refusal
    expect = lab.workdir / "edited.json"
    expect.write_text(json.dumps(edited))
    before = host_state(conn, lab)
    proc = provision("up", str(lab.path), "--expect", str(expect), check=False)
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"provision: error: lab {lab.name}: this host would not build")
    assert str(expect) in lines[0] and "nothing was changed" in lines[0]
    assert lines[1:] == [
        f"  backend: record has {other}, this host would use {rec['backend']}",
        f"  vms.vm1.image_hash: record has 000000000000…, this host has "
        f"{rec['vms']['vm1']['image_hash'][:12]}…",
    ]
    assert proc.stdout == ""
    assert host_state(conn, lab) == before


def test_verify_reports_the_same_record(lab: Lab) -> None:
    junit = lab.workdir / "junit.xml"
    proc = provision("verify", str(lab.path), "--json", "-", "--junit", str(junit), check=False)
    report = json.loads(proc.stdout)
    rec = provision_json("record", str(lab.path))
    assert without_time(report["record"]) == without_time(rec)
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert json.loads(props["record"]) == report["record"]


def test_down_removes_the_record(lab: Lab) -> None:
    assert lab.record_file.exists()
    provision_json("down", str(lab.path))
    assert not lab.record_file.exists()
    proc = provision("record", str(lab.path), check=False)
    assert proc.returncode == 4 and f"provision up {lab.path}" in proc.stderr
