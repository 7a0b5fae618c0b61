"""ovs-vswitchd's control socket: the `dpctl/show -s` parser, and a JSON-RPC exchange with a
real Unix socket server standing in for ovs-vswitchd."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from provision.backends import unixctl

SHOW = """netdev@ovs-netdev:
  lookups: hit:10 missed:3 lost:0
  flows: 2
  port 0: ovs-netdev (tap)
    RX packets:0 errors:0 dropped:0 overruns:0 frame:0
    TX packets:0 errors:0 dropped:0 aborted:0 carrier:0
    collisions:0
    RX bytes:0  TX bytes:0
  port 2: demo-vm1-0
    RX packets:17 errors:0 dropped:0 overruns:0 frame:0
    TX packets:16 errors:0 dropped:0 aborted:0 carrier:0
    collisions:0
    RX bytes:1500  TX bytes:1400
  port 3: vlg-hv2-a (geneve: packet_type=ptap, remote_ip=192.168.251.2)
    RX packets:5 errors:0 dropped:0 overruns:0 frame:0
    TX packets:9 errors:0 dropped:0 aborted:0 carrier:0
system@ovs-system:
  port 1: eth1
    RX packets:1234567 errors:0 dropped:2 overruns:0 frame:0
    TX packets:7 errors:0 dropped:0 aborted:0 carrier:0
"""


def test_port_counters_of_every_datapath_are_read() -> None:
    stats = unixctl.parse_port_stats(SHOW)
    assert stats["demo-vm1-0"] == {"rx_packets": 17, "tx_packets": 16}
    assert stats["vlg-hv2-a"] == {"rx_packets": 5, "tx_packets": 9}
    assert stats["eth1"] == {"rx_packets": 1234567, "tx_packets": 7}
    assert set(stats) == {"ovs-netdev", "demo-vm1-0", "vlg-hv2-a", "eth1"}


def _serve(path: Path, reply: dict | None, chunks: int = 1) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn, server:
            request = json.loads(conn.recv(65536))
            assert request["method"] == "dpctl/show" and request["params"] == ["-s"]
            if reply is None:
                conn.recv(1)  # say nothing until the client gives up
                return
            data = json.dumps({**reply, "id": request["id"]}).encode()
            step = max(1, len(data) // chunks)
            for i in range(0, len(data), step):  # a reply may come in pieces
                conn.sendall(data[i:i + step])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_reply_in_pieces_is_read_whole(tmp_path: Path) -> None:
    sock = tmp_path / "vs.ctl"
    _serve(sock, {"result": SHOW, "error": None}, chunks=7)
    assert unixctl.call("dpctl/show", ["-s"], path=sock) == SHOW


def test_an_error_or_silence_is_a_unixctl_error(tmp_path: Path) -> None:
    sock = tmp_path / "vs.ctl"
    _serve(sock, {"result": None, "error": "no datapaths exist\n"})
    with pytest.raises(unixctl.UnixctlError, match="no datapaths exist"):
        unixctl.call("dpctl/show", ["-s"], path=sock)
    quiet = tmp_path / "quiet.ctl"
    _serve(quiet, None)
    with pytest.raises(unixctl.UnixctlError):
        unixctl.call("dpctl/show", ["-s"], timeout=0.3, path=quiet)
    with pytest.raises(unixctl.UnixctlError):
        unixctl.call("dpctl/show", ["-s"], path=tmp_path / "absent.ctl")


def test_no_pid_file_is_a_unixctl_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setenv(unixctl.RUNDIR_ENV, str(tmp_path))
    with pytest.raises(unixctl.UnixctlError, match="pid file"):
        unixctl.vswitchd_socket()
    (tmp_path / "ovs-vswitchd.pid").write_text("4242\n")
    assert unixctl.vswitchd_socket() == tmp_path / "ovs-vswitchd.4242.ctl"
