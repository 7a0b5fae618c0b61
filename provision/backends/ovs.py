"""Open vSwitch through OVSDB (ovsdbapp over the python-ovs IDL), and nothing else.

Reads bridges and ports from the IDL's replica, and applies a phase's changes as one
transaction that is only "done" when ovs-vswitchd reports it applied (``cur_cfg``).

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

from provision.core.desired import DesiredBridge, DesiredPort
from provision.core.observed import ObservedBridge, ObservedPort
from provision.core.owner import from_external_ids
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

    from provision.backends import ovsdb_rpc

    return idl.SchemaHelper(schema_json=ovsdb_rpc.schema(endpoint))


class Ovs:
    """A connection to ovsdb-server, with the lab-facing reads and writes."""

    def __init__(self, endpoint: str | None = None, timeout: float = 30.0) -> None:
        from ovsdbapp.backend.ovs_idl import connection, idlutils
        from ovsdbapp.schema.open_vswitch import impl_idl

        self.endpoint = endpoint or db_endpoint()
        self.timeout = timeout
        path = self.endpoint.removeprefix("unix:")
        if self.endpoint.startswith("unix:") and not os.path.exists(path):
            raise HostError(f"ovsdb-server: no socket at {path}; run `provision host prepare`")
        try:
            helper = _schema_helper(self.endpoint, idlutils)
            for table in TABLES:
                helper.register_table(table)
            idl = connection.OvsdbIdl(self.endpoint, helper)
            self._conn = connection.Connection(idl, timeout=int(timeout))
            self.api = impl_idl.OvsdbIdl(self._conn)
        except Exception as exc:  # ovsdbapp raises bare Exception subclasses here
            raise HostError(
                f"ovsdb-server at {self.endpoint} does not answer ({exc}); "
                "run `provision host prepare`"
            ) from None

    def close(self) -> None:
        # ovsdbapp keeps one connection per API class, not per instance: stop that one and
        # forget it, so the next Ovs() in this process connects afresh (~0.1 s) instead of
        # reviving the stopped one (a 1 s reconnect backoff) or reusing another endpoint's.
        from ovsdbapp.schema.open_vswitch import impl_idl

        with contextlib.suppress(Exception):
            self.api.ovsdb_connection.stop(timeout=1)
        impl_idl.OvsdbIdl._ovsdb_connection = None

    # -- reads -------------------------------------------------------------------------
    def _rows(self, table: str) -> Iterable[Any]:
        return list(self.api.tables[table].rows.values())

    def datapath_types(self) -> tuple[str, ...]:
        rows = list(self._rows("Open_vSwitch"))
        return tuple(sorted(rows[0].datapath_types)) if rows else ()

    def ovs_version(self) -> str:
        """Open_vSwitch.ovs_version as ovs-vswitchd wrote it ("3.1.0"), "" when unset."""
        rows = list(self._rows("Open_vSwitch"))
        return str(rows[0].ovs_version[0]) if rows and rows[0].ovs_version else ""

    def cfg(self) -> tuple[int, int] | None:
        """Open_vSwitch (cur_cfg, next_cfg): equal once ovs-vswitchd has applied every
        committed change; None while the database has no Open_vSwitch row."""
        rows = list(self._rows("Open_vSwitch"))
        return (rows[0].cur_cfg, rows[0].next_cfg) if rows else None

    def bridges(self) -> dict[str, ObservedBridge]:
        out = {}
        for br in self._rows("Bridge"):
            ports = tuple(sorted(p.name for p in br.ports if p.name != br.name))
            out[br.name] = ObservedBridge(
                br.name, br.datapath_type, from_external_ids(dict(br.external_ids)), ports
            )
        return out

    def ports(self) -> dict[str, ObservedPort]:
        bridge_of = {p.uuid: br.name for br in self._rows("Bridge") for p in br.ports}
        out = {}
        for port in self._rows("Port"):
            iface = port.interfaces[0] if port.interfaces else None
            out[port.name] = ObservedPort(
                name=port.name,
                bridge=bridge_of.get(port.uuid, ""),
                tag=port.tag[0] if port.tag else None,
                trunks=tuple(sorted(port.trunks)),
                external_ids=dict(port.external_ids),
                ofport=(iface.ofport[0] if iface is not None and iface.ofport else None),
                error=(iface.error[0] if iface is not None and iface.error else None),
                type=iface.type if iface is not None else "",
                protected=bool(port.protected),
                options=dict(iface.options) if iface is not None else {},
            )
        return out

    def observe(
        self, lab: str, wanted_bridges: Iterable[str], wanted_ports: Iterable[str]
    ) -> tuple[dict[str, ObservedBridge], dict[str, ObservedPort]]:
        """Bridges and ports the lab owns or names (a named one may be a conflict)."""
        bridges = self.bridges()
        ports = self.ports()
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
