"""The switch side of the lab spec: OVS bridges, their uplinks, and the tunnels that join a
bridge's copies on several hypervisors. Validated as part of ``spec.Lab``.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import (
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from provision.core.spec_errors import PathError as _PathError
from provision.core.spec_errors import Strict
from provision.core.yamlfile import yaml_value
from provision.errors import shown

# OVS bridges are also Linux interfaces (IFNAMSIZ 16, so 15 characters).
BRIDGE_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$"
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

    interface: StrictStr = Field(pattern=BRIDGE_NAME)  # the host NIC; OVS Port/Interface.name
    vlan_mode: Literal["trunk", "access"] = "trunk"
    # trunk: the VLANs it carries (none listed: every VLAN); access: exactly one, its tag
    vlans: tuple[StrictInt, ...] = ()
    probe: ipaddress.IPv4Address | None = None  # an outside address the bridge's VMs reach

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

    name: StrictStr = Field(pattern=BRIDGE_NAME)  # OVS Bridge.name
    datapath_type: Literal["auto", "system", "netdev"] = "auto"  # OVS Bridge.datapath_type
    uplink: UplinkSpec | None = None  # a host NIC joined to the bridge as an owned port

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

    type: Literal["geneve", "vxlan"] = "geneve"  # OVS Interface.type of each tunnel port
    # MTU of the network between the hypervisors; guest NICs on a bridge that spans hosts
    # get this minus the encapsulation (54 bytes), so full-size frames still cross
    underlay_mtu: StrictInt = Field(default=1500, ge=1330, le=9216)


