"""Tap devices through netlink (pyroute2): the privileged host-side link operations.

A lab's tap is a persistent tap with a vnet header; QEMU opens it once per queue. A NIC with
more than one queue gets a ``multi_queue`` tap, a 1-queue NIC a plain one (libvirt opens a
1-queue tap without IFF_MULTI_QUEUE, which the kernel refuses on a multi_queue tap).
Ownership is the interface alias (``provision.core.owner``), so observation never guesses
from names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from provision.core.desired import DesiredTap
from provision.core.observed import ObservedTap
from provision.core.owner import from_tap_alias
from provision.errors import OperationError

IFF_UP = 0x1


def _iproute() -> Any:
    """A netlink socket (pyroute2's ``IPRoute``), imported on first use: importing pyroute2
    loads the whole library (ndb, ipdb, conntrack: about 130 ms), which the commands that
    touch no tap (render, record, host check) should not pay."""
    from pyroute2 import IPRoute

    return IPRoute()


def _tun_info(link: object) -> dict[str, int] | None:
    info = link.get("IFLA_LINKINFO")  # type: ignore[attr-defined]
    if not info or info.get("IFLA_INFO_KIND") != "tun":
        return None
    data = info.get("IFLA_INFO_DATA") or {}
    return {k: v for k, v in data["attrs"]} if data else {}


def _observed(link: object, tun: dict[str, int]) -> ObservedTap:
    multi_queue = bool(tun.get("IFLA_TUN_MULTI_QUEUE"))
    if multi_queue:
        attached = int(tun.get("IFLA_TUN_NUM_QUEUES", 0)) - int(
            tun.get("IFLA_TUN_NUM_DISABLED_QUEUES", 0))
    else:  # the kernel reports no queue count for a single-queue tap: carrier means attached
        attached = 1 if link.get("IFLA_CARRIER") else 0  # type: ignore[attr-defined]
    return ObservedTap(
        name=link.get("IFLA_IFNAME"),  # type: ignore[attr-defined]
        owner=from_tap_alias(link.get("IFLA_IFALIAS")),  # type: ignore[attr-defined]
        up=bool(link["flags"] & IFF_UP),  # type: ignore[index]
        multi_queue=multi_queue,
        queues_attached=attached,
    )


def observe_taps(lab: str, wanted: Iterable[str] = ()) -> dict[str, ObservedTap]:
    """Taps the lab owns, plus any interface holding a wanted name (a possible conflict)."""
    want = set(wanted)
    out: dict[str, ObservedTap] = {}
    with _iproute() as ipr:
        for link in ipr.get_links():
            name = link.get("IFLA_IFNAME")
            tun = _tun_info(link)
            owner = from_tap_alias(link.get("IFLA_IFALIAS"))
            if tun is None:
                if name in want:  # same name, not even a tap
                    out[name] = ObservedTap(name, None, False, False, 0)
                continue
            if (owner and owner.lab == lab) or name in want:
                out[name] = _observed(link, tun)
    return out


def existing_links(names: Iterable[str]) -> frozenset[str]:
    """Which of ``names`` are Linux interfaces on this host (of any kind)."""
    want = set(names)
    if not want:
        return frozenset()
    with _iproute() as ipr:
        return frozenset(n for link in ipr.get_links() if (n := link.get("IFLA_IFNAME")) in want)


def observe_tap(name: str) -> ObservedTap | None:
    with _iproute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        link = ipr.get_links(idx[0])[0]
        tun = _tun_info(link)
        return _observed(link, tun) if tun is not None else ObservedTap(name, None, False, False, 0)


def ensure_tap(tap: DesiredTap, user: str | None = None) -> None:
    """Create the tap if absent (vnet_hdr, persistent, multi_queue when it has several
    queues), tag it and bring it up."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _iproute() as ipr:
        try:
            if not ipr.link_lookup(ifname=tap.name):
                ifr = {"multi_queue": tap.multi_queue, "vnet_hdr": True, "no_pi": True}
                kwargs = {"uid": _uid(user)} if user else {}
                ipr.link("add", ifname=tap.name, kind="tuntap", mode="tap", ifr=ifr, **kwargs)
            idx = ipr.link_lookup(ifname=tap.name)[0]
            ipr.link("set", index=idx, ifalias=tap.alias, state="up")
        except (NetlinkError, OSError) as exc:
            raise OperationError(f"tap {tap.name}: cannot create or bring up: {exc}") from None


def delete_tap(name: str) -> None:
    """Delete a tap; absent is fine."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _iproute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return
        try:
            ipr.link("del", index=idx[0])
        except NetlinkError as exc:
            raise OperationError(f"tap {name}: cannot delete: {exc}") from None


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid
