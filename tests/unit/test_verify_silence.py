"""The isolation window: grounded in the reach round trips of the same run on the same
bridge, the whole deadline whenever that measurement is missing or lossy."""

from __future__ import annotations

from provision.verify import parse, pings, silence
from provision.verify.silence import ISOLATION_DEADLINE_S, SILENCE_FLOOR_S, ReachSample

from .test_verify_checks import VM1, VM3

BUSYBOX = """\
PING 10.10.0.12 (10.10.0.12): 56 data bytes
64 bytes from 10.10.0.12: seq=0 ttl=64 time=6.690 ms
64 bytes from 10.10.0.12: seq=1 ttl=64 time=26.8 ms

--- 10.10.0.12 ping statistics ---
3 packets transmitted, 2 packets received, 33% packet loss
round-trip min/avg/max = 6.690/16.745/26.800 ms
"""


def test_round_trips_are_read_per_reply() -> None:
    assert parse.ping_rtts(BUSYBOX) == (6.69, 26.8)
    assert parse.ping_rtts("64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.045 ms") == (0.045,)
    assert parse.ping_rtts("3 packets transmitted, 0 packets received") == ()


def test_a_fast_clean_bridge_listens_for_the_floor() -> None:
    w = silence.bridge_window([ReachSample("br", ((3, 3),), (3.2, 2.1, 1.6)),
                               ReachSample("br", ((3, 3),), (4.0,))])
    assert w.seconds == SILENCE_FLOOR_S and w.slowest_rtt_ms == 4.0
    assert "4.0 ms" in w.basis


def test_the_window_grows_with_the_slowest_round_trip_up_to_the_deadline() -> None:
    assert silence.bridge_window([ReachSample("br", ((3, 3),), (80.0, 5.0))]).seconds == 0.8
    slow = silence.bridge_window([ReachSample("br", ((3, 3),), (450.0,))])
    assert slow.seconds == ISOLATION_DEADLINE_S


def test_a_lost_probe_or_no_measurement_means_the_whole_deadline() -> None:
    lossy = silence.bridge_window([ReachSample("br", ((3, 3),), (2.0,)),
                                   ReachSample("br", ((3, 0), (3, 3)), (2.0, 2.0, 2.0))])
    assert lossy.seconds == ISOLATION_DEADLINE_S and "lost probes" in lossy.basis
    assert silence.bridge_window([ReachSample("br", (), ())]).seconds == ISOLATION_DEADLINE_S
    assert silence.bridge_window([]).seconds == ISOLATION_DEADLINE_S


def test_windows_are_per_bridge() -> None:
    got = silence.windows([ReachSample("br-a", ((3, 3),), (1.0,)),
                           ReachSample("br-b", ((3, 1),), (5.0,))], ["br-a", "br-b", "br-c"])
    assert [got[b].seconds for b in ("br-a", "br-b", "br-c")] == [
        SILENCE_FLOOR_S, ISOLATION_DEADLINE_S, ISOLATION_DEADLINE_S]


def test_a_reach_ping_that_did_not_run_counts_as_lost() -> None:
    reach = pings.Ping("reach", VM1, VM3)
    assert pings.reach_sample(reach, "agent silent") == ReachSample(VM1.bridge, (), ())
    assert pings.reach_sample(reach, (3, 2, BUSYBOX)).rtts_ms == (6.69, 26.8)
    assert not pings.reach_sample(reach, (3, 2, BUSYBOX)).clean


# busybox `ping -A -c 3` sent a fourth probe before the third reply and exited at it
# (16-VM lab, round trips of 90-560 ms): three replies of three asked for, no loss.
FOURTH_PROBE = """\
64 bytes from 10.89.0.3: seq=0 ttl=64 time=90.470 ms
64 bytes from 10.89.0.3: seq=1 ttl=64 time=556.007 ms
64 bytes from 10.89.0.3: seq=2 ttl=64 time=477.561 ms

--- 10.89.0.3 ping statistics ---
4 packets transmitted, 3 packets received, 25% packet loss
round-trip min/avg/max = 90.470/374.679/556.007 ms
exit 0"""


def test_an_extra_probe_sent_before_the_last_reply_is_no_loss() -> None:
    sample = pings.reach_sample(pings.Ping("reach", VM1, VM3), (4, 3, FOURTH_PROBE))
    assert sample.rounds == ((4, 3),) and sample.clean
    assert silence.bridge_window([sample]).seconds == 2  # 10 x 556 ms, at most the deadline


def test_isolation_evidence_says_how_long_it_listened_and_why() -> None:
    iso = pings.Ping("isolation", VM1, VM3)
    window = silence.bridge_window([ReachSample(VM1.bridge, ((3, 3),), (2.0,))])
    check = pings.isolation_check(iso, (3, 0, ""), None, window, 0.52)
    assert check.evidence["window_s"] == SILENCE_FLOOR_S
    assert check.evidence["listened_s"] == 0.52 and "reach round trips" in \
        check.evidence["window_basis"]
    assert f"in {SILENCE_FLOOR_S:g} s" in check.detail


def test_listened_runs_from_the_start_to_the_stop_or_the_pings_own_end() -> None:
    stopped = parse.sections("@@ listened 563.27 563.87 563.79\n@@ 0\nPING\n")
    assert pings.listened(stopped) == 0.52  # stopped at the end of the window
    ended = parse.sections("@@ listened 563.27 565.30 565.90\n@@ 0\nPING\n")
    assert pings.listened(ended) == 2.03  # the deadline came first; the stop found them gone
    assert pings.listened(parse.sections("@@ listened 563.27 565.30 \n")) == 2.03
    assert pings.listened({"0": ""}) is None


def test_a_shortened_window_vouches_only_for_a_ping_that_listened_through_it() -> None:
    short = silence.bridge_window([ReachSample("br", ((3, 3),), (2.0,))])
    assert short.seconds == SILENCE_FLOOR_S
    assert silence.vouches(short, 3, 0.5)
    assert not silence.vouches(short, 2, 0.52)  # started late: its last probe barely out
    assert not silence.vouches(short, 3, 0.31)  # the guest stopped listening too soon
    assert not silence.vouches(short, 3, None)  # the guest did not say how long
    assert not silence.vouches(short, 0, 0.52)  # an error: nothing was sent
    full = silence.full_deadline("no measurement")
    assert silence.vouches(full, 1, None) and not silence.vouches(full, 0, 2.0)


def test_an_isolation_ping_that_sent_nothing_fails_instead_of_passing_as_silence() -> None:
    iso = pings.Ping("isolation", VM1, VM3)
    out = "ping: sendto: Network unreachable\nexit 1\n"
    check = pings.isolation_check(iso, (0, 0, out), None)
    assert check.status == "fail" and "sent no probe" in check.detail
    assert "exit 1" in check.detail
    missing = pings.isolation_check(iso, (*parse.ping_counts(""), ""), None)
    assert missing.status == "fail" and "no output" in missing.detail
