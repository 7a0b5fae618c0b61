"""Open vSwitch through OVSDB, and nothing else: reads with one-shot JSON-RPC selects
(``ovsdb_rpc``, rows read as ``ovsdb_rows``), writes through ovsdbapp over the python-ovs
IDL, a phase's changes as one transaction that is only "done" when ovs-vswitchd reports it
applied (``cur_cfg``).

ovsdbapp reports what went wrong after a commit (interfaces ovs-vswitchd could not add, a
``cur_cfg`` that never came) only through its logger. ``OvsdbappLog`` collects those records
for the transaction that caused them, and ``apply`` raises them as our errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from typing import Any

from provision.backends import ovsdb_rows, ovsdb_rpc
from provision.core.desired import DesiredBridge, DesiredPort
from provision.core.observed import ObservedBridge, ObservedPort
from provision.core.plan import Change
from provision.errors import HostError, OperationError

DEFAULT_DB = "unix:/var/run/openvswitch/db.sock"
TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface")


class OvsdbappLog(logging.Handler):
    """ovsdbapp's log records, kept for whoever asks (``take()``) instead of printed: its
    post-commit checks (failed interfaces, timeouts) report only there."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        """The messages since the last call, with the exception each carried."""
        out = []
        for r in self.records:
            text = r.getMessage()
            if r.exc_info and r.exc_info[1] is not None:
                text = f"{text}: {r.exc_info[1]}" if text else str(r.exc_info[1])
            out.append(text)
        self.records.clear()
        return out


OVSDBAPP_LOG = OvsdbappLog()
_logger = logging.getLogger("ovsdbapp")
_logger.addHandler(OVSDBAPP_LOG)
_logger.propagate = False  # nothing of it reaches the terminal: the CLI reports our errors
_logger.setLevel(logging.WARNING)


def db_endpoint() -> str:
    return os.environ.get("VIRTIO_LAB_OVSDB", DEFAULT_DB)


def _schema_helper(endpoint: str, idlutils: Any) -> Any:
    """The IDL's schema helper; over a unix socket the schema is read with the stdlib's JSON
    (``ovsdb_rpc``), ~45 ms sooner than python-ovs's own parser reads it."""
    if not endpoint.startswith("unix:"):
        return idlutils.get_schema_helper(endpoint, "Open_vSwitch")
    from ovs.db import idl

    return idl.SchemaHelper(schema_json=ovsdb_rpc.schema(endpoint))


class Ovs:
    """A connection to ovsdb-server, with the lab-facing reads and writes.

    Reads over a unix socket are one-shot JSON-RPC selects (``ovsdb_rpc``): a lab in sync
    never opens the IDL, whose import and first sync cost ~0.1 s. The IDL (``api``) opens
    on first use: to apply changes, or for a reader that needs its replica."""

    def __init__(self, endpoint: str | None = None, timeout: float = 30.0) -> None:
        self.endpoint = endpoint or db_endpoint()
        self.timeout = timeout
        self._api: Any = None
        path = self.endpoint.removeprefix("unix:")
        if self.endpoint.startswith("unix:") and not os.path.exists(path):
            raise HostError(f"ovsdb-server: no socket at {path}; run `provision host prepare`")

    @property
    def api(self) -> Any:
        """ovsdbapp's API over the IDL, connected on first use."""
        if self._api is None:
            self._api = self._connect()
        return self._api

    def _connect(self) -> Any:
        from ovsdbapp.backend.ovs_idl import connection, idlutils
        from ovsdbapp.schema.open_vswitch import impl_idl

        try:
            helper = _schema_helper(self.endpoint, idlutils)
            for table in TABLES:
                helper.register_table(table)
            idl = connection.OvsdbIdl(self.endpoint, helper)
            self._conn = connection.Connection(idl, timeout=int(self.timeout))
            return impl_idl.OvsdbIdl(self._conn)
        except Exception as exc:  # ovsdbapp raises bare Exception subclasses here
            raise HostError(
                f"ovsdb-server at {self.endpoint} does not answer ({exc}); "
                "run `provision host prepare`"
            ) from None

    def close(self) -> None:
        # ovsdbapp keeps one connection per API class, not per instance: stop that one and
        # forget it, so the next Ovs() in this process connects afresh (~0.1 s) instead of
        # reviving the stopped one (a 1 s reconnect backoff) or reusing another endpoint's.
        if self._api is None:
            return
        from ovsdbapp.schema.open_vswitch import impl_idl

        with contextlib.suppress(Exception):
            self._api.ovsdb_connection.stop(timeout=1)
        impl_idl.OvsdbIdl._ovsdb_connection = None
        self._api = None

    # -- reads -------------------------------------------------------------------------
    def rows(self, *tables: str) -> dict[str, list[ovsdb_rows.Row]]:
        """The rows of ``tables`` in ``ovsdb_rows``' plain form, read at one moment: one
        JSON-RPC transaction over a unix socket, else the IDL's replica."""
        if not self.endpoint.startswith("unix:"):
            return self.idl_rows(*tables)
        results = ovsdb_rpc.transact(self.endpoint, ovsdb_rows.select_ops(tables),
                                     timeout=self.timeout)
        return {t: [ovsdb_rows.from_json(t, row) for row in r.get("rows", [])]
                for t, r in zip(tables, results, strict=False)}

    def idl_rows(self, *tables: str) -> dict[str, list[ovsdb_rows.Row]]:
        """The same rows from the IDL's replica (opening it)."""
        return {t: [ovsdb_rows.from_idl(t, row) for row in self.api.tables[t].rows.values()]
                for t in tables}

    def _system(self) -> ovsdb_rows.Row | None:
        rows = self.rows("Open_vSwitch")["Open_vSwitch"]
        return rows[0] if rows else None

    def datapath_types(self) -> tuple[str, ...]:
        row = self._system()
        return tuple(row["datapath_types"]) if row else ()

    def ovs_version(self) -> str:
        """Open_vSwitch.ovs_version as ovs-vswitchd wrote it ("3.1.0"), "" when unset."""
        row = self._system()
        return str(row["ovs_version"][0]) if row and row["ovs_version"] else ""

    def cfg(self) -> tuple[int, int] | None:
        """Open_vSwitch (cur_cfg, next_cfg): equal once ovs-vswitchd has applied every
        committed change; None while the database has no Open_vSwitch row."""
        row = self._system()
        return (row["cur_cfg"], row["next_cfg"]) if row else None

    def bridges(self) -> dict[str, ObservedBridge]:
        rows = self.rows("Bridge", "Port")
        return ovsdb_rows.bridges(rows["Bridge"], rows["Port"])

    def ports(self) -> dict[str, ObservedPort]:
        rows = self.rows("Bridge", "Port", "Interface")
        return ovsdb_rows.ports(rows["Bridge"], rows["Port"], rows["Interface"])

    def observe(
        self, lab: str, wanted_bridges: Iterable[str], wanted_ports: Iterable[str]
    ) -> tuple[dict[str, ObservedBridge], dict[str, ObservedPort]]:
        """Bridges and ports the lab owns or names (a named one may be a conflict), from
        one snapshot."""
        rows = self.rows("Bridge", "Port", "Interface")
        bridges = ovsdb_rows.bridges(rows["Bridge"], rows["Port"])
        ports = ovsdb_rows.ports(rows["Bridge"], rows["Port"], rows["Interface"])
        wb, wp = set(wanted_bridges), set(wanted_ports)
        return (
            {n: b for n, b in bridges.items() if (b.owner and b.owner.lab == lab) or n in wb},
            {n: p for n, p in ports.items() if (p.owner and p.owner.lab == lab) or n in wp},
        )

    # -- writes ------------------------------------------------------------------------
    def apply(self, changes: list[Change]) -> None:
        """Apply the OVS changes of a plan in one transaction; ovsdbapp waits until
        ovs-vswitchd has applied it (``cur_cfg``) and checks every interface it added."""
        if not changes:
            return
        OVSDBAPP_LOG.take()  # records of earlier work are not this transaction's
        # A port replaced in the same transaction that adds it back keeps ovs-vswitchd's open
        # device (a recreated tap would stay unread): such ports go first, on their own.
        replaced = [c.target for c in changes if c.kind == "port" and c.action == "replace"]
        try:
            if replaced:
                with self.api.transaction(check_error=True) as txn:
                    for name in replaced:
                        txn.add(self.api.del_port(name, if_exists=True))
            with self.api.transaction(check_error=True) as txn:
                for change in changes:
                    for cmd in self._commands(change):
                        txn.add(cmd)
        except Exception as exc:
            raise OperationError(f"OVSDB transaction failed: {exc}") from None
        problems = OVSDBAPP_LOG.take()
        if problems:
            raise OperationError(
                "ovs-vswitchd did not apply the OVS changes: " + "; ".join(problems)
                + self._interface_errors(changes)
            )

    def _interface_errors(self, changes: list[Change]) -> str:
        ports = {c.target for c in changes if c.kind == "port" and c.action != "delete"}
        errors = [f"{p.name}: {p.error}" for p in self.ports().values()
                  if p.name in ports and p.error]
        return f" (Interface error: {'; '.join(errors)})" if errors else ""

    def _commands(self, change: Change) -> list[Any]:
        api = self.api
        target = change.desired
        if change.action == "delete":
            if change.kind == "bridge":
                return [api.del_br(change.target, if_exists=True)]
            return [api.del_port(change.target, if_exists=True)]
        if isinstance(target, DesiredBridge):
            if change.action == "create":
                return [
                    api.add_br(target.name, may_exist=False, datapath_type=target.datapath_type),
                    api.db_set("Bridge", target.name,
                               ("external_ids", target.owner.external_ids())),
                ]
            return [api.db_set("Bridge", target.name, ("datapath_type", target.datapath_type))]
        if not isinstance(target, DesiredPort):
            raise TypeError(f"OVS cannot apply {change.kind} {change.target}")
        cmds = []
        if change.action in ("create", "replace"):  # a replaced port is gone by now
            cmds.append(api.add_port(target.bridge, target.name, may_exist=False))
            cmds.append(api.db_set("Interface", target.name,
                                   ("external_ids", target.external_ids)))
            if target.type:
                cmds.append(api.db_set("Interface", target.name, ("type", target.type)))
        if target.options or change.action == "modify":
            cmds.append(api.db_set("Interface", target.name, ("options", dict(target.options))))
        cmds.append(api.db_set("Port", target.name, ("external_ids", target.external_ids)))
        cmds.append(
            api.db_set(
                "Port",
                target.name,
                ("tag", [target.tag] if target.tag else []),
                ("trunks", list(target.trunks)),
                ("protected", target.protected),
            )
        )
        return cmds
