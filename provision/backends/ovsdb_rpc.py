"""One-shot OVSDB JSON-RPC calls (RFC 7047) over a unix socket, with the stdlib's C JSON.

python-ovs parses everything ovsdb-server sends with its own pure-Python lexer when its C
extension is not built (the PyPI wheel has none): the Open_vSwitch schema alone takes it
~45 ms, and a probe that opened a whole IDL for one column took ~0.15 s. A question asked
once (the schema, one column of one table, the rows a lab observes) goes through here
instead; python-ovs's IDL (``backends.ovs``) is opened only to apply changes.
"""

from __future__ import annotations

import codecs
import json
import socket
import time
from typing import Any

from provision.errors import HostError


def call(endpoint: str, method: str, params: list[Any], timeout: float = 5.0) -> Any:
    """``method(params)`` on the ovsdb-server at ``endpoint`` ("unix:PATH"); its result.
    HostError when the socket is absent, silent past ``timeout``, or the server answers
    with an error."""
    path = endpoint.removeprefix("unix:")
    if path == endpoint:
        raise HostError(f"OVSDB endpoint {endpoint}: only unix: sockets are read directly")
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps({"method": method, "params": params, "id": 0}).encode())
            reply = _reply(sock, deadline)
    except OSError as exc:
        raise HostError(f"ovsdb-server at {endpoint} does not answer ({exc}); "
                        "run `provision host prepare`") from None
    if reply.get("error") is not None:
        raise HostError(f"ovsdb-server at {endpoint}: {method} failed: {reply['error']}")
    return reply.get("result")


def _reply(sock: socket.socket, deadline: float) -> dict[str, Any]:
    """The response to request id 0; echo requests (keepalives) are answered on the way."""
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")()  # a chunk may end inside a character
    buf = ""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed before the reply")
        buf += text.decode(chunk)
        while buf.strip():
            try:
                msg, end = decoder.raw_decode(buf.lstrip())
            except json.JSONDecodeError:
                break  # an incomplete message: read more
            buf = buf.lstrip()[end:]
            if msg.get("method") == "echo":
                sock.sendall(json.dumps({"result": msg.get("params"), "error": None,
                                         "id": msg.get("id")}).encode())
            elif msg.get("id") == 0:
                return msg


def schema(endpoint: str, database: str = "Open_vSwitch", timeout: float = 5.0
           ) -> dict[str, Any]:
    """The database's schema, as ``get_schema`` returns it."""
    result = call(endpoint, "get_schema", [database], timeout)
    if not isinstance(result, dict):
        raise HostError(f"ovsdb-server at {endpoint}: get_schema gave no schema")
    return result


def transact(endpoint: str, ops: list[dict[str, Any]], database: str = "Open_vSwitch",
             timeout: float = 5.0) -> list[dict[str, Any]]:
    """The results of ``ops``, one transaction (so one consistent snapshot for selects);
    HostError naming the first operation that failed."""
    result = call(endpoint, "transact", [database, *ops], timeout)
    failed = next((i for i, r in enumerate(result or []) if "error" in (r or {})), None)
    if not result or len(result) < len(ops) or failed is not None:
        op = ops[failed or 0]
        what = f"{op.get('op')} {op.get('table')}.{','.join(op.get('columns', []))}"
        detail = result[failed] if result and failed is not None else "no result"
        raise HostError(f"ovsdb-server at {endpoint}: {what} failed: {detail}")
    return result


def select_column(endpoint: str, table: str, column: str, database: str = "Open_vSwitch",
                  timeout: float = 5.0) -> list[Any]:
    """``column`` of every row of ``table`` (OVSDB's JSON notation: a set is
    ``["set", [...]]``, a single value stands alone)."""
    op = {"op": "select", "table": table, "where": [], "columns": [column]}
    result = transact(endpoint, [op], database, timeout)
    return [row.get(column) for row in result[0].get("rows", [])]


def as_set(value: Any) -> tuple[Any, ...]:
    """An OVSDB set column's members (``["set", [...]]`` or one bare atom)."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        return tuple(value[1])
    return (value,)
