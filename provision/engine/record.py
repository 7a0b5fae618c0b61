"""Reproducibility records: what a lab resolved to on this host, to hand to someone.

``lab_record()`` computes a record from the desired state (``DesiredLab``: the backend, each
bridge's datapath type, the domain type, and per VM what its rendered XML says: the owner
metadata's image, image hash and spec hash, the machine type and the emulator) and from
``HostFacts`` (host name, kernel, libvirt, QEMU and OVS versions, the time). It is a plain
dict, JSON-stable (every mapping sorted by key), with a ``schema`` version. `up` writes it
after it succeeds and `down` removes it (``record_store``: where, and how); `verify` reports
the same record, computed the same way; `up --expect FILE` compares this host's record with
FILE before any change (``check_expected``).

What must match for "this host would build the same lab", and why (``record_diff``):

- ``lab``, ``placement`` (``--host``), ``spec_hash`` and each VM's ``spec_hash``: the same lab
  file, placed the same way; a different one is a different lab.
- ``vms.*.image`` and ``vms.*.image_hash``: the guest itself (the tiny image is built from
  this host's packages, so a newer kernel package makes another guest).
- ``backend`` (vhost-net or userspace) and ``bridges.*.datapath_type`` (system or netdev):
  they decide the data path the lab exists to exercise: another path is another experiment
  (netdev bridges also turn checksum offload off in the guest).
- ``domain_type`` (kvm or qemu): TCG and KVM guests differ in timing, and only KVM domains can
  have vhost-net.
- ``vms.*.machine``: QEMU's versioned machine types (``pc-i440fx-7.2``) pin the guest ABI,
  including the virtio-net features offered (newer machine types add offloads such as USO).
  Another machine type is other guest hardware, even from the same lab file.

What informs only (``record_notes``: `up --expect` prints these as notes and proceeds):

- ``host.qemu``, ``host.libvirt``, ``host.ovs``, ``host.kernel``: the same versioned machine
  type gives the same guest ABI whatever the QEMU patch level (that is what machine types are
  for); libvirt only carries out the XML we render; what the kernel and OVS decide for a lab
  is already in ``backend`` and ``datapath_type``.
- ``host.name`` and ``vms.*.emulator`` (the QEMU binary's path: distributions differ).
- ``recorded_at`` is never compared: it always differs.

Not recorded: tunnels (their peers' addresses are inventory variables, not the lab file).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from provision.core.desired import DesiredLab
from provision.core.owner import metadata_from_domain_xml
from provision.core.spec import Lab, spec_hash
from provision.errors import MAX_PATH, HostError, SpecError, one_line

if TYPE_CHECKING:
    import libvirt

    from provision.backends.ovs import Ovs

SCHEMA = 1  # the record's layout; another layout is another number
FIX = "pass a record written by `provision record LAB --json`"
NO_HOST = "no --host (every VM)"  # how a placement of None reads

# Per field: its name, whether it must match, and how a difference words this host's side.
Field = tuple[str, bool, str]
TOP: tuple[Field, ...] = (
    ("lab", True, "the lab file here names"),
    ("placement", True, "this run places"),
    ("spec_hash", True, "the lab file here has"),
    ("backend", True, "this host would use"),
    ("domain_type", True, "this host would use"),
)
BRIDGE: tuple[Field, ...] = (("datapath_type", True, "this host would use"),)
VM: tuple[Field, ...] = (
    ("image", True, "the lab file here names"),
    ("image_hash", True, "this host has"),
    ("spec_hash", True, "the lab file here has"),
    ("machine", True, "this host would use"),
    ("emulator", False, "this host would use"),
)
HOST: tuple[Field, ...] = (
    ("name", False, "this host is"),
    ("kernel", False, "this host has"),
    ("libvirt", False, "this host has"),
    ("qemu", False, "this host has"),
    ("ovs", False, "this host has"),
)
SECTIONS: tuple[tuple[str, tuple[Field, ...]], ...] = (("bridges", BRIDGE), ("vms", VM))


@dataclass(frozen=True)
class HostFacts:
    """What a record says about the host beside the lab: informative, never refused."""

    name: str  # the host name (a namespace hypervisor's own)
    kernel: str  # os.uname().release
    libvirt: str  # libvirtd's version, "9.0.0"; "" unknown
    qemu: str  # the QEMU libvirt drives, "7.2.0"; "" unknown
    ovs: str  # Open_vSwitch.ovs_version, "3.1.0"; "" unknown
    at: str  # when they were read, UTC, "2025-01-31T12:00:00Z"


def host_facts(conn: libvirt.virConnect, ovs: Ovs) -> HostFacts:
    """This host's facts, read from the open libvirt and OVSDB connections."""
    import libvirt

    def version(read: Any) -> str:
        with contextlib.suppress(libvirt.libvirtError):
            n = int(read())
            return f"{n // 1000000}.{n // 1000 % 1000}.{n % 1000}"
        return ""

    return HostFacts(socket.gethostname(), os.uname().release, version(conn.getLibVersion),
                     version(conn.getVersion), ovs.ovs_version(),
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def lab_record(want: DesiredLab, lab: Lab, facts: HostFacts, placement: str | None = None
               ) -> dict[str, Any]:
    """The record of ``lab`` as ``want`` resolves it here; the same inputs give the same
    record. ``placement``: the ``--host`` the lab was placed with (None: every VM here)."""
    bridges = {b.name: {"datapath_type": b.datapath_type} for b in want.bridges}
    vms = {d.vm: _vm_record(d.xml) for d in want.domains}
    host = {k: v for k, v in asdict(facts).items() if k != "at"}
    return {
        "backend": want.backend,
        "bridges": dict(sorted(bridges.items())),
        "domain_type": want.domain_type,
        "host": dict(sorted(host.items())),
        "lab": want.lab,
        "placement": placement,
        "recorded_at": facts.at,
        "schema": SCHEMA,
        "spec_hash": spec_hash(lab),
        "vms": dict(sorted(vms.items())),
    }


def _vm_record(xml: str) -> dict[str, str]:
    meta = metadata_from_domain_xml(xml) or {}
    root = ET.fromstring(xml)
    os_type = root.find("os/type")
    return {
        "emulator": root.findtext("devices/emulator", "").strip(),
        "image": meta.get("image", ""),
        "image_hash": meta.get("image-hash", ""),
        "machine": os_type.get("machine", "") if os_type is not None else "",
        "spec_hash": meta.get("spec-hash", ""),
    }


# -- comparing ----------------------------------------------------------------------------
def record_diff(expected: dict[str, Any], actual: dict[str, Any],
                source: str = "the record") -> list[str]:
    """One line per must-match field in which ``actual`` (this host's record) differs from
    ``expected``; empty when this host would build the same lab. SpecError naming
    ``source`` and the key when ``expected`` is not a record."""
    return [line for must, line in _differences(expected, actual, source) if must]


def record_notes(expected: dict[str, Any], actual: dict[str, Any],
                 source: str = "the record") -> list[str]:
    """One line per informative field that differs (versions, host name, emulator)."""
    return [line for must, line in _differences(expected, actual, source) if not must]


def _differences(expected: dict[str, Any], actual: dict[str, Any], source: str
                 ) -> list[tuple[bool, str]]:
    check_record(expected, source)
    out = _fields("", TOP, expected, actual)
    for section, fields in SECTIONS:
        have, want = expected[section], actual[section]
        out += [(True, f"{section}.{_text(n)}: the record has it, this host would not build "
                 "it") for n in sorted(have.keys() - want.keys())]
        out += [(True, f"{section}.{_text(n)}: this host would build it, the record has none")
                for n in sorted(want.keys() - have.keys())]
        for name in sorted(have.keys() & want.keys()):
            out += _fields(f"{section}.{_text(name)}.", fields, have[name], want[name])
    return out + _fields("host.", HOST, expected["host"], actual["host"])


def _fields(prefix: str, fields: tuple[Field, ...], have: dict[str, Any],
            want: dict[str, Any]) -> list[tuple[bool, str]]:
    out = []
    for key, must, side in fields:
        if have[key] != want[key]:
            a, b = _shown_pair(have[key], want[key])
            out.append((must, f"{prefix}{key}: record has {a}, {side} {b}"))
    return out


def _shown_pair(a: object, b: object) -> tuple[str, str]:
    """Both values as a line shows them; long ones (hashes) cut just past where they differ."""
    x, y = (NO_HOST if v is None else _text(str(v)) for v in (a, b))
    if len(x) > 20 and len(y) > 20:
        same = next((i for i, (c, d) in enumerate(zip(x, y, strict=False)) if c != d),
                    min(len(x), len(y)))
        n = max(12, same + 1)
        x, y = (v if len(v) <= n else v[:n] + "…" for v in (x, y))
    return x, y


def _text(value: str) -> str:
    return one_line(value, 80)


def _source(source: str) -> str:
    """A record file's name, as a line shows it."""
    return one_line(source, MAX_PATH)


# -- checking -----------------------------------------------------------------------------
def check_record(data: Any, source: str = "the record") -> dict[str, Any]:
    """``data`` if it is a record of ``SCHEMA``, every key present with its type and no
    other key; else SpecError naming ``source`` and the first wrong key."""
    _object(data, "", source)
    if "schema" not in data:
        raise SpecError(source, f"has no key schema, so it is not a record; {FIX}")
    if type(data["schema"]) is not int or data["schema"] != SCHEMA:
        raise SpecError(source, f"schema: is {_kind(data['schema'])}; this virtio-lab reads "
                        f"records of schema {SCHEMA}; {FIX}")
    _keys(data, [f[0] for f in TOP] + ["bridges", "host", "recorded_at", "schema", "vms"],
          "", source)
    for key, *_ in TOP:
        _string(data[key], key, source, none=key == "placement")
    _string(data["recorded_at"], "recorded_at", source)
    for section, fields in SECTIONS:
        _object(data[section], section, source)
        for name, entry in data[section].items():
            _entry(entry, fields, f"{section}.{_text(name)}", source)
    _entry(data["host"], HOST, "host", source)
    return data


def _entry(entry: Any, fields: tuple[Field, ...], where: str, source: str) -> None:
    _object(entry, where, source)
    _keys(entry, [f[0] for f in fields], f"{where}.", source)
    for key, *_ in fields:
        _string(entry[key], f"{where}.{key}", source)


def _keys(data: dict[str, Any], keys: list[str], prefix: str, source: str) -> None:
    for key in sorted(data.keys() - set(keys)):
        raise SpecError(source, f"{prefix}{_text(key)}: is not a key of a record (schema "
                        f"{SCHEMA}); {FIX}")
    for key in keys:
        if key not in data:
            raise SpecError(source, f"{prefix}{key}: missing; {FIX}")


def _object(value: Any, where: str, source: str) -> None:
    if not isinstance(value, dict):
        what = f"{where}: is" if where else "is"
        raise SpecError(source, f"{what} {_kind(value)}, where a record has a JSON object; "
                        f"{FIX}")


def _string(value: Any, where: str, source: str, none: bool = False) -> None:
    if not isinstance(value, str) and not (none and value is None):
        also = " or null" if none else ""
        raise SpecError(source, f"{where}: is {_kind(value)}, where a record has a "
                        f"string{also}; {FIX}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}, a boolean"
    if isinstance(value, int | float):
        return f"the number {_text(repr(value))}"
    if isinstance(value, str):
        return f"the string {_text(repr(value))}"
    return "a list" if isinstance(value, list) else "a JSON object"


def record_rows(record: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The record as (key, value, must match) rows, in the order a table shows them."""
    rows = [(key, NO_HOST if record[key] is None else str(record[key]), must)
            for key, must, _ in TOP]
    for section, fields in SECTIONS:
        rows += [(f"{section}.{name}.{key}", str(entry[key]), must)
                 for name, entry in record[section].items() for key, must, _ in fields]
    rows += [(f"host.{key}", str(record["host"][key]), must) for key, must, _ in HOST]
    return [*rows, ("recorded_at", record["recorded_at"], False)]


def check_expected(expected: dict[str, Any], actual: dict[str, Any], source: str
                   ) -> list[str]:
    """`up --expect`: RecordMismatch (exit 4), one line per must-match difference, when this
    host's record ``actual`` differs from ``expected`` (read from ``source``); else a note
    per informative difference."""
    refused = record_diff(expected, actual, source)
    if refused:
        raise RecordMismatch(actual["lab"], source, refused)
    return [f"{_source(source)}: {line}" for line in record_notes(expected, actual, source)]


class RecordMismatch(HostError):
    """This host would not build the lab a record describes (exit 4): a first line, then one
    line per difference, each already made printable."""

    multiline = True

    def __init__(self, lab: str, source: str, lines: list[str]) -> None:
        self.lines = lines
        head = (f"lab {lab}: this host would not build the lab {_source(source)} records "
                f"({len(lines)} difference(s)); nothing was changed. Run it where these "
                "match, or without --expect to build it as this host would:")
        super().__init__("\n".join([head, *(f"  {line}" for line in lines)]))
