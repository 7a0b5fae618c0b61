"""A lab that mixes a real cloud guest with tiny: virtio-lab's Debian image, given the way a
user gives a downloaded cloud image ({path, sha256}), boots from a qcow2 overlay of its own
through its bootloader, is configured by a NoCloud seed, and verifies like tiny.

Checked from outside virtio-lab: libvirt's pool and domain XML, qemu-img on the overlay, the
base's bytes, and the guest through libvirt's agent API. One debian VM (2 vCPUs, 2 queues,
an access NIC and a trunk NIC with a VLAN interface) and one tiny VM on the same VLANs.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from provision.image.cache import load_disk_image

from .conftest import (
    force_cleanup,
    guest_exec,
    provision,
    provision_json,
    run,
    unique_name,
    vsctl,
    write_lab,
)

pytestmark = pytest.mark.integration


@dataclass
class RealLab:
    name: str
    path: Path
    doc: dict[str, Any]
    base: Path
    base_hash: str


def real_lab(name: str, base: Path, digest: str) -> dict[str, Any]:
    br = f"br-{name}"
    return {"name": name, "bridges": [{"name": br}], "vms": [
        {"name": "deb", "vcpus": 2, "memory_mib": 512,
         "image": {"path": str(base), "sha256": digest},
         "cloud_init": {"user_data": {"write_files": [
             {"path": "/etc/virtio-lab-test", "content": "from the lab file\n"}]}},
         "nics": [{"bridge": br, "vlan": 10, "ip": "10.71.10.1/24"},
                  {"bridge": br, "queues": 1, "trunks": [{"vlan": 20, "ip": "10.71.20.1/24"}]}]},
        {"name": "tin", "vcpus": 1, "memory_mib": 128, "image": "tiny",
         "nics": [{"bridge": br, "vlan": 10, "ip": "10.71.10.2/24"},
                  {"bridge": br, "vlan": 20, "ip": "10.71.20.2/24"}]},
    ]}


@pytest.fixture(scope="module")
def lab(conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[RealLab]:
    image = load_disk_image("debian")
    name = unique_name()
    doc = real_lab(name, image.path, image.content_hash)
    path = write_lab(tmp_path_factory.mktemp("real") / f"{name}.yml", doc)
    try:
        result = provision_json("up", str(path))
        assert result["changed"]
        yield RealLab(name, path, doc, image.path, image.content_hash)
    finally:
        force_cleanup(conn, name, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_the_vm_boots_its_own_overlay_on_the_untouched_base(
        lab: RealLab, conn: libvirt.virConnect) -> None:
    dom = conn.lookupByName(f"{lab.name}-deb")
    root = ET.fromstring(dom.XMLDesc(0))
    assert root.find("os/kernel") is None, "a disk image boots through its own bootloader"
    pool = conn.storagePoolLookupByName(f"virtio-lab-{lab.name}")
    overlay = pool.storageVolLookupByName("deb.qcow2").path()
    sources = [d.find("source") for d in root.findall("devices/disk")]
    assert [s.get("volume") for s in sources] == ["deb.qcow2", "deb-seed.iso"]
    info = json.loads(run("qemu-img", "info", "-U", "--output=json", overlay).stdout)
    # the lab's file was copied into the cache once, checked; the overlay backs onto that
    cached = Path(info["backing-filename"])
    assert cached.parent.name == lab.base_hash and cached.parent.parent.name == "disks"
    assert info["format"] == "qcow2" and _sha256(cached) == lab.base_hash
    assert info["actual-size"] < 256 << 20, "an overlay, not a copy of the base"
    seed = pool.storageVolLookupByName("deb-seed.iso").path()
    assert "LABEL=\"cidata\"" in run("blkid", seed).stdout
    assert _sha256(lab.base) == lab.base_hash


def test_the_seed_configured_the_guest(lab: RealLab, conn: libvirt.virConnect) -> None:
    dom = conn.lookupByName(f"{lab.name}-deb")
    assert guest_exec(dom, "/bin/hostname").strip() == "deb"
    assert guest_exec(dom, "/bin/cat", "/etc/virtio-lab-test") == "from the lab file\n"
    status = guest_exec(dom, "/bin/sh", "-c", "cloud-init status --long")
    assert "status: done" in status, status
    addrs = " ".join(guest_exec(dom, "/bin/sh", "-c", "ip -o -4 addr show").split())
    assert "inet 10.71.10.1/24" in addrs and "inet 10.71.20.1/24" in addrs, addrs
    ifaces = json.loads(guest_exec(dom, "/bin/sh", "-c", "ip -j link show"))
    for i, want in ((0, 2), (1, 1)):  # the NIC by its MAC (its VLAN interface has a link)
        nic = next(n for n in ifaces if n.get("address") == _mac(dom, i) and "link" not in n)
        out = guest_exec(dom, "/bin/sh", "-c", f"ethtool -l {nic['ifname']}")
        combined = [int(line.split()[1]) for line in out.splitlines()
                    if line.startswith("Combined:")]
        assert combined == [want, want], (nic["ifname"], out)  # maximum, current


def _mac(dom: libvirt.virDomain, index: int) -> str:
    ifaces = ET.fromstring(dom.XMLDesc(0)).findall("devices/interface")
    return ifaces[index].find("mac").get("address")


def test_verify_passes_inside_the_real_guest_and_tiny(lab: RealLab) -> None:
    proc = provision("verify", str(lab.path), "--json", "-", check=False)
    report = json.loads(proc.stdout)
    failed = [(c["name"], c["target"], c["detail"]) for c in report["checks"]
              if c["status"] == "fail"]
    assert proc.returncode == 0 and not failed, failed
    by = {(c["name"], c["target"]): c["status"] for c in report["checks"]}
    n = lab.name
    for check in ("guest.nic", "queues"):
        assert by[(check, f"{n}/deb/0")] == "pass", check
    assert "pass" in {by.get(("l4.tcp", f"{n}/deb/0->{n}/tin/0")),
                      by.get(("l4.tcp", f"{n}/tin/0->{n}/deb/0"))}


def test_a_second_up_changes_nothing(lab: RealLab) -> None:
    again = provision_json("up", str(lab.path))
    assert again["changed"] is False and again["changes"] == []


def test_a_changed_seed_is_a_new_instance_and_the_guest_follows(
        lab: RealLab, conn: libvirt.virConnect) -> None:
    lab.doc["vms"][0]["nics"][0]["ip"] = "10.71.10.9/24"
    write_lab(lab.path, lab.doc)
    plan = provision_json("plan", str(lab.path), expect=2)
    kinds = sorted((c["action"], c["kind"], c["target"]) for c in plan["changes"])
    assert kinds == [("replace", "domain", f"{lab.name}-deb"),
                     ("replace", "volume", "deb-seed.iso"), ("replace", "volume", "deb.qcow2")]
    provision_json("up", str(lab.path))
    dom = conn.lookupByName(f"{lab.name}-deb")
    addrs = " ".join(guest_exec(dom, "/bin/sh", "-c", "ip -o -4 addr show").split())
    assert "inet 10.71.10.9/24" in addrs and "10.71.10.1/" not in addrs, addrs


def test_a_wrong_hash_is_refused_before_any_change(lab: RealLab, tmp_path: Path) -> None:
    doc = json.loads(json.dumps(lab.doc))
    doc["vms"][0]["image"]["sha256"] = "0" * 64
    doc["name"] = f"{lab.name}x"
    path = write_lab(tmp_path / "wrong.yml", doc)
    proc = provision("up", str(path), check=False)
    assert proc.returncode == 3, proc.stderr
    assert "lab.vms[0].image.sha256" in proc.stderr and lab.base_hash in proc.stderr
    assert f"br-{lab.name}x" not in vsctl("list-br").split()


def test_down_removes_overlays_and_pool_and_keeps_the_base(
        lab: RealLab, conn: libvirt.virConnect) -> None:
    provision_json("down", str(lab.path))
    names = [p.name() for p in conn.listAllStoragePools()]
    assert f"virtio-lab-{lab.name}" not in names
    assert not Path(f"/var/lib/virtio-lab/pools/{lab.name}").exists()
    assert _sha256(lab.base) == lab.base_hash
