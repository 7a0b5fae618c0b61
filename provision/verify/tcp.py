"""TCP across the data path (``l4.tcp``) and throughput (``perf.*``, informational), with
iperf3 inside the guests.

Pings prove L2/L3 and the queues, but ICMP checksums are computed in software: a path that
drops offloaded TCP/UDP checksums still answers pings. ``l4.tcp`` runs a 1 s TCP stream
between each traffic pair, wants at least 1 MiB delivered, and reports the receiver's
``Tcp InCsumErrors`` as evidence.
"""

from __future__ import annotations

import random
from typing import Any

import libvirt

from provision.backends import agent
from provision.verify import parse
from provision.verify.guest import GuestView, run_sh
from provision.verify.matrix import Endpoint, pair_target
from provision.verify.model import PASS, Check, skipped, verdict

# $1.. = ports. Servers end after one test, or are killed after 30 s.
_SERVERS = r"""
for p in "$@"; do timeout -s KILL 30 iperf3 -s -1 -p "$p" > /dev/null 2>&1 & done
i=0
while [ $i -lt 150 ]; do
  n=0; for p in "$@"; do netstat -ltn | grep -q ":$p " && n=$((n+1)); done
  [ $n -eq $# ] && break
  usleep 20000; i=$((i+1))
done
echo "@@ snmp"; cat /proc/net/snmp
"""
# $1 = IFNAME (the NIC or a VLAN interface on it), $2 = the NIC, $3 = PEER, $4 = seconds,
# $5 = "pin" to put stream k on CPU k, $6.. = ports: one stream per port, all at once.
_CLIENTS = r"""
ifn=$1; nic=$2; peer=$3; secs=$4; pin=$5; shift 5
echo "@@ before ethtool"; ethtool -S "$nic"
k=0
for p in "$@"; do
  aff=""; [ "$pin" = pin ] && aff="-A $k"
  ( timeout $((secs + 15)) iperf3 -c "$peer" -p "$p" -t "$secs" $aff --connect-timeout 3000 \
      --bind-dev "$ifn" -J > "/tmp/vl-iperf.$$.$k" 2>&1
    echo "$?" > "/tmp/vl-iperf-rc.$$.$k" ) &
  k=$((k+1))
done
wait
echo "@@ after ethtool"; ethtool -S "$nic"
k=0
for p in "$@"; do
  echo "@@ iperf $k $(cat "/tmp/vl-iperf-rc.$$.$k")"; cat "/tmp/vl-iperf.$$.$k"; echo
  rm -f "/tmp/vl-iperf.$$.$k" "/tmp/vl-iperf-rc.$$.$k"; k=$((k+1))
done
"""


# A working path moves hundreds of Mbit/s even under TCG; a path that breaks offloaded
# checksums delivers nothing. 1 MiB in the 1 s stream separates the two with a wide margin.
MIN_BYTES = 1 << 20


class PortPool:
    """TCP ports for one verify run; a random base so a stale server of an earlier run
    cannot hold them."""

    def __init__(self) -> None:
        self._next = random.randrange(20000, 50000)

    def take(self, n: int) -> list[int]:
        ports = list(range(self._next, self._next + n))
        self._next += n
        return ports


def _csum_errors(text: str) -> int | None:
    return parse.snmp(text).get("Tcp", {}).get("InCsumErrors")


def iperf(doms: dict[str, libvirt.virDomain | None], views: dict[str, GuestView],
          a: Endpoint, b: Endpoint, ports: list[int], secs: int,
          pinned: bool) -> dict[str, Any] | str:
    """iperf3 from ``a`` to ``b``, one stream per port; rates, queue deltas, csum errors."""
    da, db = doms.get(a.domain), doms.get(b.domain)
    iface = views[a.domain].iface(a)
    if da is None or db is None or iface is None or views[b.domain].error:
        return "a guest of the pair is not up"
    try:
        _c, srv, _e = run_sh(db, _SERVERS, [str(p) for p in ports], timeout=20)
        args = [iface.ifname, iface.parent, b.address or "", str(secs), "pin" if pinned else "-",
                *map(str, ports)]
        _c, out, err = run_sh(da, _CLIENTS, args, timeout=secs + 40)
        _c, srv_after, _e = run_sh(db, "cat /proc/net/snmp", [], timeout=10)
    except agent.AgentError as exc:
        return str(exc)
    blocks = parse.sections(out)
    streams = []
    for header, body in blocks.items():
        if header.startswith("iperf "):
            words = header.split()
            rc = words[2] if len(words) > 2 else ""
            streams.append({"exit": int(rc) if rc.isdigit() else None,
                            **parse.iperf_summary(body)})
    b0 = parse.queue_packets(parse.ethtool_stats(blocks.get("before ethtool", "")))[1]
    b1 = parse.queue_packets(parse.ethtool_stats(blocks.get("after ethtool", "")))[1]
    before_err = _csum_errors(parse.sections(srv).get("snmp", ""))
    after_err = _csum_errors(srv_after)
    return {
        "streams": streams,
        "tx_queue_packets": parse.deltas(b0, b1, a.queues),
        "peer_tcp_in_csum_errors": (after_err - before_err)
        if before_err is not None and after_err is not None else None,
        "stderr": err.strip()[-200:],
    }


def tcp_check(doms: dict[str, libvirt.virDomain | None], views: dict[str, GuestView],
              a: Endpoint, b: Endpoint, pool: PortPool) -> Check:
    target = pair_target(a, b)
    result = iperf(doms, views, a, b, pool.take(1), 1, pinned=False)
    if isinstance(result, str):
        return verdict("l4.tcp", target, [f"could not run: {result}"], {})
    stream = result["streams"][0] if result["streams"] else {"exit": None,
                                                             "error": "no output"}
    evidence = {"from": a.address, "to": b.address, **stream,
                "peer_tcp_in_csum_errors": result["peer_tcp_in_csum_errors"]}
    problems = []
    if stream["exit"] != 0 or stream.get("error") or stream.get("received_bytes", 0) < MIN_BYTES:
        why = (f"a 1 s TCP stream {a.address} -> {b.address} delivered "
               f"{stream.get('received_bytes', 0)} bytes (want {MIN_BYTES}): "
               f"{stream.get('error') or 'too little'}")
        if result["peer_tcp_in_csum_errors"]:
            why += (f"; the receiver counted {result['peer_tcp_in_csum_errors']} TCP "
                    "checksum errors: segments arrive with the checksum the guest left to "
                    "offload, which the path never completed")
        problems.append(why)
    return verdict("l4.tcp", target, problems, evidence,
                   f"1 s TCP stream: {stream.get('sent_bytes', 0)} bytes sent, "
                   f"{stream.get('received_bytes', 0)} received by the peer")


def perf_checks(doms: dict[str, libvirt.virDomain | None], views: dict[str, GuestView],
                a: Endpoint, b: Endpoint, pool: PortPool, tcp: Check | None,
                secs: int = 3) -> list[Check]:
    """perf.single and perf.multi for one pair; informational, never a failure."""
    target = pair_target(a, b)
    if tcp is not None and tcp.status != PASS:
        reason = "TCP does not cross the data path between these NICs (see l4.tcp)"
        return [skipped("perf.single", target, reason), skipped("perf.multi", target, reason)]
    out = []
    for name, n, pinned in (("perf.single", 1, False), ("perf.multi", a.queues, True)):
        result = iperf(doms, views, a, b, pool.take(n), secs, pinned=pinned)
        out.append(_perf_check(name, target, result, n, secs))
    return out


def _perf_check(name: str, target: str, result: dict[str, Any] | str, n: int,
                secs: int) -> Check:
    if isinstance(result, str):
        return skipped(name, target, f"iperf3 did not run: {result}")
    rates = [s["bits_per_second"] for s in result["streams"] if s["bits_per_second"]]
    if not rates:
        errors = [s["error"] for s in result["streams"]]
        return skipped(name, target, f"iperf3 gave no result: {errors}")
    tx = [v or 0 for v in result["tx_queue_packets"]]
    total = sum(tx) or 1
    evidence = {
        "streams": n,
        "seconds": secs,
        "gbit_s": round(sum(rates) / 1e9, 3),
        "per_stream_gbit_s": [round(r / 1e9, 3) for r in rates],
        "tx_queue_share_pct": [round(100 * v / total, 1) for v in tx],
    }
    spread = "/".join(f"{p:.0f}" for p in evidence["tx_queue_share_pct"])
    return Check(name, target, PASS, evidence,
                 f"{evidence['gbit_s']} Gbit/s with {n} stream(s); TX queue share % {spread}")
