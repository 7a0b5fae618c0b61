"""Observed state: what exists on the host now, as plain data the planner compares.

Filled by the backends (``ovs``, ``taps``, ``virt``, ``guest``) from ownership tags, plus any
object whose name the lab wants but does not own (a conflict the planner reports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provision.core import owner
from provision.core.owner import Owner


@dataclass(frozen=True)
class ObservedBridge:
    name: str
    datapath_type: str  # "" means the OVS default, "system"
    owner: Owner | None  # from external_ids; None when not a lab's
    ports: tuple[str, ...]  # port names other than the bridge's own internal port


@dataclass(frozen=True)
class ObservedPort:
    name: str
    bridge: str
    tag: int | None
    trunks: tuple[int, ...]
    external_ids: dict[str, str] = field(hash=False)
    ofport: int | None = None  # Interface.ofport: -1 or None when ovs-vswitchd did not attach it
    error: str | None = None  # Interface.error
    type: str = ""  # Interface.type
    protected: bool = False  # Port.protected
    options: dict[str, str] = field(default_factory=dict, hash=False)  # Interface.options

    @property
    def owner(self) -> Owner | None:
        return owner.from_external_ids(self.external_ids)


@dataclass(frozen=True)
class ObservedTap:
    name: str
    owner: Owner | None  # from the ifalias; None when not a lab's
    up: bool
    multi_queue: bool
    queues_attached: int


@dataclass(frozen=True)
class ObservedDomain:
    name: str
    owner: Owner | None  # from the ownership metadata; None when not a lab's
    running: bool
    facts: dict[str, Any] = field(hash=False)  # domxml.domain_facts of the persistent XML


@dataclass(frozen=True)
class ObservedPool:
    name: str
    path: str  # <target><path>
    owner: Owner | None  # from the ownership file beside the directory; None when not a lab's
    active: bool


@dataclass(frozen=True)
class ObservedVolume:
    name: str
    pool: str
    path: str
    format: str | None  # <target><format type>
    backing: str | None  # <backingStore><path>
    content_hash: str | None = None  # sha256 of a seed's bytes (seeds are small)


@dataclass(frozen=True)
class ObservedGuestVlan:
    """A VLAN sub-interface in the guest (it shares its parent NIC's MAC)."""

    vid: int  # /proc/net/vlan/config VLAN ID
    ifname: str  # e.g. "eth0.30"
    addresses: tuple[str, ...]  # IPv4, "10.0.30.2/24"
    up: bool  # IFF_UP in /sys/class/net/IFNAME/flags


@dataclass(frozen=True)
class ObservedGuestNic:
    mac: str
    ifname: str
    combined: int | None  # ethtool -l current combined
    max_combined: int | None  # ethtool -l maximum combined
    addresses: tuple[str, ...]  # "10.10.0.11/24"
    up: bool
    driver: str | None = None
    vlans: tuple[ObservedGuestVlan, ...] = ()  # VLAN interfaces on this NIC

    def vlan(self, vid: int) -> ObservedGuestVlan | None:
        return next((v for v in self.vlans if v.vid == vid), None)


@dataclass
class ObservedLab:
    lab: str
    bridges: dict[str, ObservedBridge] = field(default_factory=dict)
    ports: dict[str, ObservedPort] = field(default_factory=dict)
    taps: dict[str, ObservedTap] = field(default_factory=dict)
    domains: dict[str, ObservedDomain] = field(default_factory=dict)
    # domain name -> MAC -> NIC; a running domain whose agent did not answer is absent
    guests: dict[str, dict[str, ObservedGuestNic]] = field(default_factory=dict)
    guests_observed: bool = False  # False: the guests were not asked (e.g. for teardown)
    # which of the names the lab wants for new bridges, and of its uplinks, are Linux
    # interfaces here (a bridge's name taken; an uplink's NIC present)
    links: frozenset[str] = frozenset()
    pools: dict[str, ObservedPool] = field(default_factory=dict)  # owned, or named as wanted
    volumes: dict[str, ObservedVolume] = field(default_factory=dict)  # of the lab's pools
