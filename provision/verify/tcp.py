"""TCP across the data path (``l4.tcp``) and throughput (``perf.*``, informational), with
iperf3 inside the guests.

Pings prove L2/L3 and the queues, but ICMP checksums are computed in software: a path that
drops offloaded TCP/UDP checksums still answers pings. ``l4.tcp`` moves a 1 MiB file of
random bytes over TCP from one side of each traffic pair to the other (an HTTP server on
the sender, bound to its lab address; an HTTP client on the receiver: busybox's in tiny, what
a cloud image has otherwise) and wants every byte to arrive
unaltered: the receiver's byte count and MD5 equal the sender's. It proves correctness, not
speed: the transfer may take as long as a loaded host needs (up to ``L4_LIMIT_S``), so a
healthy lab of many TCG guests on two cores passes, while a path that breaks offloaded
checksums, which delivers nothing, fails. The receiver's ``Tcp InCsumErrors`` is evidence.
iperf3 serves only ``perf.*``: its server stops counting when the sender ends the test, so
its byte counts under-report a slow receiver.
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

# Shell functions the scripts below share, for busybox (tiny) and full distributions (cloud
# images) alike: no netstat, usleep or pidof, which only one of them has.
# listening PORT: a socket listens on TCP PORT (from /proc/net/tcp{,6}, state 0A).
_LISTENING = r"""
listening() {
  awk -v p=":$(printf '%04X' "$1")" '$4 == "0A" && substr($2, length($2) - 4) == p {f = 1}
    END {exit !f}' /proc/net/tcp /proc/net/tcp6 2> /dev/null
}
"""
# $1 = seconds a server may live, $2.. = ports. Each server ends after one test.
_SERVERS = _LISTENING + r"""
life=$1; shift
for p in "$@"; do timeout -s KILL "$life" iperf3 -s -1 -p "$p" > /dev/null 2>&1 & done
i=0
while [ $i -lt 150 ]; do
  n=0; for p in "$@"; do listening "$p" && n=$((n+1)); done
  [ $n -eq $# ] && break
  sleep 0.02; i=$((i+1))
done
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


# A path that breaks offloaded checksums delivers nothing; a working one delivers every byte.
L4_BYTES = 1 << 20
L4_LIMIT_S = 60  # a loaded host of TCG guests moves 1 MiB in well under this
L4_STALL_S = 10  # no byte for this long: the path carries nothing

# $1 = ADDRESS, $2 = PORT, $3 = bytes, $4 = seconds the server may live. A file of random
# bytes and an HTTP server for it bound to the lab address: busybox's httpd where there is
# one (tiny), else Python's (every cloud image has python3 for cloud-init). The file's size
# and MD5 are computed in the background while the server starts and the receiver fetches,
# into sum (written whole by a rename), which _SEND_DONE prints; the server's pid goes next
# to the file, for _SEND_DONE.
_SEND = _LISTENING + r"""
d=/tmp/vl-l4.$2; mkdir -p "$d"
dd if=/dev/urandom of="$d/blob" bs=65536 count=$(($3 / 65536)) 2> /dev/null
( wc -c < "$d/blob" > "$d/sum.part"; md5sum < "$d/blob" >> "$d/sum.part"
  mv "$d/sum.part" "$d/sum" ) > /dev/null 2>&1 < /dev/null &
if command -v httpd > /dev/null; then set -- "$1" "$2" "$3" "$4" httpd -f -p "$1:$2" -h "$d"
elif command -v busybox > /dev/null && busybox httpd --help > /dev/null 2>&1; then
  set -- "$1" "$2" "$3" "$4" busybox httpd -f -p "$1:$2" -h "$d"
else set -- "$1" "$2" "$3" "$4" python3 -m http.server --bind "$1" --directory "$d" "$2"
fi
a=$1; port=$2; life=$4; shift 4
timeout -s KILL "$life" "$@" > /dev/null 2>&1 < /dev/null & echo $! > "$d/pid"
i=0
while [ $i -lt 250 ] && ! listening "$port"; do sleep 0.02; i=$((i+1)); done
"""
# $1 = ADDRESS, $2 = PORT, $3 = seconds in all, $4 = seconds without progress (a path that
# carries nothing fails fast; a slow one has all the time it needs). Fetch the sender's
# file (wget, else curl, else python3); its size and MD5. The script waits for the client
# itself, so it goes on the moment the client ends; a watchdog beside it (its output away
# from the agent's pipes, which the agent reads to their end) ends a client that outlives
# $3 s or makes no progress for $4 s.
_RECEIVE = r"""
f=/tmp/vl-l4-recv.$2; u="http://$1:$2/blob"
echo "@@ snmp before"; cat /proc/net/snmp
if command -v wget > /dev/null; then wget -q -O "$f" "$u" & w=$!
elif command -v curl > /dev/null; then curl -sf -o "$f" "$u" & w=$!
else python3 -c 'import shutil, sys, urllib.request as r
with r.urlopen(sys.argv[1], timeout=60) as i, open(sys.argv[2], "wb") as o:
    shutil.copyfileobj(i, o)' "$u" "$f" & w=$!
fi
( last=-1; still=0; ticks=0  # ticks of 0.2 s
  while kill -0 "$w"; do
    sleep 0.2; ticks=$((ticks + 1))
    n=0; [ -e "$f" ] && n=$(wc -c < "$f")
    if [ "$n" = "$last" ]; then still=$((still + 1)); else still=0; last=$n; fi
    if [ $still -ge $(($4 * 5)) ] || [ $ticks -ge $(($3 * 5)) ]; then kill "$w"; break; fi
  done ) > /dev/null 2>&1 < /dev/null &
dog=$!
wait "$w"; rc=$?
kill "$dog" 2> /dev/null
echo "@@ received $rc"; wc -c < "$f"; md5sum < "$f"; rm -f "$f"
echo "@@ snmp after"; cat /proc/net/snmp
"""
# $1 = PORT: stop the sender's server, print the file's size and MD5 (waiting for _SEND's
# background sum, 10 s at most), and remove the file.
_SEND_DONE = r"""
d=/tmp/vl-l4.$1
[ -r "$d/pid" ] && read -r p < "$d/pid" && kill "$p" 2> /dev/null
i=0
while [ -d "$d" ] && [ ! -e "$d/sum" ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done
echo "@@ sent"; [ -r "$d/sum" ] && while IFS= read -r l; do echo "$l"; done < "$d/sum"
rm -rf "$d"
"""


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
    """iperf3 from ``a`` to ``b`` for ``secs``, one stream per port; rates and queue deltas."""
    da, db = doms.get(a.domain), doms.get(b.domain)
    iface = views[a.domain].iface(a)
    if da is None or db is None or iface is None or views[b.domain].error:
        return "a guest of the pair is not up"
    try:
        run_sh(db, _SERVERS, [str(secs + 30), *map(str, ports)], timeout=20)
        args = [iface.ifname, iface.parent, b.address or "", str(secs),
                "pin" if pinned else "-", *map(str, ports)]
        _c, out, err = run_sh(da, _CLIENTS, args, timeout=secs + 40)
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
    return {"streams": streams, "tx_queue_packets": parse.deltas(b0, b1, a.queues),
            "stderr": err.strip()[-200:]}


def _transfer(doms: dict[str, libvirt.virDomain | None], views: dict[str, GuestView],
              a: Endpoint, b: Endpoint, port: int) -> dict[str, Any] | str:
    """Move ``L4_BYTES`` from ``a`` to ``b``; what each side counted."""
    da, db = doms.get(a.domain), doms.get(b.domain)
    if da is None or db is None or views[a.domain].error or views[b.domain].error:
        return "a guest of the pair is not up"
    try:
        _c, _o, err = run_sh(da, _SEND, [a.address or "", str(port), str(L4_BYTES),
                                         str(L4_LIMIT_S + 15)], timeout=30)
        try:
            _c, got, _e = run_sh(db, _RECEIVE, [a.address or "", str(port), str(L4_LIMIT_S),
                                                str(L4_STALL_S)], timeout=L4_LIMIT_S + 15)
        finally:
            _c, sent, _e = run_sh(da, _SEND_DONE, [str(port)], timeout=30)
    except agent.AgentError as exc:
        return str(exc)
    blocks, received = parse.sections(sent), parse.sections(got)
    header = next((h for h in received if h.startswith("received")), "received")
    rc = header.split()[1] if len(header.split()) > 1 else ""
    before = _csum_errors(received.get("snmp before", ""))
    after = _csum_errors(received.get("snmp after", ""))
    return {
        "sent": parse.size_and_md5(blocks.get("sent", "")),
        "received": parse.size_and_md5(received.get(header, "")),
        "wget_exit": int(rc) if rc.isdigit() else None,
        "peer_tcp_in_csum_errors": after - before if None not in (before, after) else None,
        "stderr": err.strip()[-200:],
    }


def tcp_check(doms: dict[str, libvirt.virDomain | None], views: dict[str, GuestView],
              a: Endpoint, b: Endpoint, pool: PortPool) -> Check:
    """``L4_BYTES`` of random data over TCP from ``a`` to ``b``: pass when every byte
    arrived unaltered."""
    target = pair_target(a, b)
    result = _transfer(doms, views, a, b, pool.take(1)[0])
    if isinstance(result, str):
        return verdict("l4.tcp", target, [f"could not run: {result}"], {})
    sent, got = result["sent"], result["received"]
    evidence = {"from": a.address, "to": b.address, **result}
    problems = []
    if sent[0] != L4_BYTES:
        problems.append(f"the sender could not make its {L4_BYTES}-byte file: {sent}")
    elif got != sent:
        why = (f"{sent[0]} bytes sent over TCP {a.address} -> {b.address}, {got[0]} arrived"
               f"{'' if got[0] != sent[0] else ' altered (MD5 differs)'} (wget exit "
               f"{result['wget_exit']})")
        if result["peer_tcp_in_csum_errors"]:
            why += (f"; the receiver counted {result['peer_tcp_in_csum_errors']} TCP "
                    "checksum errors: segments arrive with the checksum the guest left to "
                    "offload, which the path never completed")
        problems.append(why)
    return verdict("l4.tcp", target, problems, evidence,
                   f"{got[0]} bytes over TCP arrived unaltered (MD5 {got[1][:12]}), "
                   f"{result['peer_tcp_in_csum_errors']} checksum errors")


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
