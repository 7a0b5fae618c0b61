"""VMs that boot a disk image: their domain XML, their pool, overlay and seed, and how the
plan makes, keeps, replaces and removes them. Pure: built from a spec and a DiskImage."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from provision.core import domxml
from provision.core.changes import PHASES
from provision.core.desired import DesiredLab, desired_state
from provision.core.observed import ObservedPool
from provision.core.owner import Owner
from provision.core.plan import ConflictError, plan_changes, plan_teardown
from provision.core.spec import parse_lab
from provision.errors import SpecError
from provision.image.cache import DiskImage

from .helpers import IMAGE, caps, in_sync, lab_data

DEBIAN = DiskImage("debian", Path("/var/cache/virtio-lab/images/debian-1/disk.qcow2"),
                   "qcow2", "1" * 64, 2 << 30)


def _want(vm1_image: DiskImage = DEBIAN, **vm1: object) -> DesiredLab:
    data = lab_data()
    data["vms"][0].update({"image": "debian", **vm1})
    spec = parse_lab(data)
    return desired_state(spec, caps(), {"vm1": vm1_image, "vm2": IMAGE})


def _kinds(changes: list) -> list[tuple[str, str, str]]:
    return [(c.action, c.kind, c.target) for c in changes]


def test_a_disk_vm_boots_its_overlay_with_its_seed_and_no_kernel() -> None:
    want = _want()
    dom = next(d for d in want.domains if d.vm == "vm1")
    root = ET.fromstring(dom.xml)
    assert root.find("os/kernel") is None and root.find("os/cmdline") is None
    assert [b.get("dev") for b in root.findall("os/boot")] == ["hd"]  # libvirt's default too
    facts = domxml.domain_facts(dom.xml)
    assert [(d["volume"], d["target"], d["readonly"]) for d in facts["disks"]] == [
        ("vm1.qcow2", "vda", False), ("vm1-seed.iso", "vdb", True)]
    assert {d["pool"] for d in facts["disks"]} == {"virtio-lab-ut"}
    seed = next(v for v in want.volumes if v.kind == "seed")
    assert facts["owner"]["seed-hash"] == seed.content_hash
    assert facts["owner"]["image-hash"] == DEBIAN.content_hash and dom.cloud_init
    tiny = next(d for d in want.domains if d.vm == "vm2")
    assert domxml.domain_facts(tiny.xml)["disks"] == [] and not tiny.cloud_init


def test_only_a_lab_with_disk_vms_has_a_pool() -> None:
    want = _want()
    assert want.pool is not None and want.pool.owner == Owner("ut")
    assert [(v.name, v.kind) for v in want.volumes] == [("vm1.qcow2", "overlay"),
                                                        ("vm1-seed.iso", "seed")]
    overlay = want.volumes[0]
    assert overlay.backing == str(DEBIAN.path) and overlay.capacity == DEBIAN.virtual_size
    tiny_only = desired_state(parse_lab(lab_data()), caps(), IMAGE)
    assert tiny_only.pool is None and tiny_only.volumes == ()


def test_an_empty_host_gets_pool_then_volumes_before_the_domains() -> None:
    want = _want()
    from provision.core.observed import ObservedLab

    p = plan_changes(want, ObservedLab(want.lab, guests_observed=True))
    phases = [c.phase for c in p.changes]
    assert phases == sorted(phases, key=PHASES.index)
    vols = [c for c in p.changes if c.phase == "volumes"]
    assert _kinds(vols) == [("create", "pool", "virtio-lab-ut"),
                            ("create", "volume", "vm1.qcow2"),
                            ("create", "volume", "vm1-seed.iso")]
    assert all(c.desired is not None for c in vols)


def test_an_unchanged_disk_lab_plans_nothing() -> None:
    want = _want()
    assert plan_changes(want, in_sync(want)).in_sync


def test_a_new_base_image_remakes_the_overlay_and_replaces_the_domain() -> None:
    before = _want()
    newer = dataclasses.replace(DEBIAN, path=Path("/var/cache/x/debian-2/disk.qcow2"),
                                content_hash="2" * 64)
    p = plan_changes(_want(newer), in_sync(before))
    assert _kinds(p.changes) == [("replace", "volume", "vm1.qcow2"),
                                 ("replace", "domain", "ut-vm1")]
    assert "not the lab's image" in p.changes[0].reason


def test_a_changed_seed_is_a_new_instance_on_a_fresh_overlay() -> None:
    before = _want()
    data_ip = {"nics": [{"bridge": "br-ut", "vlan": 100, "queues": 4, "ip": "10.9.0.7/24"}]}
    p = plan_changes(_want(**data_ip), in_sync(before))
    assert sorted(_kinds(p.changes)) == [("replace", "domain", "ut-vm1"),
                                         ("replace", "volume", "vm1-seed.iso"),
                                         ("replace", "volume", "vm1.qcow2")]


def test_memory_alone_keeps_the_disks() -> None:
    p = plan_changes(_want(memory_mib=512), in_sync(_want()))
    assert _kinds(p.changes) == [("replace", "domain", "ut-vm1")]


def test_a_volume_removed_by_hand_is_made_again_and_its_vm_restarted() -> None:
    want = _want()
    seen = in_sync(want)
    del seen.volumes["vm1-seed.iso"]
    p = plan_changes(want, seen)
    assert _kinds(p.changes) == [("create", "volume", "vm1-seed.iso"),
                                 ("restart", "domain", "ut-vm1")]


def test_teardown_and_going_back_to_tiny_remove_volumes_then_the_pool() -> None:
    seen = in_sync(_want())
    down = plan_teardown(seen)
    storage = [c for c in down.changes if c.phase == "volumes-remove"]
    assert _kinds(storage) == [("delete", "volume", "vm1-seed.iso"),
                               ("delete", "volume", "vm1.qcow2"),
                               ("delete", "pool", "virtio-lab-ut")]
    assert storage[-1].before == {"path": seen.pools["virtio-lab-ut"].path}
    back = plan_changes(desired_state(parse_lab(lab_data()), caps(), IMAGE), seen)
    assert [c.kind for c in back.changes if c.phase == "volumes-remove"] == [
        "volume", "volume", "pool"]


def test_a_pool_of_the_name_the_lab_does_not_own_is_a_conflict() -> None:
    want = _want()
    seen = in_sync(want)
    seen.pools["virtio-lab-ut"] = ObservedPool("virtio-lab-ut", "/srv/pool", None, True)
    seen.volumes.clear()
    with pytest.raises(ConflictError, match="storage pool virtio-lab-ut: exists"):
        plan_changes(want, seen)
    assert not [c for c in plan_teardown(seen).changes if c.kind in ("pool", "volume")]


def test_cloud_init_extras_reach_the_seed_and_bad_ones_name_their_key() -> None:
    data = lab_data(cloud_init={"user_data": {"packages": ["tcpdump"]}})
    data["vms"][0].update({"image": "debian",
                           "cloud_init": {"user_data": {"hostname": "other"}}})
    with pytest.raises(SpecError) as exc:
        desired_state(parse_lab(data), caps(), {"vm1": DEBIAN, "vm2": IMAGE})
    assert exc.value.path.startswith("lab.vms[0].cloud_init.user_data")
    del data["vms"][0]["cloud_init"]
    want = desired_state(parse_lab(data), caps(), {"vm1": DEBIAN, "vm2": IMAGE})
    assert b"tcpdump" in next(v for v in want.volumes if v.kind == "seed").content
