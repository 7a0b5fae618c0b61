"""The switch side of the lab spec: OVS bridges, their uplinks, and the tunnels that join a
bridge's copies on several hypervisors. Validated as part of ``spec.Lab``.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from provision.core.spec_errors import PathError as _PathError
from provision.core.spec_errors import Strict
from provision.core.spec_schema import VLAN_ID, also, rules
from provision.core.yamlfile import yaml_value
from provision.errors import shown

# OVS bridges are also Linux interfaces (IFNAMSIZ 16, so 15 characters).
BRIDGE_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$"
IFNAME_RULE = "a letter, then up to 14 letters, digits, '_', '.' or '-'"
RESERVED_IFNAMES = {
    "lo": "the loopback interface",
    "all": "reserved: /proc/sys/net/ipv4/conf/all holds every interface's settings",
    "default": "reserved: /proc/sys/net/ipv4/conf/default holds new interfaces' settings",
    "ovs-system": "Open vSwitch's kernel datapath device",
    "ovs-netdev": "Open vSwitch's userspace datapath device",
    "bonding_masters": "reserved: /sys/class/net/bonding_masters is the bonding driver's",
}

class UplinkSpec(Strict):
    """A host interface through which a bridge reaches the outside. The lab adds and owns
    its OVS port; the interface itself (addresses, MTU, state) stays the host's."""

    model_config = ConfigDict(json_schema_extra=rules(
        # _access_has_one
        {"if": {"required": ["vlan_mode"], "properties": {"vlan_mode": {"const": "access"}}},
         "then": {"required": ["vlans"], "properties": {"vlans": {"minItems": 1,
                                                                   "maxItems": 1}}}},
    ))

    interface: StrictStr = Field(
        pattern=BRIDGE_NAME, examples=["eth1"], json_schema_extra=also(
            patternErrorMessage=IFNAME_RULE),
        description="The host NIC to join to the bridge (OVS Port and Interface name). The lab "
        "owns the port, never the NIC's addresses, MTU or state.")
    vlan_mode: Literal["trunk", "access"] = Field(
        default="trunk",
        description="trunk: the port carries the VLANs of vlans (all of them if none are "
        "listed); access: it carries the one VLAN of vlans, untagged on the wire (OVS "
        "Port.tag).")
    vlans: tuple[StrictInt, ...] = Field(
        default=(), examples=[[10, 20]],
        json_schema_extra=also(items=VLAN_ID, uniqueItems=True),
        description="VLAN IDs (1 to 4094, each once): trunk: the ones carried (none: every "
        "VLAN; OVS Port.trunks); access: exactly one, the port's tag.")
    probe: ipaddress.IPv4Address | None = Field(
        default=None, examples=["192.0.2.1"],
        description="An outside address that the VMs on the uplink's VLANs (and in its "
        "subnet) must reach; `provision verify` checks that they do.")

    @field_validator("vlans")
    @classmethod
    def _vlan_ids(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        for vid in v:
            if not 1 <= vid <= 4094:
                raise ValueError(f"{vid} is not a VLAN ID; use 1 to 4094")
        if len(set(v)) != len(v):
            raise ValueError("lists a VLAN twice")
        return v

    @field_validator("probe", mode="before")
    @classmethod
    def _probe_text(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, str):
            raise ValueError(f"is {yaml_value(v)}; write an address such as 192.0.2.1")
        return v

    @model_validator(mode="after")
    def _access_has_one(self) -> UplinkSpec:
        if self.vlan_mode == "access" and len(self.vlans) != 1:
            raise _PathError("vlans", "an access uplink carries exactly one VLAN: "
                             "vlans: [100]")
        return self

    @property
    def tag(self) -> int | None:
        return self.vlans[0] if self.vlan_mode == "access" else None

    @property
    def trunks(self) -> tuple[int, ...]:
        return tuple(sorted(self.vlans)) if self.vlan_mode == "trunk" else ()


class BridgeSpec(Strict):
    """An OVS bridge. If it exists already and the lab did not create it, the lab uses it
    and never deletes it."""

    name: StrictStr = Field(
        pattern=BRIDGE_NAME, examples=["br-demo"],
        json_schema_extra=also(**{"not": {"enum": sorted(RESERVED_IFNAMES)}},
                               patternErrorMessage=IFNAME_RULE),
        description="OVS Bridge.name, also a Linux interface name: a letter, then up to 14 "
        "letters, digits, '_', '.' or '-'; not lo, all, default, ovs-system, ovs-netdev or "
        "bonding_masters.")
    datapath_type: Literal["auto", "system", "netdev"] = Field(
        default="auto",
        description="OVS Bridge.datapath_type: system (the kernel datapath), netdev (the "
        "userspace one), or auto (the kernel's where the host has it).")
    uplink: UplinkSpec | None = Field(
        default=None, description="A host NIC joined to the bridge as a port the lab owns.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        # BRIDGE_NAME already keeps out what the kernel refuses: "", ".", "..", '/', ':',
        # whitespace, and '%' (a name template); these are taken on every host.
        if v in RESERVED_IFNAMES:
            raise ValueError(f"{shown(v)} is {RESERVED_IFNAMES[v]}; choose another name")
        return v


class TunnelSpec(Strict):
    """How the copies of a bridge on several hypervisors are joined (``core/tunnels``)."""

    type: Literal["geneve", "vxlan"] = Field(
        default="geneve", description="OVS Interface.type of each tunnel port.")
    # Guest NICs on a bridge that spans hosts get this minus the encapsulation (54 bytes),
    # so full-size frames still cross.
    underlay_mtu: StrictInt = Field(
        default=1500, ge=1330, le=9216,
        description="MTU of the network between the hypervisors; the guest NICs of a bridge "
        "that spans hosts get it minus the encapsulation (54 bytes).")


