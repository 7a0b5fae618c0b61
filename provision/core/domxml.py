"""Domain XML read back into one normal form, for the rendered and the live XML alike.

Comparing a raw template with libvirt's normalised XML gives spurious changes (units,
defaults, added elements). Both sides go through ``domain_facts()`` and only the facts the
lab controls are compared.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from provision.core.owner import metadata_from_domain

_UNITS = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "k": 1,
    "kib": 1,
    "m": 1024,
    "mib": 1024,
    "g": 1024**2,
    "gib": 1024**2,
}


def _kib(elem: ET.Element | None) -> int | None:
    if elem is None or elem.text is None:
        return None
    unit = elem.get("unit", "KiB").lower()
    return int(int(elem.text) * _UNITS.get(unit, 1))


def interface_facts(iface: ET.Element) -> dict[str, Any]:
    """What the lab controls on one ``<interface>``."""

    def attr(path: str, name: str) -> str | None:
        e = iface.find(path)
        return None if e is None else e.get(name)

    driver = iface.find("driver")
    return {
        "type": iface.get("type"),
        "mac": (attr("mac", "address") or "").lower(),
        "tap": attr("target", "dev"),
        "managed": attr("target", "managed"),
        "model": attr("model", "type"),
        "backend": None if driver is None else driver.get("name"),
        "queues": int(driver.get("queues", "1")) if driver is not None else 1,
        "rx_queue_size": attr("driver", "rx_queue_size"),
        "tx_queue_size": attr("driver", "tx_queue_size"),
        "host_csum": attr("driver/host", "csum"),
        "mtu": attr("mtu", "size"),
    }


def _disk_facts(disk: ET.Element) -> dict[str, Any]:
    """What the lab controls on one ``<disk>``: which volume of which pool, where."""
    source, target, driver = disk.find("source"), disk.find("target"), disk.find("driver")
    return {
        "device": disk.get("device"),
        "pool": None if source is None else source.get("pool"),
        "volume": None if source is None else source.get("volume"),
        "target": None if target is None else target.get("dev"),
        "bus": None if target is None else target.get("bus"),
        "format": None if driver is None else driver.get("type"),
        "readonly": disk.find("readonly") is not None,
    }


def domain_facts(xml: str) -> dict[str, Any]:
    """The normal form of a domain: the facts virtio-lab sets, nothing libvirt adds."""
    root = ET.fromstring(xml)
    return {
        "type": root.get("type"),
        "name": root.findtext("name"),
        # the QEMU binary, or the TCG wrapper of provision/host/tcg.py: a domain defined
        # before `host prepare` installed it is restarted onto it
        "emulator": (root.findtext("devices/emulator") or "").strip() or None,
        "memory_kib": _kib(root.find("memory")),
        "vcpus": int(root.findtext("vcpu") or 0),
        "kernel": root.findtext("os/kernel"),
        "initrd": root.findtext("os/initrd"),
        "cmdline": root.findtext("os/cmdline"),
        "owner": metadata_from_domain(root),  # lab, vm, spec-hash, image, backend
        "interfaces": [interface_facts(i) for i in root.findall("devices/interface")],
        "disks": [_disk_facts(d) for d in root.findall("devices/disk")],
        "agent_channel": any(
            t.get("name") == "org.qemu.guest_agent.0"
            for t in root.findall("devices/channel/target")
        ),
    }


def diff_facts(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ, with (before, after); interfaces compared per MAC."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(before) | set(after)):
        if key == "interfaces":
            continue
        if before.get(key) != after.get(key):
            out[key] = (before.get(key), after.get(key))
    old = {i["mac"]: i for i in before.get("interfaces", [])}
    new = {i["mac"]: i for i in after.get("interfaces", [])}
    for mac in sorted(set(old) | set(new)):
        a, b = old.get(mac), new.get(mac)
        if a is None or b is None:
            out[f"interface {mac}"] = (a, b)
            continue
        for key in sorted(a):
            if a[key] != b.get(key):
                out[f"interface {mac}.{key}"] = (a[key], b.get(key))
    return out
