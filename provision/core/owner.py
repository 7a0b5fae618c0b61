"""Ownership: the names of the objects a lab owns, and the tags that say so.

Every object virtio-lab creates carries a tag naming its lab (and VM and NIC where that
applies), in the encoding its daemon offers:

- OVS rows (Bridge, Port, Interface): ``external_ids`` keys ``virtio-lab-lab``,
  ``virtio-lab-vm``, ``virtio-lab-nic``;
- taps: the interface alias ``virtio-lab:lab=L vm=V nic=N``;
- libvirt domains: a ``<vlab:owner>`` element in ``<metadata>`` (namespace ``OWNER_NS``) that
  also records the spec hash, the image and the backend the domain was rendered for.

This module writes and parses all three, and every parse returns the one ``Owner`` type.
Observation and teardown find objects by these tags only, never by name patterns. Pure.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

OWNER_NS = "https://virtio-lab.dev/xmlns/owner/1"
OWNER_LAB = "virtio-lab-lab"
OWNER_VM = "virtio-lab-vm"
OWNER_NIC = "virtio-lab-nic"
TAP_ALIAS_PREFIX = "virtio-lab:"
OWNER_KEYS = (OWNER_LAB, OWNER_VM, OWNER_NIC)


@dataclass(frozen=True)
class Owner:
    """Who owns an object: a lab, and for per-VM objects the VM and NIC index."""

    lab: str
    vm: str | None = None
    nic: int | None = None

    def external_ids(self) -> dict[str, str]:
        """The OVS ``external_ids`` that carry this owner."""
        ids = {OWNER_LAB: self.lab}
        if self.vm is not None:
            ids[OWNER_VM] = self.vm
        if self.nic is not None:
            ids[OWNER_NIC] = str(self.nic)
        return ids

    def tap_alias(self) -> str:
        """The tap interface alias (IFLA_IFALIAS) that carries this owner."""
        pairs = [("lab", self.lab), ("vm", self.vm), ("nic", self.nic)]
        return TAP_ALIAS_PREFIX + " ".join(f"{k}={v}" for k, v in pairs if v is not None)


def owned_by(owner: Owner | None, lab: str) -> bool:
    return owner is not None and owner.lab == lab


def _nic_index(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def from_external_ids(ids: dict[str, str]) -> Owner | None:
    """The owner an OVS row's ``external_ids`` name, or None when the row is not a lab's."""
    lab = ids.get(OWNER_LAB)
    if not lab:
        return None
    return Owner(lab, ids.get(OWNER_VM), _nic_index(ids.get(OWNER_NIC)))


def from_tap_alias(alias: str | None) -> Owner | None:
    """The owner a tap's alias names, or None when the tap is not a lab's."""
    if not alias or not alias.startswith(TAP_ALIAS_PREFIX):
        return None
    pairs = dict(item.partition("=")[::2] for item in alias[len(TAP_ALIAS_PREFIX) :].split())
    if not pairs.get("lab"):
        return None
    return Owner(pairs["lab"], pairs.get("vm"), _nic_index(pairs.get("nic")))


def metadata_from_domain_xml(xml: str) -> dict[str, str] | None:
    """The ``<vlab:owner>`` metadata of a domain's XML as a dict, None when it has none."""
    return metadata_from_domain(ET.fromstring(xml))


def metadata_from_domain(root: ET.Element) -> dict[str, str] | None:
    """``metadata_from_domain_xml`` of a domain's XML already parsed (its ``<domain>``)."""
    elem = root.find(f"metadata/{{{OWNER_NS}}}owner")
    if elem is None:
        return None
    return {child.tag.split("}", 1)[-1]: (child.text or "") for child in elem}


def metadata_from_element(xml: str) -> dict[str, str]:
    """The metadata as libvirt's ``virDomain.metadata()`` returns it (namespace stripped)."""
    return {child.tag.split("}", 1)[-1]: (child.text or "") for child in ET.fromstring(xml)}


def from_metadata(meta: dict[str, Any] | None) -> Owner | None:
    """The owner recorded in a domain's metadata, None when the domain is not a lab's."""
    if not meta or not meta.get("lab"):
        return None
    return Owner(str(meta["lab"]), meta.get("vm") or None)


# -- names of owned objects ----------------------------------------------------------------


def pool_name(lab: str) -> str:
    """The libvirt storage pool of a lab's overlays and seeds."""
    return f"virtio-lab-{lab}"


def domain_name(lab: str, vm: str) -> str:
    """The libvirt domain of a VM."""
    return f"{lab}-{vm}"


def tap_name(lab: str, vm: str, index: int) -> str:
    """The tap (and OVS port) of a NIC, at most 15 characters (IFNAMSIZ).

    Readable ``<lab>-<vm>-<n>`` when it fits, else ``vl`` plus a hash of lab/vm and the index.
    """
    name = f"{lab}-{vm}-{index}"
    if len(name) <= 15:
        return name
    digest = hashlib.sha256(f"{lab}/{vm}".encode()).hexdigest()
    suffix = f"-{index}"
    return "vl" + digest[: 13 - len(suffix)] + suffix


def nic_mac(lab: str, vm: str, index: int, explicit: str | None = None) -> str:
    """The NIC's MAC: the lab file's, or one derived from lab/vm/nic (stable across rebuilds)."""
    if explicit:
        return explicit
    digest = hashlib.sha256(f"{lab}/{vm}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])
