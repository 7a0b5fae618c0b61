"""Tap devices: the privileged host-side link operations.

A lab's tap is a persistent tap with a vnet header; QEMU opens it once per queue. A NIC with
more than one queue gets a ``multi_queue`` tap, a 1-queue NIC a plain one (libvirt opens a
1-queue tap without IFF_MULTI_QUEUE, which the kernel refuses on a multi_queue tap).
Ownership is the interface alias (``provision.core.owner``), so observation never guesses
from names.

Observation reads netlink itself (``netlink``); only creating and deleting a tap imports
pyroute2 (about 130 ms with the asyncio it loads), which `plan`, `verify` and `status`, and
an `up` with nothing to change, then never pay.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from provision.backends import netlink
from provision.core.desired import DesiredTap
from provision.core.observed import ObservedTap
from provision.core.owner import from_tap_alias
from provision.errors import OperationError

IFF_UP = 0x1


def _iproute() -> Any:
    """A netlink socket that writes (pyroute2's ``IPRoute``), imported on first use."""
    from pyroute2 import IPRoute

    return IPRoute()


def _observed(link: netlink.Link, tun: netlink.Tun) -> ObservedTap:
    if tun.multi_queue:  # NUM_QUEUES counts the enabled queues, DISABLED the others held
        attached = (tun.num_queues or 0) + (tun.num_disabled_queues or 0)
    else:  # the kernel reports no queue count for a single-queue tap: carrier means attached
        attached = 1 if link.carrier else 0
    return ObservedTap(
        name=link.name,
        owner=from_tap_alias(link.alias),
        up=bool(link.flags & IFF_UP),
        multi_queue=tun.multi_queue,
        queues_attached=attached,
    )


def observe_taps(lab: str, wanted: Iterable[str] = ()) -> dict[str, ObservedTap]:
    """Taps the lab owns, plus any interface holding a wanted name (a possible conflict)."""
    want = set(wanted)
    out: dict[str, ObservedTap] = {}
    for link in netlink.dump_links():
        if link.tun is None:
            if link.name in want:  # same name, not even a tap
                out[link.name] = ObservedTap(link.name, None, False, False, 0)
            continue
        owner = from_tap_alias(link.alias)
        if (owner and owner.lab == lab) or link.name in want:
            out[link.name] = _observed(link, link.tun)
    return out


def existing_links(names: Iterable[str]) -> frozenset[str]:
    """Which of ``names`` are Linux interfaces on this host (of any kind)."""
    want = set(names)
    if not want:
        return frozenset()
    return frozenset(link.name for link in netlink.dump_links() if link.name in want)


def observe_tap(name: str) -> ObservedTap | None:
    link = netlink.find_link(name)
    if link is None:
        return None
    if link.tun is None:  # the name is taken, not by a tap
        return ObservedTap(name, None, False, False, 0)
    return _observed(link, link.tun)


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
