"""The reachability matrix, pinged from inside the guests (one guest-exec per VM and kind,
every ping of it at once): ``reach`` first, then ``isolation``, which listens for silence
for a window grounded in the reach round trips of the same run (``silence``).

Scripts here are constant text; targets reach them as positional arguments, never
interpolated into the script.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from provision.backends import agent
from provision.verify import parse
from provision.verify.guest import GuestView, healthy, run_sh
from provision.verify.matrix import Endpoint, pair_target, same_subnet
from provision.verify.model import Check, skipped, verdict
from provision.verify.silence import ISOLATION_DEADLINE_S, ReachSample, Window

# $1..: "IFNAME,ADDRESS,PAYLOAD,SECONDS,ROUNDS" targets: reach pings, every one at once; each
# ends once 3 replies came (-A: the next probe as soon as a reply is in, or after -i), or
# after ROUNDS rounds of SECONDS (-w). Outputs are echoed back with builtins (no cat, one rm).
_PING_ALL = r"""
k=0
for t in "$@"; do
  ifn=${t%%,*}; r=${t#*,}; dst=${r%%,*}; r=${r#*,}; size=${r%%,*}; r=${r#*,}
  secs=${r%%,*}; rounds=${r#*,}
  ( n=0; : > "/tmp/vl-ping.$$.$k"
    while :; do
      ping -A -c 3 -i 0.2 -W "$secs" -w "$secs" -s "$size" -I "$ifn" "$dst" \
        >> "/tmp/vl-ping.$$.$k" 2>&1
      rc=$?; n=$((n+1))
      if [ "$rc" -eq 0 ] || [ "$n" -ge "$rounds" ]; then break; fi
    done
    echo "exit $rc" >> "/tmp/vl-ping.$$.$k" ) &
  k=$((k+1))
done
wait
k=0
for t in "$@"; do
  echo "@@ $k"; while IFS= read -r l; do echo "$l"; done < "/tmp/vl-ping.$$.$k"; k=$((k+1))
done
rm -f /tmp/vl-ping.$$.*
"""
# $1 = seconds to listen (decimal), $2 = ping's own deadline, $3..: "IFNAME,ADDRESS" targets.
# Isolation pings, every one at once; after the window each one still running gets SIGINT
# (busybox and iputils ping print their statistics on it). "@@ listened T0 T1": the guest's
# uptime once every ping was started and when the window closed.
_LISTEN = r"""
win=$1; secs=$2; shift 2
k=0; pids=""
for t in "$@"; do
  ping -c 3 -i 0.2 -W "$secs" -w "$secs" -I "${t%%,*}" "${t#*,}" > "/tmp/vl-iso.$$.$k" 2>&1 &
  pids="$pids $!"; k=$((k+1))
done
read -r t0 _ < /proc/uptime
sleep "$win"
read -r t1 _ < /proc/uptime
kill -INT $pids 2> /dev/null
wait
echo "@@ listened $t0 $t1"
k=0
for t in "$@"; do
  echo "@@ $k"; while IFS= read -r l; do echo "$l"; done < "/tmp/vl-iso.$$.$k"; k=$((k+1))
done
rm -f /tmp/vl-iso.$$.*
"""



# A reach ping: up to REACH_ROUNDS rounds of three probes, each waiting REACH_DEADLINE_S for
# replies, a round only after one that got none. Three probes sent in the first 0.4 s can
# all be lost on a loaded host (the ARP request or its answer among them: measured once in
# a 16-VM lab, 64 TCG vCPUs on two cores), and busybox's ping sends no more than -c; fresh
# probes, with the neighbour's address learnt meanwhile, then get through. A healthy lab
# ends at the first round's third reply. An isolation ping listens once, for its window.
REACH_DEADLINE_S = 5
REACH_ROUNDS = 3


@dataclass(frozen=True)
class Ping:
    kind: str  # "reach" | "isolation"
    src: Endpoint
    dst: Endpoint

    @property
    def seconds(self) -> int:
        """How long the ping may wait. A reach ping ends at its third reply, so a long
        deadline costs a healthy lab nothing and lets a loaded one (many TCG guests on two
        cores) answer late; an isolation ping is stopped at the end of its window
        (``silence``), this deadline at the latest."""
        return REACH_DEADLINE_S if self.kind == "reach" else ISOLATION_DEADLINE_S

    @property
    def rounds(self) -> int:
        """Rounds of probes while none is answered: only a reach ping tries again."""
        return REACH_ROUNDS if self.kind == "reach" else 1

    @property
    def size(self) -> int:
        """ICMP payload bytes: full-size frames (the guest MTU less IP and ICMP headers) to a
        peer on another hypervisor, so the tunnel is shown to carry them; 56 otherwise."""
        if self.kind == "reach" and self.dst.outside is None and self.src.host != self.dst.host:
            return min(self.src.mtu, self.dst.mtu) - 28
        return 56


def _ping_script_limit(pings: int) -> float:
    """How long one guest's pings may take in all: every round of a reach ping, plus time
    to start them. Each ping is two processes (a subshell and ping); a one-vCPU TCG guest
    among 32 on two cores was measured to need over 30 s for 16 pings."""
    return REACH_DEADLINE_S * REACH_ROUNDS + 30 + 2 * pings


def ping_from(dom: libvirt.virDomain | None, view: GuestView,
              pings: list[Ping]) -> dict[Ping, tuple[int, int, str] | str]:
    """Run one VM's pings at once; per ping (sent, received, output) or why it did not run."""
    if dom is None or view.error:
        return {p: (view.error or "the domain is not running") for p in pings}
    runnable, out = [], {}
    for p in pings:
        iface = view.iface(p.src)
        if iface is None:
            out[p] = view.missing(p.src)
        else:
            runnable.append((p, f"{iface.ifname},{p.dst.address},{p.size},{p.seconds},"
                                f"{p.rounds}"))
    if not runnable:
        return out
    try:
        _code, text, err = run_sh(dom, _PING_ALL, [arg for _p, arg in runnable],
                                  timeout=_ping_script_limit(len(runnable)))
    except agent.AgentError as exc:
        return {**out, **{p: str(exc) for p, _ in runnable}}
    blocks = parse.sections(text)
    for k, (p, _arg) in enumerate(runnable):
        body = blocks.get(str(k), err.strip())
        sent, received = parse.ping_counts(body)
        out[p] = (sent, received, body.strip())
    return out


def reach_check(p: Ping, result: tuple[int, int, str] | str) -> Check:
    target = pair_target(p.src, p.dst)
    if isinstance(result, str):
        return verdict("reach", target, [f"could not ping: {result}"], {})
    sent, received, text = result
    evidence = {"from": p.src.address, "to": p.dst.address, "segment": p.src.segment_name(),
                "sent": sent, "received": received, "payload": p.size,
                "rtts_ms": list(parse.ping_rtts(text)), "output": text[-300:]}
    across = f" on {p.dst.host}, {p.size}-byte payloads" if p.size != 56 else ""
    problems = [] if received > 0 else [
        f"{p.dst.address}{across} does not answer {p.src.address} on {p.src.segment_name()}"]
    return verdict("reach", target, problems, evidence,
                   f"{p.src.address} -> {p.dst.address}{across}: {received}/{sent} replies")


def reach_sample(p: Ping, result: tuple[int, int, str] | str) -> ReachSample:
    """What a reach ping tells the isolation window of its bridge (nothing, if it did
    not run: counted as a loss)."""
    if isinstance(result, str):
        return ReachSample(p.src.bridge, (), ())
    text = result[2]
    return ReachSample(p.src.bridge, tuple(parse.ping_rounds(text)), parse.ping_rtts(text))


def listen_from(dom: libvirt.virDomain | None, view: GuestView, pings: list[Ping],
                window: float) -> tuple[dict[Ping, tuple[int, int, str] | str], float | None]:
    """Run one VM's isolation pings at once for ``window`` seconds: per ping (sent,
    received, output) or why it did not run, and the seconds the guest measured it listen
    (None when it did not say)."""
    if dom is None or view.error:
        return {p: (view.error or "the domain is not running") for p in pings}, None
    runnable, out = [], {}
    for p in pings:
        iface = view.iface(p.src)
        if iface is None:
            out[p] = view.missing(p.src)
        else:
            runnable.append((p, f"{iface.ifname},{p.dst.address}"))
    if not runnable:
        return out, None
    args = [f"{window:.2f}", str(ISOLATION_DEADLINE_S), *[arg for _p, arg in runnable]]
    try:
        _code, text, err = run_sh(dom, _LISTEN, args, timeout=window + 30 + 2 * len(runnable))
    except agent.AgentError as exc:
        return {**out, **{p: str(exc) for p, _ in runnable}}, None
    blocks = parse.sections(text)
    for k, (p, _arg) in enumerate(runnable):
        body = blocks.get(str(k), err.strip())
        sent, received = parse.ping_counts(body)
        out[p] = (sent, received, body.strip())
    return out, _listened(blocks)


def _listened(blocks: dict[str, str]) -> float | None:
    """Seconds between the ``@@ listened T0 T1`` uptimes."""
    header = next((h for h in blocks if h.startswith("listened ")), "")
    try:
        t0, t1 = (float(w) for w in header.split()[1:3])
    except ValueError:
        return None
    return round(t1 - t0, 2)


def isolation_check(p: Ping, result: tuple[int, int, str] | str, dst_view: GuestView | None,
                    window: Window | None = None, listened_s: float | None = None) -> Check:
    """Silence from a peer on another VLAN, for ``window`` (how long and why; None: the
    whole deadline). ``dst_view`` None: the peer runs on another hypervisor, whose own
    verify shows it up with its address."""
    target = pair_target(p.src, p.dst)
    base = {"from": p.src.address, "to": p.dst.address,
            "segments": [p.src.segment_name(), p.dst.segment_name()]}
    if not same_subnet(p.src, p.dst):
        return skipped("isolation", target, "the addresses are in different subnets: an "
                       "unanswered ping would prove routing, not VLAN isolation", base)
    if isinstance(result, str):
        return skipped("isolation", target, f"could not ping: {result}", base)
    if dst_view is not None and not healthy(dst_view.iface(p.dst), p.dst):
        return skipped("isolation", target, f"{p.dst.target} is not up with its address, so "
                       "silence would prove nothing", base)
    sent, received, text = result
    seconds = window.seconds if window else float(ISOLATION_DEADLINE_S)
    evidence = {**base, "sent": sent, "received": received, "output": text[-300:],
                **(window.evidence() if window else {"window_s": seconds}),
                "listened_s": listened_s}
    problems = [] if received == 0 else [
        f"{p.dst.address} on {p.dst.segment_name()} answers {p.src.address} on "
        f"{p.src.segment_name()}: VLANs leak"]
    return verdict("isolation", target, problems, evidence,
                   f"{p.src.address} -/-> {p.dst.address}: 0/{sent} replies in {seconds:g} s, "
                   "as required")
