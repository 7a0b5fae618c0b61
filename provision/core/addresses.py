"""Addresses a lab writes: a guest NIC's IPv4 address with its prefix (``GuestAddress``)
must be one that can reach peers on the guest's link. Pure."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic.json_schema import WithJsonSchema

from provision.core.yamlfile import yaml_value
from provision.errors import shown

# A guest NIC's prefix: /31 is a point-to-point pair (RFC 3021); /32 leaves no peer on the
# link; shorter than /8 (the widest private block) would put public address space on it.
GUEST_PREFIXES = range(8, 32)
_NOT_A_HOST = (  # (network, why) of the addresses a guest NIC cannot use to reach its peers
    (ipaddress.IPv4Network("0.0.0.0/8"), "in 0.0.0.0/8 (\"this network\"), which no host may use"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "a loopback address, which never leaves a host"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local (169.254.0.0/16), for self-assigned "
     "addresses"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "a multicast address (224.0.0.0/4)"),
    (ipaddress.IPv4Network("240.0.0.0/4"),
     "reserved (240.0.0.0/4, and 255.255.255.255 broadcasts)"),
)


def guest_address(value: Any) -> ipaddress.IPv4Interface:
    """A guest NIC's address: written as text with a prefix length, usable to reach peers."""
    example = "such as 10.9.0.5/24"
    if not isinstance(value, str):
        raise ValueError(f"is {yaml_value(value)}; write an address with its prefix length, "
                         f"{example}")
    text = value.strip()
    try:
        if "/" not in text:
            address = ipaddress.IPv4Address(text)
            raise ValueError(f"{address} has no prefix length; add one, e.g. {address}/24")
        iface = ipaddress.IPv4Interface(text)
    except ipaddress.AddressValueError:
        raise ValueError(f"{shown(text)} is not an IPv4 address with a prefix length, "
                         f"{example}") from None
    except ipaddress.NetmaskValueError:
        raise ValueError(f"{shown(text)} has an invalid prefix length; write one from "
                         f"{GUEST_PREFIXES[0]} to {GUEST_PREFIXES[-1]}, {example}") from None
    for network, why in _NOT_A_HOST:
        if iface.ip in network:
            raise ValueError(f"{iface.ip} is {why}; use a private address {example}")
    return _host_of_prefix(iface)


def _host_of_prefix(iface: ipaddress.IPv4Interface) -> ipaddress.IPv4Interface:
    net, plen = iface.network, iface.network.prefixlen
    if plen not in GUEST_PREFIXES:
        why = ("leaves no peer on the guest's link" if plen == 32 else
               "would put public address space on the guest's link")
        raise ValueError(f"/{plen} {why}; use /{GUEST_PREFIXES[0]} to /{GUEST_PREFIXES[-1]}, "
                         f"e.g. {iface.ip}/24")
    if plen <= 30 and iface.ip in (net.network_address, net.broadcast_address):
        which = "network" if iface.ip == net.network_address else "broadcast"
        raise ValueError(f"{iface.ip} is the {which} address of {net}; use a host address "
                         f"such as {net.network_address + 1}/{plen}")
    return iface


# For the schema: an IPv4 address, '/', a prefix length from 8 to 31 (leading zeros allowed,
# as ipaddress allows them) or a dotted netmask; guest_address checks the rest (_NOT_A_HOST,
# the network and broadcast addresses, the netmask's length).
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED = rf"{_OCTET}(\.{_OCTET}){{3}}"
GUEST_ADDRESS_PATTERN = rf"^{_DOTTED}/(0*([89]|[12][0-9]|3[01])|{_DOTTED})$"

# An address configured inside the guest (nics[].ip, trunks[].ip)
GuestAddress = Annotated[ipaddress.IPv4Interface, BeforeValidator(guest_address), WithJsonSchema({
    "type": "string", "pattern": GUEST_ADDRESS_PATTERN,
    "patternErrorMessage": "an IPv4 address with its prefix length (/8 to /31), such as "
    "10.9.0.5/24",
})]
