"""OVSDB rows read both ways come out the same: the one-shot JSON-RPC select's rows, and the
same rows as python-ovs's IDL holds them (real ``Row`` objects over real ``Datum``s, decoded
from the same JSON as the IDL decodes an update), give the same plain rows, bridges and ports.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from ovs.db import data, idl
from ovs.db import schema as ovs_schema

from provision.backends import ovsdb_rows
from provision.core.observed import ObservedPort

STR = {"type": "string"}
MAP = {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
VLAN = {"type": "integer", "minInteger": 0, "maxInteger": 4095}
# The four tables' columns as vswitch.ovsschema types them (only those read).
SCHEMA = {"name": "Open_vSwitch", "version": "8.3.1", "tables": {
    "Open_vSwitch": {"columns": {
        "ovs_version": {"type": {"key": "string", "min": 0, "max": 1}},
        "cur_cfg": {"type": "integer"}, "next_cfg": {"type": "integer"},
        "datapath_types": {"type": {"key": "string", "min": 0, "max": "unlimited"}}}},
    "Bridge": {"columns": {
        "name": STR, "datapath_type": STR, "external_ids": MAP,
        "ports": {"type": {"key": {"type": "uuid", "refTable": "Port"}, "min": 0,
                           "max": "unlimited"}}}},
    "Port": {"columns": {
        "name": STR, "external_ids": MAP, "protected": {"type": "boolean"},
        "tag": {"type": {"key": VLAN, "min": 0, "max": 1}},
        "trunks": {"type": {"key": VLAN, "min": 0, "max": 4096}},
        "interfaces": {"type": {"key": {"type": "uuid", "refTable": "Interface"}, "min": 1,
                                "max": "unlimited"}}}},
    "Interface": {"columns": {
        "name": STR, "type": STR, "options": MAP,
        "ofport": {"type": {"key": "integer", "min": 0, "max": 1}},
        "error": {"type": {"key": "string", "min": 0, "max": 1}}}},
}}


def u(n: int) -> str:
    return str(uuid.UUID(int=n))


def ref(n: int) -> list[str]:
    return ["uuid", u(n)]


OWNED = ["map", [["virtio-lab-lab", "demo"], ["virtio-lab-nic", "0"], ["virtio-lab-vm", "vm1"]]]
# What a select of ``ovsdb_rows.select_ops`` returns: sets of one member bare, empty sets and
# maps tagged; a bridge whose ports are listed out of order; a bond's two interfaces.
SELECTED: dict[str, list[dict[str, Any]]] = {
    "Open_vSwitch": [{"_uuid": ref(1), "ovs_version": "3.1.0", "cur_cfg": 7, "next_cfg": 7,
                      "datapath_types": ["set", ["system", "netdev"]]}],
    "Bridge": [
        {"_uuid": ref(10), "name": "br-demo", "datapath_type": "netdev",
         "external_ids": ["map", [["virtio-lab-lab", "demo"]]],
         "ports": ["set", [ref(22), ref(20), ref(21)]]},
        {"_uuid": ref(11), "name": "br-user", "datapath_type": "", "external_ids": ["map", []],
         "ports": ref(23)},
    ],
    "Port": [
        {"_uuid": ref(20), "name": "br-demo", "tag": ["set", []], "trunks": ["set", []],
         "external_ids": ["map", []], "interfaces": ref(30), "protected": False},
        {"_uuid": ref(21), "name": "demo-vm1-0", "tag": 10, "trunks": ["set", []],
         "external_ids": OWNED, "interfaces": ref(31), "protected": False},
        {"_uuid": ref(22), "name": "demo-tun", "tag": ["set", []],
         "trunks": ["set", [30, 20]], "external_ids": ["map", [["virtio-lab-lab", "demo"]]],
         "interfaces": ["set", [ref(34), ref(32)]], "protected": True},
        {"_uuid": ref(23), "name": "bond0", "tag": ["set", []], "trunks": 5,
         "external_ids": ["map", []], "interfaces": ["set", [ref(33), ref(35)]],
         "protected": False},
    ],
    "Interface": [
        {"_uuid": ref(30), "name": "br-demo", "type": "internal", "options": ["map", []],
         "ofport": 65534, "error": ["set", []]},
        {"_uuid": ref(31), "name": "demo-vm1-0", "type": "", "options": ["map", []],
         "ofport": -1, "error": "could not open network device demo-vm1-0 (No such device)"},
        {"_uuid": ref(32), "name": "demo-tun", "type": "geneve",
         "options": ["map", [["remote_ip", "192.0.2.2"], ["key", "4242"]]],
         "ofport": ["set", []], "error": ["set", []]},
        {"_uuid": ref(33), "name": "eth1", "type": "", "options": ["map", []], "ofport": 3,
         "error": ["set", []]},
        {"_uuid": ref(34), "name": "demo-tun-b", "type": "geneve", "options": ["map", []],
         "ofport": 9, "error": ["set", []]},
        {"_uuid": ref(35), "name": "eth2", "type": "", "options": ["map", []], "ofport": 4,
         "error": ["set", []]},
    ],
}


def idl_rows() -> dict[str, list[Any]]:
    """The selected rows as python-ovs IDL ``Row``s: each column decoded by
    ``Datum.from_json`` against the schema, references resolved through the replica."""
    db = ovs_schema.DbSchema.from_json(SCHEMA)
    replica = SimpleNamespace(tables=db.tables)
    for name, table in db.tables.items():
        table.rows = {}
        for row in SELECTED[name]:
            datums = {c: data.Datum.from_json(col.type, row[c]) for c, col in table.columns.items()}
            key = uuid.UUID(row["_uuid"][1])
            table.rows[key] = idl.Row(replica, table, key, datums)
    return {name: list(t.rows.values()) for name, t in db.tables.items()}


def both_ways() -> tuple[dict[str, list[ovsdb_rows.Row]], dict[str, list[ovsdb_rows.Row]]]:
    by_idl = idl_rows()
    return ({t: [ovsdb_rows.from_json(t, r) for r in rows] for t, rows in SELECTED.items()},
            {t: [ovsdb_rows.from_idl(t, r) for r in rows] for t, rows in by_idl.items()})


def test_the_plain_rows_are_the_same_both_ways() -> None:
    by_json, by_idl = both_ways()
    for table in SELECTED:
        key = lambda r: r["_uuid"]  # noqa: E731
        assert sorted(by_json[table], key=key) == sorted(by_idl[table], key=key), table
    system = by_json["Open_vSwitch"][0]
    assert system["datapath_types"] == ("netdev", "system")
    assert system["ovs_version"] == ("3.1.0",) and system["cur_cfg"] == 7
    assert by_json["Bridge"][0]["ports"] == (u(20), u(21), u(22))


def test_bridges_and_ports_are_the_same_both_ways() -> None:
    by_json, by_idl = both_ways()
    bridges = ovsdb_rows.bridges(by_json["Bridge"], by_json["Port"])
    assert bridges == ovsdb_rows.bridges(by_idl["Bridge"], by_idl["Port"])
    ports = ovsdb_rows.ports(by_json["Bridge"], by_json["Port"], by_json["Interface"])
    assert ports == ovsdb_rows.ports(by_idl["Bridge"], by_idl["Port"], by_idl["Interface"])

    assert bridges["br-demo"].ports == ("demo-tun", "demo-vm1-0")  # its own port left out
    assert bridges["br-demo"].owner is not None and bridges["br-demo"].owner.lab == "demo"
    assert bridges["br-user"].owner is None and bridges["br-user"].ports == ("bond0",)
    assert ports["demo-vm1-0"] == ObservedPort(
        name="demo-vm1-0", bridge="br-demo", tag=10, trunks=(),
        external_ids={"virtio-lab-lab": "demo", "virtio-lab-nic": "0", "virtio-lab-vm": "vm1"},
        ofport=-1, error="could not open network device demo-vm1-0 (No such device)",
        type="", protected=False, options={})
    tun = ports["demo-tun"]  # the first interface by uuid, as the IDL orders a set
    assert (tun.trunks, tun.type, tun.ofport, tun.protected) == ((20, 30), "geneve", None, True)
    assert tun.options == {"remote_ip": "192.0.2.2", "key": "4242"}
    assert (ports["bond0"].bridge, ports["bond0"].trunks, ports["bond0"].ofport) == (
        "br-user", (5,), 3)


def test_a_select_reads_the_columns_it_converts() -> None:
    ops = ovsdb_rows.select_ops(["Port"])
    assert ops == [{"op": "select", "table": "Port", "where": [],
                    "columns": ["_uuid", *ovsdb_rows.COLUMNS["Port"]]}]
