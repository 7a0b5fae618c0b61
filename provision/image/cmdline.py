"""The embedded guest's kernel command line: the image's base flags, then the ``vlab.*``
tokens its init reads (hostname, one ``vlab.nic`` per NIC, one ``vlab.vlan`` per VLAN
interface). Pure; every value is validated before it becomes a token.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from provision.errors import SpecError
from provision.image.cache import GuestImage

MAX_CMDLINE = 2047  # x86 COMMAND_LINE_SIZE (2048) less the terminating NUL
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")


# One NIC for guest_cmdline: (mac, "ip/prefix" or None, queues) or, for a trunk NIC,
# (mac, ip or None, queues, vlans) where vlans is a sequence of (vid, "ip/prefix" or None),
# one per VLAN sub-interface the guest creates on that NIC.
GuestVlanArg = tuple[int, str | None]
GuestNicArg = (
    tuple[str, str | None, int] | tuple[str, str | None, int, Sequence[GuestVlanArg]]
)


def guest_cmdline(image: GuestImage, host: str, nics: Sequence[GuestNicArg]) -> str:
    """The full kernel command line: base flags, hostname, one vlab.nic token per NIC and
    one vlab.vlan=MAC,VID,IP/PREFIX token per VLAN sub-interface (IP may be empty)."""
    if not _HOSTNAME.match(host):
        raise SpecError("name", f"{host!r} is not usable as a guest hostname")
    tokens = [image.cmdline, f"vlab.host={host}"]
    for index, (mac, address, queues, *rest) in enumerate(nics):
        where = f"nics[{index}]"
        if not _MAC.match(mac):
            raise SpecError(f"{where}.mac", f"{mac!r} is not a MAC address")
        _check_address(f"{where}.ip", address)
        if not 1 <= queues <= 256:
            raise SpecError(f"{where}.queues", f"{queues} is not in 1..256")
        tokens.append(f"vlab.nic={mac.lower()},{address or ''},{queues}")
        seen: set[int] = set()
        for vlan_index, (vid, vlan_address) in enumerate(rest[0] if rest else ()):
            vwhere = f"{where}.trunks[{vlan_index}]"
            if isinstance(vid, bool) or not isinstance(vid, int) or not 1 <= vid <= 4094:
                raise SpecError(f"{vwhere}.vlan", f"{vid!r} is not a VLAN id in 1..4094")
            if vid in seen:
                raise SpecError(f"{vwhere}.vlan", f"VLAN {vid} appears twice on this NIC")
            seen.add(vid)
            _check_address(f"{vwhere}.ip", vlan_address)
            tokens.append(f"vlab.vlan={mac.lower()},{vid},{vlan_address or ''}")
    cmdline = " ".join(tokens)
    if len(cmdline) > MAX_CMDLINE:
        # The kernel would silently cut the line and the guest lose its last NICs/VLANs.
        raise SpecError(
            "nics",
            f"the guest's kernel command line would be {len(cmdline)} bytes, over the "
            f"kernel's {MAX_CMDLINE}: use fewer VLAN sub-interfaces on this VM",
        )
    return cmdline


def _check_address(where: str, address: str | None) -> None:
    if address is None:
        return
    try:
        ipaddress.ip_interface(address)
    except ValueError as exc:
        raise SpecError(where, str(exc)) from None
    if "/" not in address:
        raise SpecError(where, f"{address!r} needs a /prefix")
