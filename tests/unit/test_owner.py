"""The three ownership encodings round-trip to one Owner; foreign tags are not owners."""

from __future__ import annotations

from provision.core import owner
from provision.core.owner import Owner


def test_each_encoding_round_trips() -> None:
    nic = Owner("demo", "vm1", 2)
    assert owner.from_tap_alias(nic.tap_alias()) == nic
    assert owner.from_external_ids(nic.external_ids()) == nic
    assert nic.tap_alias() == "virtio-lab:lab=demo vm=vm1 nic=2"
    bridge = Owner("demo")
    assert owner.from_external_ids(bridge.external_ids()) == bridge
    assert bridge.tap_alias() == "virtio-lab:lab=demo"
    assert owner.from_tap_alias(bridge.tap_alias()) == bridge
    meta = owner.metadata_from_element(
        "<owner><lab>demo</lab><vm>vm1</vm><spec-hash>ab</spec-hash></owner>")
    assert owner.from_metadata(meta) == Owner("demo", "vm1")


def test_foreign_tags_own_nothing() -> None:
    assert owner.from_tap_alias(None) is None
    assert owner.from_tap_alias("uplink to the lab switch") is None
    assert owner.from_tap_alias("virtio-lab:vm=vm1") is None
    assert owner.from_external_ids({"iface-id": "x", "attached-mac": "y"}) is None
    assert owner.from_metadata(None) is None and owner.from_metadata({"vm": "x"}) is None
    assert not owner.owned_by(None, "demo")
    assert not owner.owned_by(Owner("other"), "demo") and owner.owned_by(Owner("demo"), "demo")
