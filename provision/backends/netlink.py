"""Reading this host's links over rtnetlink with the standard library's ``socket``: one
RTM_GETLINK request (a dump of all links, or one link by name), decoded into ``Link``.

Every `plan`, `up`, `verify` and `status` reads the links; importing pyroute2 for that costs
over 100 ms (its asyncio core alone 40), so reads come here and only the writes in
``taps`` import pyroute2. Only the attributes the lab reads are decoded.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from provision.errors import OperationError

# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x2, 0x10, 0x300
RTM_NEWLINK, RTM_GETLINK = 16, 18
IFLA_IFNAME, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_CARRIER = 3, 18, 20, 33
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED (0x8000) and NLA_F_NET_BYTEORDER (0x4000)

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_ATTR = struct.Struct("=HH")  # nlattr: length, type
_BUFFER = 1 << 16  # a dump's datagrams stay under 32 KiB (the kernel caps them)
_ATTEMPTS = 3  # dumps interrupted by a link coming or going meanwhile, before giving up


@dataclass(frozen=True)
class Tun:
    """IFLA_INFO_DATA of a tun/tap link (the kernel's ``tun_fill_info``)."""

    owner: int | None = None  # IFLA_TUN_OWNER (1): the uid allowed to attach; None: any
    group: int | None = None  # IFLA_TUN_GROUP (2): the gid allowed to attach; None: any
    type: int | None = None  # IFLA_TUN_TYPE (3): 1 tun (IFF_TUN), 2 tap (IFF_TAP)
    pi: bool = False  # IFLA_TUN_PI (4): packet information header (no IFF_NO_PI)
    vnet_hdr: bool = False  # IFLA_TUN_VNET_HDR (5): IFF_VNET_HDR
    persist: bool = False  # IFLA_TUN_PERSIST (6): outlives its last file descriptor
    multi_queue: bool = False  # IFLA_TUN_MULTI_QUEUE (7): IFF_MULTI_QUEUE
    num_queues: int | None = None  # IFLA_TUN_NUM_QUEUES (8): queues attached; multi_queue only
    num_disabled_queues: int | None = None  # IFLA_TUN_NUM_DISABLED_QUEUES (9): of those


# IFLA_TUN_* number -> (Tun field, struct format, conversion)
_TUN_ATTRS = {1: ("owner", "=I", int), 2: ("group", "=I", int), 3: ("type", "=B", int),
              4: ("pi", "=B", bool), 5: ("vnet_hdr", "=B", bool), 6: ("persist", "=B", bool),
              7: ("multi_queue", "=B", bool), 8: ("num_queues", "=I", int),
              9: ("num_disabled_queues", "=I", int)}  # fmt: skip


class NetlinkError(OperationError):
    """The kernel answered a request with an error (NLMSG_ERROR), or the socket failed."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code  # the errno; 0 when not the kernel's answer


@dataclass(frozen=True)
class Link:
    """One network interface as RTM_NEWLINK describes it."""

    index: int  # ifinfomsg.ifi_index
    name: str  # IFLA_IFNAME
    flags: int  # ifinfomsg.ifi_flags: IFF_UP 0x1, IFF_RUNNING 0x40, ...
    alias: str | None  # IFLA_IFALIAS; None when unset
    carrier: bool  # IFLA_CARRIER
    kind: str | None  # IFLA_LINKINFO/IFLA_INFO_KIND: "tun", "bridge", ...; None for lo, a NIC
    tun: Tun | None  # IFLA_INFO_DATA of kind "tun" (a default Tun if the kernel sent none)


def dump_links() -> list[Link]:
    """Every link of this network namespace."""
    for _ in range(_ATTEMPTS):
        messages, interrupted = _exchange(NLM_F_REQUEST | NLM_F_DUMP, b"", "the host's links")
        if not interrupted:
            return [_link(m) for m in messages]
    raise OperationError(f"reading the host's links: interrupted {_ATTEMPTS} times by links "
                         "coming and going; try again")  # fmt: skip


def find_link(name: str) -> Link | None:
    """The link called ``name``, None when there is none."""
    raw = name.encode()
    if not 0 < len(raw) < 16 or b"\0" in raw:  # IFNAMSIZ: no link has such a name
        return None
    value = raw + b"\0" * (4 - len(raw) % 4)  # NUL-terminated, padded to 4 bytes (NLA_ALIGN)
    ifname = _ATTR.pack(_ATTR.size + len(raw) + 1, IFLA_IFNAME) + value
    try:
        messages, _ = _exchange(NLM_F_REQUEST, ifname, f"link {name}")
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    return _link(messages[0]) if messages else None


def _exchange(flags: int, attrs: bytes, what: str) -> tuple[list[bytes], bool]:
    """Send one RTM_GETLINK; the RTM_NEWLINK payloads of the answer, and whether the kernel
    flagged the dump as interrupted (NLM_F_DUMP_INTR: links changed while it ran)."""
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attrs
    request = _HEADER.pack(_HEADER.size + len(body), RTM_GETLINK, flags, 1, 0) + body
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                           socket.NETLINK_ROUTE) as sock:  # fmt: skip
            sock.settimeout(10.0)
            sock.bind((0, 0))
            sock.sendto(request, (0, 0))
            return _answer(sock, what)
    except OSError as exc:
        raise NetlinkError(f"reading {what} over netlink: {exc}") from None


def _answer(sock: socket.socket, what: str) -> tuple[list[bytes], bool]:
    messages: list[bytes] = []
    interrupted = False
    while True:
        data, _, msg_flags, _ = sock.recvmsg(_BUFFER)
        if msg_flags & socket.MSG_TRUNC:
            raise NetlinkError(f"reading {what}: a netlink answer was over {_BUFFER} bytes")
        for kind, flags, payload in _split(data):
            interrupted |= bool(flags & NLM_F_DUMP_INTR)
            if kind == NLMSG_DONE:
                return messages, interrupted
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise NetlinkError(f"reading {what}: {os.strerror(code)}", code)
                return messages, interrupted  # an acknowledgement
            if kind == RTM_NEWLINK:
                messages.append(payload)
            if not flags & NLM_F_MULTI:  # the one answer to a request for one link
                return messages, interrupted


def _split(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, flags, payload) of each netlink message in a datagram."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, flags, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > len(data):
            raise NetlinkError(f"a netlink message of {length} bytes does not fit its datagram")
        yield kind, flags, data[offset + _HEADER.size : offset + length]
        offset += (length + 3) & ~3


def _attrs(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute from ``offset`` on, NLA_F_* flags masked off."""
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        yield kind & NLA_TYPE_MASK, data[offset + _ATTR.size : offset + length]
        offset += (length + 3) & ~3  # attributes start on 4-byte boundaries (NLA_ALIGN)


def _text(payload: bytes) -> str:
    return payload.split(b"\0", 1)[0].decode("utf-8", "replace")


def _link(payload: bytes) -> Link:
    _, _, index, flags, _ = _IFINFO.unpack_from(payload)
    attrs = dict(_attrs(payload, _IFINFO.size))
    kind, tun = _linkinfo(attrs.get(IFLA_LINKINFO, b""))
    return Link(index=index, name=_text(attrs.get(IFLA_IFNAME, b"")), flags=flags,
                alias=_text(attrs.get(IFLA_IFALIAS, b"")) or None,
                carrier=any(attrs.get(IFLA_CARRIER, b"")), kind=kind, tun=tun)  # fmt: skip


def _linkinfo(payload: bytes) -> tuple[str | None, Tun | None]:
    info = dict(_attrs(payload))
    kind = _text(info[IFLA_INFO_KIND]) if IFLA_INFO_KIND in info else None
    if kind != "tun":
        return kind, None
    fields = {}
    for number, value in _attrs(info.get(IFLA_INFO_DATA, b"")):
        if number in _TUN_ATTRS:
            field, fmt, convert = _TUN_ATTRS[number]
            fields[field] = convert(struct.unpack_from(fmt, value)[0])
    return kind, Tun(**fields)
