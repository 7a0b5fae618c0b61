"""The OVSDB rows the lab reads, in one plain form whichever way they were read: python-ovs's
IDL replica (``Row`` objects) or a one-shot JSON-RPC select (RFC 7047's notation, through
``ovsdb_rpc``). The observed bridges and ports are built from that form only, so both ways
observe the same objects.

The plain form: a row is a dict with ``_uuid`` and the columns of ``COLUMNS``; a set column
(optional values included) is a sorted tuple, as the IDL sorts it; a map a dict; a reference
the referenced row's uuid, as a string.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from provision.core.observed import ObservedBridge, ObservedPort
from provision.core.owner import from_external_ids

SET, MAP, ATOM = "set", "map", "atom"
# The columns read, per table, and their kind (vswitch.ovsschema).
COLUMNS: dict[str, dict[str, str]] = {
    "Open_vSwitch": {"ovs_version": SET, "cur_cfg": ATOM, "next_cfg": ATOM,
                     "datapath_types": SET},
    "Bridge": {"name": ATOM, "datapath_type": ATOM, "external_ids": MAP, "ports": SET},
    "Port": {"name": ATOM, "tag": SET, "trunks": SET, "external_ids": MAP, "interfaces": SET,
             "protected": ATOM},
    "Interface": {"name": ATOM, "ofport": SET, "error": SET, "type": ATOM, "options": MAP},
}

Row = dict[str, Any]


def select_ops(tables: Iterable[str]) -> list[dict[str, Any]]:
    """One ``select`` per table, of the columns read: a ``transact`` of them reads one
    consistent snapshot."""
    return [{"op": "select", "table": t, "where": [], "columns": ["_uuid", *COLUMNS[t]]}
            for t in tables]


def from_json(table: str, row: Mapping[str, Any]) -> Row:
    """A row of a ``select`` result in the plain form."""
    out: Row = {"_uuid": _json_atom(row["_uuid"])}
    for column, kind in COLUMNS[table].items():
        value = row[column]
        if kind == MAP:
            out[column] = {_json_atom(k): _json_atom(v) for k, v in value[1]}
        elif kind == SET:
            members = value[1] if _is_tagged(value, "set") else [value]
            out[column] = tuple(sorted(_json_atom(x) for x in members))
        else:
            out[column] = _json_atom(value)
    return out


def _is_tagged(value: Any, tag: str) -> bool:
    return isinstance(value, list) and len(value) == 2 and value[0] == tag


def _json_atom(value: Any) -> Any:
    """An atom: a uuid (``["uuid", "..."]``) as its string, anything else as it is."""
    return value[1] if _is_tagged(value, "uuid") else value


def from_idl(table: str, row: Any) -> Row:
    """A python-ovs IDL ``Row`` in the plain form."""
    out: Row = {"_uuid": str(row.uuid)}
    for column, kind in COLUMNS[table].items():
        value = getattr(row, column)
        if kind == MAP:
            out[column] = {_idl_atom(k): _idl_atom(v) for k, v in value.items()}
        elif kind == SET:
            out[column] = tuple(sorted(_idl_atom(x) for x in value))
        else:
            out[column] = _idl_atom(value)
    return out


def _idl_atom(value: Any) -> Any:
    """An atom: a referenced row (or a bare uuid) as its uuid string."""
    uuid = getattr(value, "uuid", None)
    if uuid is not None:
        return str(uuid)
    return value if isinstance(value, str | int | float | bool) else str(value)


def bridges(bridge_rows: Iterable[Row], port_rows: Iterable[Row]) -> dict[str, ObservedBridge]:
    """Every bridge, with the names of its ports (its own internal port left out)."""
    port_name = {p["_uuid"]: p["name"] for p in port_rows}
    out = {}
    for br in bridge_rows:
        names = (port_name[u] for u in br["ports"] if u in port_name)
        out[br["name"]] = ObservedBridge(
            br["name"], br["datapath_type"], from_external_ids(dict(br["external_ids"])),
            tuple(sorted(n for n in names if n != br["name"])),
        )
    return out


def ports(bridge_rows: Iterable[Row], port_rows: Iterable[Row], iface_rows: Iterable[Row]
          ) -> dict[str, ObservedPort]:
    """Every port, with its bridge and its first Interface's state (a lab port has one)."""
    bridge_of = {u: br["name"] for br in bridge_rows for u in br["ports"]}
    ifaces = {i["_uuid"]: i for i in iface_rows}
    out = {}
    for port in port_rows:
        iface = next((ifaces[u] for u in port["interfaces"] if u in ifaces), None)
        out[port["name"]] = ObservedPort(
            name=port["name"],
            bridge=bridge_of.get(port["_uuid"], ""),
            tag=port["tag"][0] if port["tag"] else None,
            trunks=tuple(port["trunks"]),
            external_ids=dict(port["external_ids"]),
            ofport=iface["ofport"][0] if iface is not None and iface["ofport"] else None,
            error=iface["error"][0] if iface is not None and iface["error"] else None,
            type=iface["type"] if iface is not None else "",
            protected=bool(port["protected"]),
            options=dict(iface["options"]) if iface is not None else {},
        )
    return out
