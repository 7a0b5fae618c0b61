"""Every queue carries traffic: drive one flow per guest CPU between NIC pairs of a segment
and show every RX and TX queue counter advance (the guest's ``ethtool -S``, with
``/proc/interrupts`` as a second witness) and the OVS port counters advance too.

Why pings pinned to each CPU reach every queue: virtio_net maps CPU i to TX queue i (XPS),
so a ping sent from CPU i leaves on TX queue i; the host tap remembers which queue a flow
last came from and steers the reply into the same RX queue. Each side of a pair pings the
other from every CPU, so each side's every TX and RX queue moves.

But ICMP has no ports: all pings between two addresses share one flow hash, so one entry in
the tap. While the peer pings this guest at the same time, this guest's replies to it leave
by whichever CPU took the interrupt and move that entry, and a reply to this guest's own ping
can be steered elsewhere (seen: a 4-queue NIC of a 16-VM lab with rx0 idle, 1 verify in 3,
more often the slower the guests). So a guest whose NIC left an RX queue idle drives its
flows once more alone, when every other guest is quiet (``QUIET_RERUN``); its counters are
the sum of both runs, and the evidence says so.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import libvirt

from provision.backends import agent, unixctl
from provision.backends.ovs import Ovs
from provision.engine.converge import parallel
from provision.verify import parse
from provision.verify.guest import GuestView, run_sh
from provision.verify.host_checks import interface_stats
from provision.verify.matrix import Endpoint
from provision.verify.model import Check, skipped, verdict

# $1 = CPUs, $2 = interfaces (space separated), $3.. = "IFNAME,PEER" targets. Each flow is
# three pings from one CPU, the next sent as soon as a reply is in (-A; -i 0.1 when one is
# lost): ~3 round trips per CPU instead of 0.2 s, and the same packets on the same queues.
# The device name (virtioN, for /proc/interrupts) through `cd -P`: builtins, no fork.
_QUEUE_TRAFFIC = r"""
cpus=$1; ifs=$2; shift 2
snap() {
  for n in $ifs; do
    dev=; cd -P "/sys/class/net/$n/device" 2> /dev/null && dev=${PWD##*/}; cd /
    echo "@@ $1 ethtool $n $dev"
    ethtool -S "$n"
  done
  echo "@@ $1 interrupts"; cat /proc/interrupts
}
snap before
c=0
while [ "$c" -lt "$cpus" ]; do
  for t in "$@"; do
    taskset -c "$c" ping -q -A -c 3 -i 0.1 -W 2 -w 3 -I "${t%%,*}" "${t#*,}" > /dev/null 2>&1 &
  done
  wait
  c=$((c+1))
done
snap after
"""
QUIET_RERUN = ("an RX queue stayed idle while its peers pinged it too (one tap flow entry per "
               "address pair), so this guest drove its flows once more alone; the counts are "
               "both runs' sum")
LIVE = "ovs-vswitchd dpctl/show"  # where the OVS counters came from, for the evidence
PUBLISHED = "OVSDB Interface statistics"
PINGS_PER_CPU = 3
OVS_STATS_INTERVAL_MS = 5000  # ovs-vswitchd's default other_config:stats-update-interval

Counters = dict[str, Any]  # "ethtool": {label: {ifname: (device, stats)}}, "irq": {label: ..}


def _drive(dom: libvirt.virDomain | None, view: GuestView, vcpus: int,
           flows: list[tuple[Endpoint, Endpoint]]) -> Counters | str:
    """Run one VM's flows (one per CPU and target); its counters before and after."""
    if dom is None or view.error:
        return view.error or "the domain is not running"
    targets, ifnames = [], []
    for src, dst in flows:
        iface = view.iface(src)
        if iface is None:
            return view.missing(src)
        targets.append(f"{iface.ifname},{dst.address}")
        ifnames.append(iface.parent)  # a VLAN's traffic moves its NIC's queues
    args = [str(vcpus), " ".join(sorted(set(ifnames))), *targets]
    try:
        code, out, err = run_sh(dom, _QUEUE_TRAFFIC, args, timeout=30 + 4 * vcpus)
    except agent.AgentError as exc:
        return str(exc)
    if code != 0:
        return f"the traffic script failed ({code}): {err.strip()}"
    counters: Counters = {"ethtool": defaultdict(dict), "irq": {}}
    for header, body in parse.sections(out).items():
        words = header.split()
        if len(words) >= 3 and words[1] == "ethtool":
            device = words[3] if len(words) > 3 else ""
            counters["ethtool"][words[0]][words[2]] = (device, parse.ethtool_stats(body))
        elif len(words) == 2 and words[1] == "interrupts":
            counters["irq"][words[0]] = parse.interrupts(body)
    return counters


def _needs_quiet_rerun(eps: list[Endpoint], views: dict[str, GuestView],
                       results: dict[str, list[Counters] | str]) -> list[str]:
    """The domains with a NIC whose traffic left an RX queue idle where every RX queue must
    move (untagged), in the order of ``eps``."""
    out: list[str] = []
    for ep in eps:
        runs, iface = results[ep.domain], views[ep.domain].iface(ep)
        if isinstance(runs, str) or iface is None or ep.guest_vlan is not None:
            continue
        d = _summed_deltas(runs, iface.parent, ep.queues)
        if any(q.startswith("rx") for q in _idle_queues(d)) and ep.domain not in out:
            out.append(ep.domain)
    return out


def _summed_deltas(runs: list[Counters], ifname: str, queues: int) -> dict[str, Any]:
    """``_queue_deltas`` of each run, added queue by queue (None where a run lacks one)."""
    each = [_queue_deltas(c, ifname, queues) for c in runs]
    out = dict(each[0])
    for key in ("rx_packets", "tx_packets", "rx_interrupts", "tx_interrupts"):
        out[key] = [None if any(v is None for v in col) else sum(col)  # type: ignore[arg-type]
                    for col in zip(*(d[key] for d in each), strict=True)]
    if any(d["source"] == "ethtool -S" for d in each):
        out["source"] = "ethtool -S"
    return out


def _queue_deltas(counters: Counters, ifname: str, queues: int) -> dict[str, Any]:
    before = counters["ethtool"].get("before", {}).get(ifname, ("", {}))
    after = counters["ethtool"].get("after", {}).get(ifname, ("", {}))
    rx0, tx0 = parse.queue_packets(before[1])
    rx1, tx1 = parse.queue_packets(after[1])
    device = after[0] or before[0]
    irx0, itx0 = parse.interrupt_queues(counters["irq"].get("before", {}), device)
    irx1, itx1 = parse.interrupt_queues(counters["irq"].get("after", {}), device)
    return {
        "rx_packets": parse.deltas(rx0, rx1, queues),
        "tx_packets": parse.deltas(tx0, tx1, queues),
        "rx_interrupts": parse.deltas(irx0, irx1, queues),
        "tx_interrupts": parse.deltas(itx0, itx1, queues),
        "device": device,
        "source": "ethtool -S" if rx1 or tx1 else "/proc/interrupts",
    }


def _idle_queues(d: dict[str, Any], every_rx: bool = True) -> list[str]:
    """Queues that did not move; with ``every_rx`` False, RX counts as moved when any RX
    queue did."""
    rx = d["rx_packets"] if d["source"] == "ethtool -S" else d["rx_interrupts"]
    tx = d["tx_packets"] if d["source"] == "ethtool -S" else d["tx_interrupts"]
    idle = [f"rx{q}" for q, v in enumerate(rx) if not v]
    if not every_rx and len(idle) < len(rx):
        idle = []
    return idle + [f"tx{q}" for q, v in enumerate(tx) if not v]


# Why a VLAN interface's RX is judged as a whole. Measured here (OVS netdev): tagged frames
# from five addresses all arrived on one RX queue of a 4-queue NIC while untagged frames of
# the same pings spread over all four, so the tap's flow hash does not see past the tag.
TAGGED_RX = ("RX of tagged frames: the host tap picks the RX queue by a flow hash that, on "
             "OVS's userspace datapath, does not see past the VLAN tag, so every TX queue "
             "and some RX queue must move")


def _stats_interval(ovs: Ovs) -> float:
    rows = list(ovs.api.tables["Open_vSwitch"].rows.values())
    other = dict(rows[0].other_config) if rows else {}
    try:
        return int(other.get("stats-update-interval", OVS_STATS_INTERVAL_MS)) / 1000
    except ValueError:
        return OVS_STATS_INTERVAL_MS / 1000


def _ovs_counters(ovs: Ovs, names: list[str]) -> tuple[dict[str, dict[str, int]], str]:
    """The ports' packet counters: live from ovs-vswitchd (``dpctl/show -s``) when it answers
    for every port, else OVSDB's Interface statistics (published every few seconds)."""
    try:
        live = unixctl.port_stats(names)
        if set(live) == set(names):
            return live, LIVE
    except unixctl.UnixctlError:
        pass
    return interface_stats(ovs, names), PUBLISHED


def _wait_ovs(ovs: Ovs, before: dict[str, dict[str, int]], source: str,
              ) -> tuple[dict[str, dict[str, int]], float]:
    """OVS counters once every port has moved both ways, or at the deadline: a moment for
    live counters (frames still in flight), a stats-update-interval for OVSDB's."""
    start = time.monotonic()
    deadline = start + (2.0 if source == LIVE else _stats_interval(ovs) + 2.0)
    while True:
        after = (unixctl.port_stats(list(before)) if source == LIVE
                 else interface_stats(ovs, list(before)))
        moved = all(after.get(n, {}).get(k, 0) > v[k] for n, v in before.items()
                    for k in ("rx_packets", "tx_packets"))
        if moved or time.monotonic() >= deadline:
            return after, time.monotonic() - start
        time.sleep(0.2)


def _queue_check(ep: Endpoint, peers: list[str], view: GuestView,
                 result: list[Counters] | str, ovs: dict[str, Any]) -> Check:
    iface = view.iface(ep)
    if isinstance(result, str) or iface is None:
        why = result if isinstance(result, str) else view.missing(ep)
        return verdict("queues", ep.target, [f"could not drive traffic: {why}"],
                       {"peers": peers})
    d = _summed_deltas(result, iface.parent, ep.queues)
    if len(result) > 1:
        d["runs"], d["rerun"] = len(result), QUIET_RERUN
    flows = ep.vcpus * len(peers)
    problems = []
    every_rx = ep.guest_vlan is None
    idle = _idle_queues(d, every_rx)
    if idle:
        problems.append(f"queues without traffic: {' '.join(idle)} (of {ep.queues})")
    if ovs["rx_packets"] <= 0 or ovs["tx_packets"] <= 0:
        problems.append(f"OVS port {ep.tap} counters did not advance in "
                        f"{ovs['waited_s']} s (rx +{ovs['rx_packets']}, "
                        f"tx +{ovs['tx_packets']})")
    evidence = {"ifname": iface.ifname, "nic": iface.parent, "peers": peers, "flows": flows,
                **d, "ovs": ovs, "rx_required": "every queue" if every_rx else TAGGED_RX}
    rx = f"{ep.queues} RX" if every_rx else \
        f"{sum(1 for v in d['rx_packets'] if v)}/{ep.queues} RX (tagged)"
    ok = (f"{rx} + {ep.queues} TX queues moved ({d['source']}), {flows} flows sent, "
          f"OVS rx +{ovs['rx_packets']} tx +{ovs['tx_packets']}"
          + ("; driven twice, the second time alone" if len(result) > 1 else ""))
    return verdict("queues", ep.target, problems, evidence, ok)


def queue_checks(ovs: Ovs, doms: dict[str, libvirt.virDomain | None],
                 views: dict[str, GuestView], pairs: list[tuple[Endpoint, Endpoint]],
                 lonely: list[tuple[Endpoint, str]]) -> list[Check]:
    """One ``queues`` check per NIC here: pass, fail, or skip when it has no peer. A peer on
    another hypervisor gets this NIC's flows, and its replies come back on the queue each
    flow left by, so every queue of a NIC whose only peers are remote moves as well."""
    checks = [skipped("queues", ep.target, reason) for ep, reason in lonely]
    flows: dict[str, list[tuple[Endpoint, Endpoint]]] = defaultdict(list)
    vcpus: dict[str, int] = {}
    for a, b in pairs:
        for src, dst in ((a, b), (b, a)):
            if src.domain not in views:  # on another hypervisor: its own verify drives it
                continue
            if (src, dst) not in flows[src.domain]:
                flows[src.domain].append((src, dst))
            vcpus[src.domain] = src.vcpus
    eps = list(dict.fromkeys(src for f in flows.values() for src, _dst in f))
    before, source = _ovs_counters(ovs, [ep.tap for ep in eps])
    results: dict[str, list[Counters] | str] = {
        d: r if isinstance(r, str) else [r] for d, r in parallel(
            lambda d: (d, _drive(doms.get(d), views[d], vcpus[d], flows[d])), list(flows))}
    for d in _needs_quiet_rerun(eps, views, results):  # one at a time: the others are quiet
        again = _drive(doms.get(d), views[d], vcpus[d], flows[d])
        results[d] = [*results[d], again] if not isinstance(again, str) else results[d]
    after, waited = _wait_ovs(ovs, before, source) if before else ({}, 0.0)
    for ep in eps:
        peers = [dst.target for src, dst in flows[ep.domain] if src == ep]
        b0, a0 = before.get(ep.tap, {}), after.get(ep.tap, {})
        ovs_delta = {k: a0.get(k, 0) - b0.get(k, 0) if b0 and a0 else 0
                     for k in ("rx_packets", "tx_packets")}
        ovs_delta["waited_s"] = round(waited, 1)
        ovs_delta["source"] = source
        checks.append(_queue_check(ep, peers, views[ep.domain], results[ep.domain],
                                   ovs_delta))
    return sorted(checks, key=lambda c: c.target)
