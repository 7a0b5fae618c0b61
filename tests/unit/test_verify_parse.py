"""The verifier's parsers, fed with text captured from a running lab (tests/unit/verify_samples)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.verify import parse

SAMPLES = Path(__file__).parent / "verify_samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_qemu_json_cmdline_gives_the_tap_fds_of_each_virtio_nic() -> None:
    argv = parse.split_cmdline((SAMPLES / "qemu-cmdline-json.bin").read_bytes())
    nics = parse.qemu_nics(argv)
    assert list(nics) == ["52:54:00:49:9a:90"]
    nic = nics["52:54:00:49:9a:90"]
    assert (nic.netdev, nic.netdev_type, nic.device_id) == ("hostnet0", "tap", "net0")
    assert nic.tap_fds == (38, 43, 44, 47)
    assert nic.vhost is False and nic.vhost_fds == ()


def test_qemu_keyval_cmdline_with_vhost_fds() -> None:
    argv = [
        "-netdev", "tap,fds=25:27:28:29,id=hostnet0,vhost=on,vhostfds=30:31:32:33",
        "-device", "virtio-net-pci,mq=on,vectors=10,netdev=hostnet0,id=net0,"
                   "mac=52:54:00:AA:bb:cc,bus=pci.0,addr=0x3",
        "-netdev", "tap,fd=40,id=hostnet1,vhost=on,vhostfd=41",
        "-device", "virtio-net-pci,netdev=hostnet1,id=net1,mac=52:54:00:00:00:01",
        "-device", "e1000,netdev=hostnet2,mac=52:54:00:00:00:02",
    ]
    nics = parse.qemu_nics(argv)
    assert set(nics) == {"52:54:00:aa:bb:cc", "52:54:00:00:00:01"}  # e1000 is not virtio
    first = nics["52:54:00:aa:bb:cc"]
    assert first.tap_fds == (25, 27, 28, 29) and first.vhost_fds == (30, 31, 32, 33)
    assert first.vhost is True
    single = nics["52:54:00:00:00:01"]
    assert single.tap_fds == (40,) and single.vhost_fds == (41,)


def test_keyval_double_comma_is_a_literal_comma() -> None:
    assert parse.split_keyval("tap,id=a,,b,script=no", "type") == {
        "type": "tap", "id": "a,b", "script": "no"}


def test_fdinfo_names_the_tap_a_tun_fd_is_attached_to() -> None:
    text = "pos:\t82\nflags:\t0104002\nmnt_id:\t24\nino:\t105\niff:\tdemo-vm1-0\n"
    assert parse.fdinfo_iff(text) == "demo-vm1-0"
    assert parse.fdinfo_iff("pos:\t0\nflags:\t02\n") is None


def test_vhost_threads_are_counted_by_the_qemu_pid() -> None:
    comms = ["qemu-system-x86\n", "CPU 0/TCG\n", "vhost-4242\n", "vhost-4242\n", "vhost-1\n"]
    assert parse.vhost_thread_count(comms, 4242) == 2


def _nic(tap: tuple[int, ...], vhost: tuple[int, ...]) -> parse.QemuNic:
    return parse.QemuNic("52:54:00:00:00:01", "net0", "hostnet0", "tap", tap, bool(vhost), vhost)


@pytest.mark.parametrize(("vhost_fds", "links", "expected"), [
    ((), {}, "userspace"),
    ((30, 31), {30: "/dev/vhost-net", 31: "/dev/vhost-net"}, "vhost-net"),
    ((30, 31), {30: "/dev/vhost-net"}, "partial"),
])
def test_nic_backend_is_decided_by_open_vhost_fds(
    vhost_fds: tuple[int, ...], links: dict[int, str], expected: str
) -> None:
    assert parse.nic_backend(_nic((25, 26), vhost_fds), links) == expected


@pytest.mark.parametrize(("spec", "resolved", "actual", "fails"), [
    ("vhost-net", "userspace", "userspace", True),  # libvirt fell back: must fail
    ("vhost-net", "vhost-net", "vhost-net", False),
    ("auto", "userspace", "userspace", False),  # auto reports what is used
    ("auto", "vhost-net", "userspace", True),  # the host offers vhost-net, QEMU does not use it
    ("userspace", "vhost-net", "userspace", False),
    ("userspace", "userspace", "vhost-net", True),
    ("auto", "userspace", "mixed", True),
])
def test_backend_problem(spec: str, resolved: str, actual: str, fails: bool) -> None:
    problem = parse.backend_problem(spec, resolved, actual)
    assert (problem is not None) == fails
    if spec == "vhost-net" and fails:
        assert "fell back" in problem  # type: ignore[operator]


def test_combine_backends() -> None:
    assert parse.combine_backends([]) == "unknown"
    assert parse.combine_backends(["userspace", "userspace"]) == "userspace"
    assert parse.combine_backends(["userspace", "vhost-net"]) == "mixed"


def test_ethtool_stats_give_per_queue_packets() -> None:
    rx, tx = parse.queue_packets(parse.ethtool_stats(sample("ethtool-S-4q.txt")))
    assert sorted(rx) == sorted(tx) == [0, 1, 2, 3]
    assert all(isinstance(v, int) and v >= 0 for v in (*rx.values(), *tx.values()))


def test_interrupts_per_queue_of_one_virtio_device() -> None:
    irqs = parse.interrupts(sample("proc-interrupts-4cpu.txt"))
    assert "virtio0-input.0" in irqs and "virtio1-virtqueues" in irqs
    rx, tx = parse.interrupt_queues(irqs, "virtio0")
    assert sorted(rx) == sorted(tx) == [0, 1, 2, 3]
    assert parse.interrupt_queues(irqs, "virtio7") == ({}, {})


def test_snmp_reads_tcp_checksum_errors() -> None:
    tables = parse.snmp(sample("proc-net-snmp.txt"))
    assert tables["Tcp"]["InCsumErrors"] == 0
    assert tables["Tcp"]["MaxConn"] == -1
    assert tables["Udp"]["InDatagrams"] == 0


def test_ping_counts() -> None:
    assert parse.ping_counts(sample("ping-reply.txt")) == (2, 2)
    assert parse.ping_counts(sample("ping-silent.txt")) == (2, 0)
    assert parse.ping_counts("ping: sendto: Network unreachable") == (0, 0)
    # a reach ping's rounds: a silent one, then one answered
    rounds = sample("ping-silent.txt") + sample("ping-reply.txt")
    assert parse.ping_counts(rounds) == (4, 2)


def test_iperf_summary_success_error_and_garbage() -> None:
    ok = parse.iperf_summary(sample("iperf3-ok.json"))
    assert ok["error"] is None and ok["sent_bytes"] == 110048
    assert ok["received_bytes"] == 14480 and ok["bits_per_second"] > 0
    err = parse.iperf_summary('{"start": {}, "intervals": [], "end": {}, '
                              '"error": "unable to connect to server: Connection timed out"}')
    assert err["error"].startswith("unable to connect") and err["received_bytes"] == 0
    assert parse.iperf_summary("iperf3: error - boom")["error"] == "iperf3: error - boom"


def test_deltas_mark_missing_queues() -> None:
    assert parse.deltas({0: 5, 1: 7}, {0: 9, 1: 7}, 3) == [4, 0, None]


def test_sections_split_on_headers() -> None:
    text = "noise\n@@ before ethtool eth0 virtio0\na: 1\n@@ after interrupts\nx\ny"
    assert parse.sections(text) == {"before ethtool eth0 virtio0": "a: 1",
                                    "after interrupts": "x\ny"}
