"""The one-shot OVSDB client against the real ovsdb-server, beside python-ovs's IDL and
ovs-vsctl reading the same rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.backends import ovsdb_rows, ovsdb_rpc
from provision.backends.ovs import DEFAULT_DB, Ovs
from provision.errors import HostError

from .conftest import run


def test_the_schema_is_the_one_ovs_vsctl_sees() -> None:
    schema = ovsdb_rpc.schema(DEFAULT_DB)
    assert schema["name"] == "Open_vSwitch"
    version = run("ovsdb-client", "get-schema-version", DEFAULT_DB).stdout.strip()
    assert schema["version"] == version
    assert {"Open_vSwitch", "Bridge", "Port", "Interface"} <= set(schema["tables"])


def test_a_column_reads_as_the_idl_reads_it() -> None:
    rows = ovsdb_rpc.select_column(DEFAULT_DB, "Open_vSwitch", "datapath_types")
    ovs = Ovs()
    try:
        idl = ovs.idl_rows("Open_vSwitch")["Open_vSwitch"][0]["datapath_types"]
    finally:
        ovs.close()
    assert idl  # ovs-vswitchd runs: the column is filled
    assert tuple(sorted(ovsdb_rpc.as_set(rows[0]))) == idl


def test_the_rows_a_lab_observes_read_as_the_idl_reads_them() -> None:
    """``Ovs`` observes through one JSON-RPC select; its IDL replica holds the same rows.
    Other tests may change OVS meanwhile: a pair read while the selects before and after
    differ is read again."""
    tables = tuple(ovsdb_rows.COLUMNS)
    ovs = Ovs()
    try:
        for _ in range(10):
            by_rpc = ovs.rows(*tables)
            by_idl = ovs.idl_rows(*tables)
            if ovs.rows(*tables) == by_rpc:
                break
            ovs.close()
    finally:
        ovs.close()
    assert by_rpc["Open_vSwitch"]  # a served database has its one row
    for table in tables:
        key = lambda r: r["_uuid"]  # noqa: E731
        assert sorted(by_rpc[table], key=key) == sorted(by_idl[table], key=key), table


def test_errors_are_host_errors_naming_what_failed(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"select Nope\.name failed"):
        ovsdb_rpc.select_column(DEFAULT_DB, "Nope", "name")
    with pytest.raises(HostError, match="does not answer"):
        ovsdb_rpc.schema(f"unix:{tmp_path}/absent.sock")
