"""The one-shot OVSDB client's framing, against a unix socket server in this process that
answers the way ovsdb-server may: an echo first, the reply split across writes, mid-character."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from provision.backends import ovsdb_rpc
from provision.errors import HostError


def serve_once(path: Path, chunks: list[bytes], seen: list[bytes]) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            seen.append(conn.recv(65536))
            for chunk in chunks:
                conn.sendall(chunk)
                if chunk.startswith(b'{"method": "echo"'):
                    seen.append(conn.recv(65536))  # the client answers the echo

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_reply_in_pieces_after_an_echo(tmp_path: Path) -> None:
    reply = json.dumps({"id": 0, "error": None,
                        "result": [{"rows": [{"name": "br-\u00e9t\u00e9"}]}]},
                       ensure_ascii=False).encode()
    cut = reply.index("\u00e9".encode()) + 1  # inside the two bytes of a character
    echo = json.dumps({"method": "echo", "params": [], "id": "echo"}).encode()
    seen: list[bytes] = []
    thread = serve_once(tmp_path / "db.sock", [echo, reply[:cut], reply[cut:]], seen)
    names = ovsdb_rpc.select_column(f"unix:{tmp_path}/db.sock", "Bridge", "name")
    thread.join(5)
    assert names == ["br-\u00e9t\u00e9"]
    request = json.loads(seen[0])
    assert request["method"] == "transact" and request["params"][0] == "Open_vSwitch"
    assert request["params"][1] == {"op": "select", "table": "Bridge", "where": [],
                                    "columns": ["name"]}
    assert json.loads(seen[1]) == {"result": [], "error": None, "id": "echo"}


def test_an_error_reply_and_a_silent_server_are_host_errors(tmp_path: Path) -> None:
    serve_once(tmp_path / "a.sock", [b'{"id": 0, "error": "unknown database", "result": null}'],
               [])
    with pytest.raises(HostError, match="get_schema failed: unknown database"):
        ovsdb_rpc.schema(f"unix:{tmp_path}/a.sock")
    serve_once(tmp_path / "b.sock", [b'{"id": 0, "resu'], [])  # then closes
    with pytest.raises(HostError, match="does not answer"):
        ovsdb_rpc.schema(f"unix:{tmp_path}/b.sock", timeout=2)


def test_sets_and_atoms() -> None:
    assert ovsdb_rpc.as_set(["set", ["netdev", "system"]]) == ("netdev", "system")
    assert ovsdb_rpc.as_set("system") == ("system",)
    assert ovsdb_rpc.as_set(["set", []]) == ()
