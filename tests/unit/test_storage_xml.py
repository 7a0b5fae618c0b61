"""The pool and volume XML handed to libvirt: built as elements, so any name or path is
escaped (text and attributes alike). Pure."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from provision.backends import storage
from provision.core.disks import DesiredPool, DesiredVolume
from provision.core.owner import Owner


def _same(got: str, want: str) -> bool:
    return ET.canonicalize(got) == ET.canonicalize(want)


def test_a_pool_is_a_dir_pool_at_its_path() -> None:
    pool = DesiredPool("virtio-lab-a&b", "/srv/a&b/volumes", Owner("a&b"))
    assert _same(storage._pool_xml(pool), "<pool type='dir'><name>virtio-lab-a&amp;b</name>"
                 "<target><path>/srv/a&amp;b/volumes</path></target></pool>")


def test_an_overlay_names_its_backing_file_and_format() -> None:
    vol = DesiredVolume("vm1.qcow2", "p", "vm1", "overlay", backing="/c/<base>.img",
                        backing_format="raw", capacity=1 << 30)
    assert _same(storage._overlay_xml(vol), (
        "<volume><name>vm1.qcow2</name><capacity unit='bytes'>1073741824</capacity>"
        "<target><format type='qcow2'/><permissions><mode>0600</mode></permissions></target>"
        "<backingStore><path>/c/&lt;base&gt;.img</path><format type='raw'/></backingStore>"
        "</volume>"))
    odd = DesiredVolume("v", "p", "vm1", "overlay", backing="/b", backing_format="q'\"<")
    fmt = ET.fromstring(storage._overlay_xml(odd)).find("backingStore/format")
    assert fmt is not None and fmt.get("type") == "q'\"<"


def test_a_seed_is_a_raw_volume_of_its_content_size() -> None:
    seed = DesiredVolume("vm1-seed.iso", "p", "vm1", "seed", content=b"x" * 1234)
    assert _same(storage._seed_xml(seed), (
        "<volume><name>vm1-seed.iso</name><capacity unit='bytes'>1234</capacity>"
        "<target><format type='raw'/><permissions><mode>0644</mode></permissions></target>"
        "</volume>"))
