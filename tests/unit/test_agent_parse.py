"""Parsing what the guest prints about its NICs (text captured from the tiny guest)."""

from __future__ import annotations

from provision.backends.agent import parse_nic_report

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
