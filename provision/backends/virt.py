"""VMs through libvirt (libvirt-python): observe domains by their ownership metadata, define,
start, stop and remove them.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable

import libvirt

from provision.core import domxml
from provision.core.observed import ObservedDomain
from provision.core.owner import OWNER_NS, Owner, from_metadata, metadata_from_element
from provision.errors import HostError, OperationError

DEFAULT_URI = "qemu:///system"


def _silence(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; virtio-lab reports them itself."""


libvirt.registerErrorHandler(_silence, None)


def libvirt_uri() -> str:
    return os.environ.get("VIRTIO_LAB_LIBVIRT_URI", DEFAULT_URI)


def connect(uri: str | None = None) -> libvirt.virConnect:
    uri = uri or libvirt_uri()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HostError(
            f"libvirtd at {uri} does not answer ({exc.get_error_message()}); "
            "run `provision host prepare`"
        ) from None


def _owner(dom: libvirt.virDomain) -> Owner | None:
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OWNER_NS)
    except libvirt.libvirtError:
        return None
    return from_metadata(metadata_from_element(xml))


def observe_domains(
    conn: libvirt.virConnect, lab: str, wanted: Iterable[str] = ()
) -> dict[str, ObservedDomain]:
    """Domains the lab owns (by metadata), plus any domain holding a wanted name."""
    want = set(wanted)
    out: dict[str, ObservedDomain] = {}
    for dom in conn.listAllDomains():
        name = dom.name()
        owner = _owner(dom)
        if not ((owner and owner.lab == lab) or name in want):
            continue
        try:
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            running = bool(dom.isActive())
        except libvirt.libvirtError:
            continue  # vanished while we looked
        out[name] = ObservedDomain(name, owner, running, domxml.domain_facts(xml))
    return out


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        return None


def define(conn: libvirt.virConnect, xml: str, replaces: libvirt.virDomain | None = None
           ) -> libvirt.virDomain:
    """Define a domain; ``replaces``: the existing domain of that name, whose UUID the new
    definition keeps (libvirt refuses a second UUID for a name; the rendered XML has none)."""
    if replaces is not None:
        xml = with_uuid(xml, replaces.UUIDString())
    try:
        return conn.defineXML(xml)
    except libvirt.libvirtError as exc:
        name = domxml.domain_facts(xml)["name"]
        raise OperationError(
            f"domain {name}: libvirt refused the definition: {exc.get_error_message()}"
        ) from None


def with_uuid(xml: str, uuid: str) -> str:
    """The domain XML with ``<uuid>`` set (placed after ``<name>``, where libvirt keeps it)."""
    ET.register_namespace("vlab", OWNER_NS)  # keep the owner element's prefix as rendered
    root = ET.fromstring(xml)
    elem = root.find("uuid")
    if elem is None:
        elem = ET.Element("uuid")
        name = root.find("name")
        root.insert(list(root).index(name) + 1 if name is not None else 0, elem)
    elem.text = uuid
    return ET.tostring(root, encoding="unicode")


def start(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        return
    try:
        dom.create()
    except libvirt.libvirtError as exc:
        raise OperationError(
            f"domain {dom.name()}: cannot start: {exc.get_error_message()}"
        ) from None


def stop(dom: libvirt.virDomain) -> None:
    """Power off at once: lab guests hold no state worth a clean shutdown."""
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError as exc:
        if dom.isActive():
            raise OperationError(
                f"domain {dom.name()}: cannot stop: {exc.get_error_message()}"
            ) from None


def remove(dom: libvirt.virDomain) -> None:
    stop(dom)
    try:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise OperationError(
                f"domain {dom.name()}: cannot undefine: {exc.get_error_message()}"
            ) from None
