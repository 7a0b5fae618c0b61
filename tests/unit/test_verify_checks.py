"""Verdicts of the per-hop checks, from observed data built by hand (no daemons, no mocks)."""

from __future__ import annotations

from provision.core.desired import GuestNic, GuestVlan, desired_state
from provision.core.observed import (
    ObservedGuestNic,
    ObservedGuestVlan,
    ObservedLab,
    ObservedPort,
    ObservedTap,
)
from provision.core.owner import Owner
from provision.verify import guest, host_checks, matrix, pings, qemu
from provision.verify.model import FAIL, PASS, SKIP

from .helpers import IMAGE, caps
from .test_verify_matrix import DEMO

EPS = matrix.endpoints(DEMO)
VM1, VM2, VM3 = EPS
WANT = desired_state(DEMO, caps(), IMAGE)
NIC1 = GuestNic("t-vm1", VM1.mac, "10.0.0.1/24", 2)
IDS = {"virtio-lab-lab": "t", "virtio-lab-vm": "vm1", "virtio-lab-nic": "0"}


def gnic(**kw: object) -> ObservedGuestNic:
    base: dict[str, object] = {"mac": VM1.mac, "ifname": "eth0", "combined": 2,
                               "max_combined": 2, "addresses": ("10.0.0.1/24",), "up": True,
                               "driver": "virtio_net"}
    base.update(kw)
    return ObservedGuestNic(**base)  # type: ignore[arg-type]


def test_guest_nic_passes_when_it_matches_the_spec() -> None:
    check = guest.guest_nic_check(guest.GuestView({VM1.mac: gnic()}), VM1, NIC1)
    assert check.status == PASS and check.evidence["combined"] == 2


def test_guest_nic_names_lowered_channels_and_link_down() -> None:
    check = guest.guest_nic_check(guest.GuestView({VM1.mac: gnic(combined=1, up=False)}), VM1,
                                  NIC1)
    assert check.status == FAIL
    assert "current combined is 1, want 2" in check.detail and "eth0 is down" in check.detail


def test_guest_nic_wants_each_trunk_vlan_interface_with_its_address() -> None:
    want = GuestNic("t-vm1", VM1.mac, None, 2, (GuestVlan(30, "10.0.30.1/24"),
                                                 GuestVlan(31, "10.0.31.1/24")))
    vlan30 = ObservedGuestVlan(30, "eth0.30", ("10.0.30.1/24",), True)
    good = gnic(addresses=(), vlans=(vlan30, ObservedGuestVlan(31, "eth0.31",
                                                             ("10.0.31.1/24",), True)))
    assert guest.guest_nic_check(guest.GuestView({VM1.mac: good}), VM1, want).status == PASS
    missing = gnic(addresses=(), vlans=(vlan30,))
    check = guest.guest_nic_check(guest.GuestView({VM1.mac: missing}), VM1, want)
    assert check.status == FAIL
    assert "no VLAN 31 interface on eth0 (want 10.0.31.1/24)" in check.detail


def test_guest_nic_fails_without_agent_or_mac() -> None:
    assert guest.guest_nic_check(guest.GuestView({}, "agent silent"), VM1, NIC1).status == FAIL
    check = guest.guest_nic_check(guest.GuestView({"52:54:00:ff:ff:ff": gnic()}), VM1, NIC1)
    assert check.status == FAIL and "no interface with MAC" in check.detail


def observed(**kw: object) -> ObservedLab:
    return ObservedLab(lab="t", **kw)  # type: ignore[arg-type]


def test_tap_check_wants_up_multi_queue_and_every_queue_attached() -> None:
    owner = Owner("t", "vm1", 0)
    good = observed(taps={VM1.tap: ObservedTap(VM1.tap, owner, True, True, 2)})
    assert host_checks.tap_check(VM1, WANT, good).status == PASS
    bad = observed(taps={VM1.tap: ObservedTap(VM1.tap, owner, True, False, 1)})
    check = host_checks.tap_check(VM1, WANT, bad)
    assert check.status == FAIL and "multi_queue is False, want True" in check.detail
    assert "1 queues attached, want 2" in check.detail
    assert host_checks.tap_check(VM1, WANT, observed()).status == FAIL


def test_a_one_queue_nic_wants_a_tap_without_multi_queue() -> None:
    single = DEMO.model_copy(update={"vms": (DEMO.vms[0].model_copy(update={"vcpus": 1}),)})
    one = matrix.endpoints(single)[0]
    want = desired_state(single, caps(), IMAGE)
    owner = Owner("t", "vm1", 0)
    plain = observed(taps={one.tap: ObservedTap(one.tap, owner, True, False, 1)})
    assert host_checks.tap_check(one, want, plain).status == PASS
    multi = observed(taps={one.tap: ObservedTap(one.tap, owner, True, True, 1)})
    check = host_checks.tap_check(one, want, multi)
    assert check.status == FAIL and "multi_queue is True, want False" in check.detail


def test_port_check_names_a_wrong_tag_and_missing_ofport() -> None:
    port = ObservedPort(VM1.tap, "br-t", 100, (), dict(IDS), ofport=3, error=None)
    assert host_checks.port_check(VM1, WANT, observed(ports={VM1.tap: port})).status == PASS
    moved = ObservedPort(VM1.tap, "br-t", 300, (), dict(IDS), ofport=-1, error="no such dev")
    check = host_checks.port_check(VM1, WANT, observed(ports={VM1.tap: moved}))
    assert check.status == FAIL
    assert "tag is 300, want 100" in check.detail and "ofport -1" in check.detail
    assert "no such dev" in check.detail
    absent = host_checks.port_check(VM1, WANT, observed())
    assert absent.status == FAIL and "not in OVSDB" in absent.detail


def proc(links: dict[int, str], iff: dict[int, str | None]) -> qemu.QemuProcess:
    argv = ["-netdev", '{"type":"tap","fds":"30:31","id":"hostnet0"}',
            "-device", '{"driver":"virtio-net-pci","mq":true,"netdev":"hostnet0","id":"net0",'
                       f'"mac":"{VM1.mac}"}}']
    return qemu.QemuProcess(4242, argv, links, iff)


def test_qemu_netdev_wants_one_tun_fd_per_queue_on_the_lab_tap() -> None:
    tun = {30: "/dev/net/tun", 31: "/dev/net/tun"}
    check, path = qemu.netdev_check(proc(tun, {30: VM1.tap, 31: VM1.tap}), VM1)
    assert check.status == PASS and path == "userspace"
    check, _ = qemu.netdev_check(proc(tun, {30: VM1.tap, 31: "other-tap"}), VM1)
    assert check.status == FAIL and "attached to other-tap" in check.detail
    check, path = qemu.netdev_check(proc(tun, {}), VM2)  # VM2's MAC is not on this QEMU
    assert check.status == FAIL and path is None


def test_qemu_checks_without_a_running_domain_fail_every_nic() -> None:
    checks, actual = qemu.qemu_checks("t-vm1", "t/vm1", [VM1], "auto", "userspace", False)
    assert actual is None
    assert [(c.name, c.status) for c in checks] == [("qemu.netdev", FAIL),
                                                    ("qemu.backend", FAIL)]


def test_reach_and_isolation_verdicts() -> None:
    reach = pings.Ping("reach", VM1, VM2)
    assert pings.reach_check(reach, (3, 3, "")).status == PASS
    assert pings.reach_check(reach, (3, 0, "")).status == FAIL
    assert pings.reach_check(reach, "agent silent").status == FAIL
    iso = pings.Ping("isolation", VM1, VM3)
    vm3_up = guest.GuestView({VM3.mac: gnic(mac=VM3.mac, addresses=("10.0.0.3/24",))})
    assert pings.isolation_check(iso, (3, 0, ""), vm3_up).status == PASS
    leak = pings.isolation_check(iso, (3, 3, ""), vm3_up)
    assert leak.status == FAIL and "VLANs leak" in leak.detail
    # Silence from a guest that is down proves nothing.
    assert pings.isolation_check(iso, (3, 0, ""), guest.GuestView({}, "down")).status == SKIP


def _run(before: list[int], after: list[int]) -> dict:
    """One traffic run's counters (as traffic._drive returns them) for eth0's RX queues."""
    def stats(counts: list[int]) -> dict[str, int]:
        return {f"rx_queue_{q}_packets": n for q, n in enumerate(counts)} | {
            f"tx_queue_{q}_packets": n + q for q, n in enumerate(counts)}
    return {"ethtool": {"before": {"eth0": ("virtio0", stats(before))},
                        "after": {"eth0": ("virtio0", stats(after))}}, "irq": {}}


def test_a_quiet_rerun_adds_its_counts_queue_by_queue() -> None:
    from provision.verify import traffic

    first = _run([10, 10, 10, 10], [10, 19, 13, 27])  # rx0 (and tx0) idle
    alone = _run([10, 19, 13, 27], [13, 22, 16, 30])
    once = traffic._summed_deltas([first], "eth0", 4)
    assert once["rx_packets"] == [0, 9, 3, 17] and traffic._idle_queues(once) == ["rx0", "tx0"]
    both = traffic._summed_deltas([first, alone], "eth0", 4)
    assert both["rx_packets"] == [3, 12, 6, 20] and traffic._idle_queues(both) == []
    assert both["tx_packets"] == both["rx_packets"] and both["source"] == "ethtool -S"
