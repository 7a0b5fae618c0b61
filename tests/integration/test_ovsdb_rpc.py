"""The one-shot OVSDB client against the real ovsdb-server, beside python-ovs's IDL and
ovs-vsctl reading the same rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.backends import ovsdb_rpc
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
        idl = ovs.datapath_types()
    finally:
        ovs.close()
    assert idl  # ovs-vswitchd runs: the column is filled
    assert tuple(sorted(ovsdb_rpc.as_set(rows[0]))) == idl


def test_errors_are_host_errors_naming_what_failed(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"select Nope\.name failed"):
        ovsdb_rpc.select_column(DEFAULT_DB, "Nope", "name")
    with pytest.raises(HostError, match="does not answer"):
        ovsdb_rpc.schema(f"unix:{tmp_path}/absent.sock")
