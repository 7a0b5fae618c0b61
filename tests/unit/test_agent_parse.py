"""Parsing what the guest prints about its NICs (text captured from the tiny guest)."""

from __future__ import annotations

from provision.backends.agent import FIRST_DELAY_S, MAX_DELAY_S, next_poll_delay
from provision.backends.guestnics import parse_nic_report, parse_nic_state
from provision.core.observed import ObservedGuestVlan

REPORT = """\
nic eth0 52:54:00:E4:45:7A up 0x1003 virtio_net
combined 4
combined 2
addr 10.10.0.11/24
nic eth1 52:54:00:00:00:09 down 0x1002 none
combined n/a
"""


def test_nic_report_keys_by_mac_with_max_then_current_channels() -> None:
    nics = parse_nic_report(REPORT)
    assert set(nics) == {"52:54:00:e4:45:7a", "52:54:00:00:00:09"}
    eth0 = nics["52:54:00:e4:45:7a"]
    assert (eth0.ifname, eth0.max_combined, eth0.combined) == ("eth0", 4, 2)
    assert eth0.addresses == ("10.10.0.11/24",) and eth0.up and eth0.driver == "virtio_net"
    eth1 = nics["52:54:00:00:00:09"]
    assert not eth1.up and eth1.driver is None and eth1.combined is None
    assert eth1.addresses == ()


# The report as the tiny guest prints it now: `ethtool -l` and `ip -o -4 addr` lines raw.
RAW_REPORT = """\
nic eth0 52:54:00:e4:45:7a up 0x1003 virtio_net
Channel parameters for eth0:
Pre-set maximums:
RX:\t\tn/a
TX:\t\tn/a
Other:\t\tn/a
Combined:\t4
Current hardware settings:
RX:\t\tn/a
TX:\t\tn/a
Other:\t\tn/a
Combined:\t2
nic eth0.30 52:54:00:e4:45:7a up 0x1003 none
nic eth1 52:54:00:00:00:09 down 0x1002 virtio_net
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.10.0.11/24 scope global eth0\\       valid_lft forever preferred_lft forever
3: eth0.30@eth0    inet 10.0.30.2/24 scope global eth0.30\\       valid_lft forever
"""


def test_raw_ethtool_and_ip_lines_give_channels_and_addresses_by_name() -> None:
    nics = parse_nic_report("vlan eth0.30 30 eth0\n" + RAW_REPORT)
    eth0 = nics["52:54:00:e4:45:7a"]
    assert (eth0.max_combined, eth0.combined, eth0.addresses) == (4, 2, ("10.10.0.11/24",))
    assert eth0.vlans == (ObservedGuestVlan(30, "eth0.30", ("10.0.30.2/24",), True),)
    eth1 = nics["52:54:00:00:00:09"]
    assert (eth1.combined, eth1.addresses, eth1.driver) == (None, (), "virtio_net")


# A trunk NIC: eth0 with no address of its own, VLANs 30 (addressed) and 31 (down), as the
# tiny guest prints them (VLAN sub-interfaces have their parent's MAC and no driver).
TRUNK_REPORT = """\
vlan eth0.31 31 eth0
vlan eth0.30 30 eth0
nic eth0 52:54:00:be:0c:01 up 0x1003 virtio_net
combined 1
combined 1
nic eth0.30 52:54:00:be:0c:01 up 0x1003 none
addr 10.0.30.2/24
nic eth0.31 52:54:00:be:0c:01 down 0x1002 none
nic eth1 52:54:00:be:0c:02 up 0x1003 virtio_net
combined 1
combined 1
addr 10.9.0.2/24
"""

TRUNK_STATE = """\
vlan eth0.30 30 eth0
vlan eth0.31 31 eth0
nic eth0.30 52:54:00:be:0c:01 0x1003 1
nic eth0 52:54:00:BE:0C:01 0x1003 1
nic eth0.31 52:54:00:be:0c:01 0x1002 1
nic eth1 52:54:00:be:0c:02 0x1003 2
"""

# guest-network-get-interfaces: every interface by name, VLANs with the parent's MAC.
TRUNK_INTERFACES = [
    {"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [
        {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}]},
    {"name": "eth0", "hardware-address": "52:54:00:be:0c:01", "ip-addresses": [
        {"ip-address-type": "ipv6", "ip-address": "fe80::5054:ff:febe:c01", "prefix": 64}]},
    {"name": "eth0.30", "hardware-address": "52:54:00:be:0c:01", "ip-addresses": [
        {"ip-address-type": "ipv4", "ip-address": "10.0.30.2", "prefix": 24}]},
    {"name": "eth0.31", "hardware-address": "52:54:00:be:0c:01"},
    {"name": "eth1", "hardware-address": "52:54:00:be:0c:02", "ip-addresses": [
        {"ip-address-type": "ipv4", "ip-address": "10.9.0.2", "prefix": 24}]},
]


def test_vlan_sub_interfaces_hang_off_their_parent_not_over_it() -> None:
    nics = parse_nic_report(TRUNK_REPORT)
    assert set(nics) == {"52:54:00:be:0c:01", "52:54:00:be:0c:02"}
    eth0 = nics["52:54:00:be:0c:01"]
    assert (eth0.ifname, eth0.driver, eth0.combined, eth0.addresses) == (
        "eth0", "virtio_net", 1, ()
    )
    assert eth0.vlans == (
        ObservedGuestVlan(30, "eth0.30", ("10.0.30.2/24",), True),
        ObservedGuestVlan(31, "eth0.31", (), False),
    )
    assert nics["52:54:00:be:0c:02"].vlans == ()


def test_fast_path_maps_addresses_by_interface_name_not_mac() -> None:
    nics = parse_nic_state(TRUNK_STATE, TRUNK_INTERFACES)
    assert set(nics) == {"52:54:00:be:0c:01", "52:54:00:be:0c:02"}
    eth0 = nics["52:54:00:be:0c:01"]
    assert (eth0.ifname, eth0.combined, eth0.addresses, eth0.up) == ("eth0", 1, (), True)
    assert eth0.vlans == (
        ObservedGuestVlan(30, "eth0.30", ("10.0.30.2/24",), True),
        ObservedGuestVlan(31, "eth0.31", (), False),
    )
    eth1 = nics["52:54:00:be:0c:02"]
    assert (eth1.combined, eth1.addresses, eth1.vlans) == (2, ("10.9.0.2/24",), ())


def test_a_guest_without_8021q_prints_no_vlan_lines_and_nics_have_none() -> None:
    nics = parse_nic_state("nic eth0 52:54:00:be:0c:01 0x1003 4\n", TRUNK_INTERFACES)
    assert nics["52:54:00:be:0c:01"].vlans == () and nics["52:54:00:be:0c:01"].combined == 4


def test_guest_exec_polls_fast_while_young_then_backs_off() -> None:
    """A NIC read finishes within the first 0.2 s: polled every 5 ms; a ping script runs for
    seconds: polled every 0.1 s once it is older than that."""
    delay, elapsed, young = FIRST_DELAY_S, 0.0, []
    while elapsed < 3.0:
        (young if elapsed < 0.2 else []).append(delay)
        elapsed += delay + 0.002  # each poll is an agent round trip too
        delay = next_poll_delay(delay, elapsed, fast=True)
    assert set(young) == {0.005} and len(young) > 20
    assert delay == MAX_DELAY_S


def test_guest_exec_backs_off_from_the_first_poll_unless_fast() -> None:
    """A script not marked fast (verify's pings, cloud-init: seconds, in many guests at
    once) is polled 5, 10, 20, 40, 80 ms apart, then every 0.1 s."""
    delay, elapsed, seen = FIRST_DELAY_S, 0.0, []
    while elapsed < 1.0:
        seen.append(delay)
        elapsed += delay
        delay = next_poll_delay(delay, elapsed)
    assert seen[:6] == [0.005, 0.01, 0.02, 0.04, 0.08, MAX_DELAY_S]
