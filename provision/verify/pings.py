"""The reachability matrix, pinged from inside the guests (one guest-exec per VM and kind,
every ping of it at once): ``reach`` and ``isolation`` together; the isolation pings listen
for silence until the window grounded in the reach round trips of the same run
(``silence``) has passed, when the host, having those round trips, closes it.

Scripts here are constant text; targets reach them as positional arguments, never
interpolated into the script.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
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
# $1 = TOKEN, $2 = ping's own deadline, $3..: "IFNAME,ADDRESS" targets. Isolation pings,
# every one at once, beside the reach pings; their outputs in /tmp/vl-iso.TOKEN. "start"
# holds the guest's uptime once every ping was started, and their pids, for _CLOSE, which
# ends them (SIGINT: busybox and iputils ping print their statistics on it) when the window
# the reach round trips ground has passed, and writes its uptime then in "stop". "@@
# listened T0 T1 [TS]": the start, when the pings had ended, and the stop if there was one.
_LISTEN = r"""
d=/tmp/vl-iso.$1; secs=$2; shift 2; mkdir -p "$d"
k=0; pids=""
for t in "$@"; do
  ping -c 3 -i 0.2 -W "$secs" -w "$secs" -I "${t%%,*}" "${t#*,}" > "$d/$k" 2>&1 &
  pids="$pids $!"; k=$((k+1))
done
read -r t0 _ < /proc/uptime
echo "$t0$pids" > "$d/start.part"; mv "$d/start.part" "$d/start"
wait
read -r t1 _ < /proc/uptime; ts=
[ -r "$d/stop" ] && read -r ts < "$d/stop"
echo "@@ listened $t0 $t1 $ts"
k=0
for t in "$@"; do
  echo "@@ $k"; while IFS= read -r l; do echo "$l"; done < "$d/$k"; k=$((k+1))
done
: > "$d/over"
"""
# $1 = TOKEN, $2 = the window in centiseconds: once _LISTEN's pings have listened that long
# (by the guest's clock, from "start"), SIGINT them; then remove the directory once _LISTEN
# has printed (never before: a ping's output is its verdict; never a ping that ended: its
# pid may be another process's by then). Integer arithmetic on /proc/uptime's two
# decimals; builtins but for sleep, rm.
_CLOSE = r"""
d=/tmp/vl-iso.$1; i=0
while [ ! -r "$d/start" ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done
read -r t0 pids < "$d/start" || exit 0
read -r now _ < /proc/uptime
end=$(( ${t0%.*}${t0#*.} + $2 )); cur=$(( ${now%.*}${now#*.} ))
if [ "$cur" -lt "$end" ]; then
  w=$((end - cur)); r=$((w % 100)); [ "$r" -lt 10 ] && r=0$r; sleep "$((w / 100)).$r"
fi
read -r ts _ < /proc/uptime; echo "$ts" > "$d/stop"
[ -e "$d/over" ] || kill -INT $pids 2> /dev/null
i=0; while [ ! -e "$d/over" ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done
[ -e "$d/over" ] && rm -rf "$d"
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
    runnable, out = _runnable(view, pings, lambda p: f",{p.size},{p.seconds},{p.rounds}")
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


def _runnable(view: GuestView, pings: list[Ping],
              more: Callable[[Ping], str] = lambda _p: "",
              ) -> tuple[list[tuple[Ping, str]], dict[Ping, str]]:
    """The pings whose source interface the guest has, each with its script argument
    ("IFNAME,ADDRESS" and what ``more`` adds), and why the others cannot run."""
    runnable, out = [], {}
    for p in pings:
        iface = view.iface(p.src)
        if iface is None:
            out[p] = view.missing(p.src)
        else:
            runnable.append((p, f"{iface.ifname},{p.dst.address}{more(p)}"))
    return runnable, out


def listen_from(dom: libvirt.virDomain | None, view: GuestView, pings: list[Ping],
                token: str) -> tuple[dict[Ping, tuple[int, int, str] | str], float | None]:
    """Start one VM's isolation pings at once; they listen until ``close_window`` ends them
    (or their own deadline). Per ping (sent, received, output) or why it did not run, and
    the seconds the guest measured them listen (None when it did not say)."""
    if dom is None or view.error:
        return {p: (view.error or "the domain is not running") for p in pings}, None
    runnable, out = _runnable(view, pings)
    if not runnable:
        return out, None
    args = [token, str(ISOLATION_DEADLINE_S), *[arg for _p, arg in runnable]]
    try:
        _code, text, err = run_sh(dom, _LISTEN, args,
                                  timeout=ISOLATION_DEADLINE_S + 30 + 2 * len(runnable))
    except agent.AgentError as exc:
        return {**out, **{p: str(exc) for p, _ in runnable}}, None
    blocks = parse.sections(text)
    for k, (p, _arg) in enumerate(runnable):
        body = blocks.get(str(k), err.strip())
        sent, received = parse.ping_counts(body)
        out[p] = (sent, received, body.strip())
    return out, listened(blocks)


def close_window(dom: libvirt.virDomain | None, view: GuestView, pings: list[Ping],
                 token: str, window: float) -> None:
    """End ``listen_from``'s pings once they have listened ``window`` seconds. Nothing to
    do where ``listen_from`` started none; a guest that does not answer keeps them until
    their own deadline."""
    if dom is None or view.error or not _runnable(view, pings)[0]:
        return
    with contextlib.suppress(agent.AgentError):
        run_sh(dom, _CLOSE, [token, str(round(window * 100))], timeout=window + 30)


def listened(blocks: dict[str, str]) -> float | None:
    """Seconds from the ``@@ listened T0 T1 [TS]`` uptimes: from the start until the pings
    ended or were stopped, whichever came first."""
    header = next((h for h in blocks if h.startswith("listened ")), "")
    try:
        t0, *ends = (float(w) for w in header.split()[1:])
    except ValueError:
        return None
    return round(min(ends) - t0, 2) if ends else None


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
    if sent == 0 and received == 0:
        last = text.strip().splitlines()[-1:] or ["no output"]
        return verdict("isolation", target, [f"{p.src.address} sent no probe to "
                       f"{p.dst.address}, so its silence proves nothing: {last[0]}"],
                       {**base, "sent": 0, "received": 0, "output": text[-300:]})
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
