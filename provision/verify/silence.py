"""How long an ``isolation`` ping listens for silence, grounded in the round trips the
``reach`` pings of the same run measured on the same bridge.

Why a measured round trip bounds a leak. An isolation ping goes from a NIC on one VLAN to
an address of the same subnet on another VLAN of the same bridge. If the VLANs leaked, its
answer would need two exchanges over that bridge: the ARP request and reply, then the echo
and its reply; each crosses the same taps, the same OVS bridge and the same guest kernels
(ARP and ICMP echo are both answered in the peer's softirq) as a ``reach`` ping's echo. The
reach pings run at the same time as the isolation pings, under the same load, and the host
ends the isolation pings only once the reach round trips are in and the window they ground
has passed (by the guest's clock, from when every isolation ping was started). A reach
round trip is one exchange (the queues check has just resolved the neighbours) or two (an
ARP exchange first). The window is ``RTT_FACTOR`` times
the slowest reply any reach ping on the bridge saw: five times the two exchanges a leak
needs, and never less than ``SILENCE_FLOOR_S`` (a ping process starting in a TCG guest) nor
more than ``ISOLATION_DEADLINE_S``, the fixed wait it replaces.

The measurement must be clean to count: every reach ping on the bridge got its
``REACH_PROBES`` replies in its first round. (Busybox's ``ping -A -c 3`` may send a fourth
probe before the third reply is in and exit at that reply: "4 transmitted, 3 received" is
not a loss.) A lost probe means the path loses frames now, and a lost ARP request is
sent again only after the kernel's 1 s retransmit time, so such a bridge (or one whose NICs
have no reach pair to measure by) gets the whole deadline, as before. A loaded lab's round
trips grow, and its window with them, up to the deadline.

A leak's first exchange is colder than a reach ping's: an ARP broadcast flooded by the
bridge and new datapath flows (an upcall to ovs-vswitchd). The floor covers that: with the
neighbours flushed, a leaked VLAN answered within 23-42 ms on this 2-core host at load 7.

A shortened window vouches only for a ping that really listened through it (``vouches``):
one that sent all its probes (it did not start late) and whose guest measured the whole
window. Any other listens again alone, for the whole deadline (``verify.runner``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ISOLATION_DEADLINE_S = 2  # the longest wait: what every isolation ping waited before
SILENCE_FLOOR_S = 0.5  # the shortest: covers starting the ping processes in a TCG guest
RTT_FACTOR = 10  # window = factor x the slowest reach round trip on the bridge
REACH_PROBES = 3  # the replies a reach ping's round waits for (pings._PING_ALL's ping -c)
ISOLATION_PROBES = 3  # probes an isolation ping sends (pings._LISTEN's ping -c 3 -i 0.2)


@dataclass(frozen=True)
class ReachSample:
    """What one reach ping on a bridge saw: (probes sent, replies) of each round it ran,
    and each reply's time."""

    bridge: str
    rounds: tuple[tuple[int, int], ...]
    rtts_ms: tuple[float, ...]

    @property
    def clean(self) -> bool:
        """Every reply of the first round came, and no further round was needed."""
        return (len(self.rounds) == 1 and self.rounds[0][1] >= REACH_PROBES
                and bool(self.rtts_ms))


@dataclass(frozen=True)
class Window:
    """How long isolation pings on a bridge listen, and why, for the evidence."""

    seconds: float
    basis: str
    slowest_rtt_ms: float | None = None

    def evidence(self) -> dict[str, object]:
        return {"window_s": self.seconds, "window_basis": self.basis,
                "slowest_reach_rtt_ms": self.slowest_rtt_ms}


def vouches(window: Window, sent: int, listened_s: float | None) -> bool:
    """Whether an isolation ping's silence holds for ``window``: it sent a probe; and when
    the window is shorter than the deadline, it sent all ``ISOLATION_PROBES`` (its first
    probe then went out at least 0.4 s before the window closed: it did not start late)
    and the guest measured the whole window (uptime has two decimals)."""
    if sent == 0:
        return False
    if window.seconds >= ISOLATION_DEADLINE_S:
        return True
    return (sent >= ISOLATION_PROBES and listened_s is not None
            and listened_s + 0.01 >= window.seconds)


def full_deadline(why: str) -> Window:
    return Window(float(ISOLATION_DEADLINE_S), f"the full {ISOLATION_DEADLINE_S} s: {why}")


def bridge_window(samples: list[ReachSample]) -> Window:
    """The window for one bridge from its reach pings' samples."""
    if not samples:
        return full_deadline("no reach pair on this bridge measured its round trip")
    lossy = [s for s in samples if not s.clean]
    if lossy:
        return full_deadline(f"{len(lossy)} reach ping(s) on this bridge lost probes, so "
                             "a lost ARP request would need the kernel's 1 s retransmit")
    slowest = max(max(s.rtts_ms) for s in samples)
    grounded = RTT_FACTOR * slowest / 1000
    seconds = round(min(float(ISOLATION_DEADLINE_S), max(SILENCE_FLOOR_S, grounded)), 2)
    return Window(seconds, f"max({SILENCE_FLOOR_S} s, {RTT_FACTOR} x the slowest of "
                  f"{len(samples)} reach round trips on this bridge, {slowest:.1f} ms), "
                  f"at most {ISOLATION_DEADLINE_S} s", slowest)


def windows(samples: Iterable[ReachSample], bridges: Iterable[str]) -> dict[str, Window]:
    """Each bridge's window, from every reach sample of the run."""
    by_bridge: dict[str, list[ReachSample]] = {b: [] for b in bridges}
    for s in samples:
        by_bridge.setdefault(s.bridge, []).append(s)
    return {b: bridge_window(found) for b, found in by_bridge.items()}
