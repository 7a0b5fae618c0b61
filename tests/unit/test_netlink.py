"""The stdlib netlink reader against real kernel objects: taps made here (plain and
multi_queue, with queues attached through /dev/net/tun), read by ``netlink`` and by pyroute2,
must look the same; and ``taps``' observations built on it keep their meaning.

Needs CAP_NET_ADMIN and /dev/net/tun (skipped without). Every tap is called ``vltst<hex>``
and removed in ``finally``, so nothing else on the host is touched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytest

from provision.backends import netlink, taps
from provision.core.owner import Owner
from provision.errors import OperationError

TUNSETIFF, TUNSETQUEUE = 0x400454CA, 0x400454D9  # linux/if_tun.h
IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE, IFF_VNET_HDR = 0x0002, 0x1000, 0x0100, 0x4000
IFF_DETACH_QUEUE = 0x0400
LAB = "vltst"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="makes taps: needs root (CAP_NET_ADMIN) and /dev/net/tun",
)


@contextlib.contextmanager
def made_tap(multi_queue: bool, uid: int | None = None) -> Iterator[str]:
    """A persistent vnet_hdr tap owned by lab ``vltst``, up; deleted on the way out."""
    from pyroute2 import IPRoute

    name = f"{LAB}{secrets.token_hex(2)}"
    with IPRoute() as ipr:
        try:
            ifr = {"multi_queue": multi_queue, "vnet_hdr": True, "no_pi": True}
            extra = {"uid": uid} if uid is not None else {}
            ipr.link("add", ifname=name, kind="tuntap", mode="tap", ifr=ifr, **extra)
            index = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=index, ifalias=Owner(LAB, "vm0", 1).tap_alias(), state="up")
            yield name
        finally:
            with contextlib.suppress(Exception):
                ipr.link("del", index=ipr.link_lookup(ifname=name)[0])


def attach(name: str, multi_queue: bool) -> int:
    """Open one queue of the tap, as QEMU does; the file descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (IFF_MULTI_QUEUE if multi_queue else 0)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    return fd


def pyroute2_view(name: str) -> dict[str, Any]:
    """What pyroute2 reports of the link, in ``netlink.Link``'s terms."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=name)[0])[0]
    info = link.get("IFLA_LINKINFO")
    data = info.get("IFLA_INFO_DATA") if info else None
    tun = {k[len("IFLA_TUN_"):].lower(): v for k, v in data["attrs"]} if data else None
    return {"index": link["index"], "name": link.get("IFLA_IFNAME"), "flags": link["flags"],
            "alias": link.get("IFLA_IFALIAS"), "carrier": bool(link.get("IFLA_CARRIER")),
            "kind": info.get("IFLA_INFO_KIND") if info else None, "tun": tun}  # fmt: skip


def our_view(link: netlink.Link | None) -> dict[str, Any]:
    assert link is not None
    view = asdict(link)
    if link.tun is not None:  # the attributes the kernel sent, as pyroute2 keeps them
        sent = {k: int(v) for k, v in view["tun"].items() if v is not None}
        view["tun"] = {**sent, **{k: 0 for k in ("pi", "vnet_hdr", "persist", "multi_queue")
                                  if not sent.get(k)}}  # fmt: skip
    return view


def by_name(name: str) -> netlink.Link | None:
    return next((link for link in netlink.dump_links() if link.name == name), None)


@pytest.mark.parametrize("multi_queue", [False, True])
def test_an_idle_tap_reads_as_pyroute2_reads_it(multi_queue: bool) -> None:
    with made_tap(multi_queue, uid=65534) as name:
        expected = pyroute2_view(name)
        assert our_view(netlink.find_link(name)) == expected
        assert our_view(by_name(name)) == expected
        link = netlink.find_link(name)
        assert link is not None and link.kind == "tun" and link.tun is not None
        assert (link.tun.type, link.tun.owner, link.tun.vnet_hdr) == (2, 65534, True)
        assert link.tun.multi_queue is multi_queue and not link.carrier


def test_a_multi_queue_tap_counts_its_attached_queues() -> None:
    with made_tap(multi_queue=True) as name:
        fds = [attach(name, multi_queue=True) for _ in range(3)]
        try:
            seen = taps.observe_taps(LAB)[name]
            assert (seen.multi_queue, seen.queues_attached, seen.up) == (True, 3, True)
            assert seen.owner == Owner(LAB, "vm0", 1) and taps.observe_tap(name) == seen
            # A disabled queue (QEMU's when the guest uses fewer) leaves NUM_QUEUES, which
            # counts the enabled ones, for NUM_DISABLED_QUEUES.
            disable = struct.pack("16sH22x", b"", IFF_DETACH_QUEUE)
            fcntl.ioctl(fds[0], TUNSETQUEUE, disable)
            link = netlink.find_link(name)
            assert link is not None and link.tun is not None
            assert (link.tun.num_queues, link.tun.num_disabled_queues) == (2, 1)
            assert our_view(link) == pyroute2_view(name)
            # QEMU still holds all three: the tap is as attached as before
            assert taps.observe_taps(LAB)[name].queues_attached == 3
        finally:
            for fd in fds:
                os.close(fd)


def test_a_plain_tap_is_attached_when_it_has_carrier() -> None:
    with made_tap(multi_queue=False) as name:
        assert taps.observe_tap(name) == taps.observe_taps(LAB)[name]
        assert taps.observe_tap(name).queues_attached == 0  # type: ignore[union-attr]
        fd = attach(name, multi_queue=False)
        try:
            assert our_view(netlink.find_link(name)) == pyroute2_view(name)
            seen = taps.observe_tap(name)
            assert seen is not None and not seen.multi_queue and seen.queues_attached == 1
        finally:
            os.close(fd)


def test_a_dump_finds_lo_and_names_links_as_pyroute2_does() -> None:
    from pyroute2 import IPRoute

    links = netlink.dump_links()
    lo = next(link for link in links if link.name == "lo")
    assert lo.index == 1 and lo.kind is None and lo.tun is None
    with IPRoute() as ipr:
        theirs = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
    both = {link.index for link in links} & set(theirs)  # taps of other labs come and go
    assert len(both) >= len(theirs) // 2
    assert all(link.name == theirs[link.index] for link in links if link.index in both)


def test_other_interfaces_are_not_taps_and_absent_names_are_none() -> None:
    assert taps.observe_tap("lo") == taps.observe_taps(LAB, ["lo"])["lo"]
    assert taps.observe_tap("lo").owner is None  # type: ignore[union-attr]
    assert taps.existing_links(["lo", "vltst-absent"]) == frozenset({"lo"})
    assert netlink.find_link("vltst-absent") is None
    assert netlink.find_link("") is None and netlink.find_link("x" * 16) is None


def test_a_request_the_kernel_refuses_is_an_operation_error() -> None:
    too_long = struct.pack("=HH", 4 + 40, netlink.IFLA_IFNAME) + b"x" * 40
    with pytest.raises(OperationError, match="reading link x: ") as caught:
        netlink._exchange(netlink.NLM_F_REQUEST, too_long, "link x")
    assert caught.value.code in (errno.EINVAL, errno.ERANGE)  # type: ignore[attr-defined]
