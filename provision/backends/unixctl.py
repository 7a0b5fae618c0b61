"""ovs-vswitchd's control socket (unixctl: JSON-RPC over a Unix socket, what `ovs-appctl`
speaks), for what OVSDB only shows late: live per-port packet counters.

OVSDB's Interface.statistics is refreshed every stats-update-interval (5 s by default), so a
verifier that reads counters there waits up to 5 s after the traffic it drove. `dpctl/show -s`
reads the datapath's counters when asked. Every call has a timeout; when the socket is
missing or does not answer, callers fall back to OVSDB.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

RUNDIR_ENV = "OVS_RUNDIR"
DEFAULT_RUNDIR = "/var/run/openvswitch"
_PORT = re.compile(r"^\s+port \d+: (\S+)")
_COUNT = re.compile(r"^\s+(RX|TX) packets:(\d+)")


class UnixctlError(Exception):
    """The control socket is missing, refused the command, or did not answer in time."""


def vswitchd_socket() -> Path:
    """The running ovs-vswitchd's control socket, from its pid file."""
    rundir = Path(os.environ.get(RUNDIR_ENV) or DEFAULT_RUNDIR)
    try:
        pid = int((rundir / "ovs-vswitchd.pid").read_text().strip())
    except (OSError, ValueError) as exc:
        raise UnixctlError(f"no ovs-vswitchd pid file in {rundir}: {exc}") from None
    return rundir / f"ovs-vswitchd.{pid}.ctl"


def call(method: str, params: list[str], timeout: float = 2.0,
         path: Path | None = None) -> str:
    """One unixctl command; its text result."""
    request = json.dumps({"method": method, "params": params, "id": 0}).encode()
    decoder = json.JSONDecoder()
    buf = ""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path or vswitchd_socket()))
            sock.sendall(request)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise UnixctlError(f"{method}: ovs-vswitchd closed the socket")
                buf += chunk.decode(errors="replace")
                try:
                    reply, _end = decoder.raw_decode(buf)
                    break
                except ValueError:
                    continue
    except OSError as exc:
        raise UnixctlError(f"{method}: {exc}") from None
    if reply.get("error") is not None:
        raise UnixctlError(f"{method}: {str(reply['error']).strip() or 'refused'}")
    return str(reply.get("result") or "")


def parse_port_stats(text: str) -> dict[str, dict[str, int]]:
    """`dpctl/show -s`: port name -> rx_packets, tx_packets (every datapath)."""
    out: dict[str, dict[str, int]] = {}
    port = None
    for line in text.splitlines():
        if m := _PORT.match(line):
            port = m.group(1)
            out[port] = {}
        elif port is not None and (m := _COUNT.match(line)):
            out[port][f"{m.group(1).lower()}_packets"] = int(m.group(2))
    return {name: c for name, c in out.items() if len(c) == 2}


def port_stats(names: list[str], timeout: float = 2.0) -> dict[str, dict[str, int]]:
    """Live rx/tx packet counters of the named ports, as the datapath counts them now."""
    stats = parse_port_stats(call("dpctl/show", ["-s"], timeout))
    return {n: stats[n] for n in names if n in stats}
