"""The lab spec: validate a lab, and derive the stable names of owned objects.

A lab file is an Ansible inventory whose ``all.vars.lab`` holds the lab; ``yamlfile`` reads
it, ``inventory`` finds the lab and the hosts in it, and this module validates the lab.
Everything the rest of virtio-lab does starts from the ``Lab`` this returns;
anything wrong in the file is a ``SpecError`` naming the key path (``spec_errors`` words
it), raised before the host is touched.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema

from provision.core.addresses import GuestAddress
from provision.core.imagespec import CloudInitSpec, ImageSpec, check_image_value, is_disk
from provision.core.owner import nic_mac, tap_name
from provision.core.spec_errors import PathError as _PathError
from provision.core.spec_errors import Strict, spec_error
from provision.core.spec_schema import VLAN_ID, also, not_both, rules, value_schema
from provision.core.switchspec import (
    BridgeSpec,
    TunnelSpec,
)
from provision.core.yamlfile import yaml_value
from provision.errors import SpecError, shown

# No '-' in a lab name: owned objects are named <lab>-<vm>(-<nic>), and only then does each
# such name belong to one VM of one lab (lab fz-a's VM b and lab fz's VM a-b would both be
# fz-a-b).
LAB_NAME = r"^[a-z][a-z0-9]{0,11}$"
VM_NAME = r"^[a-z][a-z0-9-]{0,31}$"
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
RING_SIZES = (256, 512, 1024)
MAX_QUEUES = 256  # a Linux tap has at most 256 queues
# x86 has about 200 usable interrupt vectors per CPU; a virtio-net NIC asks 2N+2 MSI-X vectors.
VECTORS_PER_VCPU = 200

# For the schema, what NicSpec's validators check: a unicast MAC, not all-zero, in any case
# (_mac); the ring sizes QEMU takes (_rx, _tx).
MacText = Annotated[StrictStr, WithJsonSchema({
    "type": "string",
    "pattern": r"^(?!00:00:00:00:00:00)[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}$",
    "patternErrorMessage": "a unicast MAC address such as 52:54:00:12:34:56, not all-zero",
})]
RxRing = Annotated[StrictInt, WithJsonSchema({"type": "integer", "enum": list(RING_SIZES)})]
TxRing = Annotated[StrictInt, WithJsonSchema({"type": "integer", "enum": [256]})]


def _trunks_schema(schema: dict[str, Any]) -> None:
    """``trunks``: a VLAN ID is shorthand for ``{vlan: N}`` (``_trunk_numbers``); at least one,
    none twice (``_trunks``)."""
    array = value_schema(schema)
    array["items"] = {"anyOf": [VLAN_ID, array["items"]]}
    array.update(minItems=1, uniqueItems=True)


class TrunkVlan(Strict):
    """A VLAN a trunk NIC carries; with ``ip``, the guest gets a VLAN interface with it."""

    vlan: StrictInt = Field(
        ge=1, le=4094,
        description="A VLAN ID the port carries (OVS Port.trunks): with ip, the 802.1Q VID of "
        "the guest's VLAN interface <nic>.<vlan>.")
    ip: GuestAddress | None = Field(
        default=None, examples=["10.0.30.1/24"],
        description="Address (with its prefix length) of the guest's VLAN interface for this "
        "VLAN; without it the guest gets no interface for the VLAN.")


class NicSpec(Strict):
    """One virtio-net NIC, plugged into an OVS bridge of the lab through a tap."""

    model_config = ConfigDict(json_schema_extra=rules(
        not_both("vlan", "trunks"), not_both("trunks", "ip"),  # _vlan_xor_trunks
    ))

    bridge: StrictStr = Field(
        examples=["br-demo"], description="The name of a bridge in lab.bridges; the NIC's "
        "tap is a port of it.")
    vlan: StrictInt | None = Field(
        default=None, ge=1, le=4094,
        description="Access port: the VLAN ID of the NIC's port (OVS Port.tag); exclusive "
        "with trunks. With neither, the port has no tag and no trunks (OVS passes every VLAN "
        "and untagged frames).")
    trunks: tuple[TrunkVlan, ...] | None = Field(
        default=None, examples=[[30, {"vlan": 31, "ip": "10.0.31.1/24"}]],
        json_schema_extra=_trunks_schema,
        description="Trunk port: the VLANs it carries (OVS Port.trunks), each once, as a VLAN "
        "ID or {vlan, ip} (a guest VLAN interface); exclusive with vlan, and the NIC then has "
        "no ip of its own.")
    queues: StrictInt | None = Field(
        default=None, ge=1, le=MAX_QUEUES,
        description="Queue pairs (libvirt <driver queues>), at most the VM's vcpus; default: "
        "the VM's vcpus.")
    ip: GuestAddress | None = Field(
        default=None, examples=["10.9.0.5/24"],
        description="Address with its prefix length (/8 to /31), configured inside the guest; "
        "not on a trunk NIC.")
    mac: MacText | None = Field(
        default=None, examples=["52:54:00:12:34:56"],
        description="Unicast MAC (libvirt <mac address>), in quotes; default: derived from "
        "the lab, VM and NIC, stable across runs.")
    rx_queue_size: RxRing | None = Field(
        default=None,
        description="RX ring size (libvirt <driver rx_queue_size>): 256, 512 or 1024; "
        "default: QEMU's (256).")
    tx_queue_size: TxRing | None = Field(
        default=None,
        description="TX ring size (libvirt <driver tx_queue_size>): only 256, as QEMU allows "
        "more only for vhost-user; default: QEMU's (256).")

    @field_validator("trunks", mode="before")
    @classmethod
    def _trunk_numbers(cls, v: Any) -> Any:
        """``trunks: [30, 31]`` is shorthand for ``[{vlan: 30}, {vlan: 31}]``."""
        if isinstance(v, list | tuple):
            return [{"vlan": t} if isinstance(t, int) and not isinstance(t, bool) else t
                    for t in v]
        return v

    @field_validator("trunks")
    @classmethod
    def _trunks(cls, v: tuple[TrunkVlan, ...] | None) -> tuple[TrunkVlan, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("trunks must list at least one VLAN (or drop the key)")
        vids = [t.vlan for t in v]
        if len(set(vids)) != len(vids):
            raise ValueError("trunks lists a VLAN twice")
        return v  # in the file's order, so that key paths name the entry the user wrote

    @property
    def trunk_vlans(self) -> tuple[int, ...]:
        """The VLAN numbers of ``trunks``, sorted (OVS Port.trunks); () for an access port."""
        return tuple(sorted(t.vlan for t in self.trunks or ()))

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower()
        if not MAC_RE.fullmatch(v):
            raise ValueError(f"{shown(v)} is not a MAC address; write one such as "
                             '"52:54:00:12:34:56" (in quotes)')
        if int(v[:2], 16) & 1:
            raise ValueError("is a multicast address; use a unicast MAC such as 52:54:00:...")
        if v == "00:00:00:00:00:00":
            raise ValueError("is the all-zero address, which no NIC may use; use one such as "
                             "52:54:00:12:34:56, or drop mac for a derived one")
        return v

    @field_validator("rx_queue_size")
    @classmethod
    def _rx(cls, v: int | None) -> int | None:
        if v is not None and v not in RING_SIZES:
            raise ValueError(f"must be one of {', '.join(map(str, RING_SIZES))} (QEMU's limits)")
        return v

    @field_validator("tx_queue_size")
    @classmethod
    def _tx(cls, v: int | None) -> int | None:
        # QEMU accepts a TX ring above 256 only for vhost-user backends; taps are not.
        if v is not None and v != 256:
            raise ValueError("must be 256 for a tap backend (QEMU allows more only for vhost-user)")
        return v

    @model_validator(mode="after")
    def _vlan_xor_trunks(self) -> NicSpec:
        if self.vlan is not None and self.trunks is not None:
            raise ValueError("vlan and trunks are exclusive: an access port or a trunk, not both")
        if self.trunks is not None and self.ip is not None:
            raise _PathError(
                "ip",
                "a trunk port drops untagged frames, so this address could reach nothing; "
                "give it to a VLAN instead: trunks: [{vlan: N, ip: ...}]",
            )
        return self


class VmSpec(Strict):
    """One guest: a libvirt domain named ``<lab>-<vm>``."""

    model_config = ConfigDict(json_schema_extra=rules(
        # _seed_needs_disk: tiny, the default image, has no cloud-init
        {"if": {"anyOf": [{"not": {"required": ["image"]}},
                          {"properties": {"image": {"const": "tiny"}}}]},
         "then": {"properties": {"cloud_init": {"type": "null"}}}},
    ))

    name: StrictStr = Field(
        pattern=VM_NAME, examples=["vm1"], json_schema_extra=also(
            patternErrorMessage="a lowercase letter, then up to 31 lowercase letters, digits "
            "or '-'"),
        description="The VM's name: a lowercase letter, then up to 31 lowercase letters, "
        "digits or '-'. Its libvirt domain is <lab>-<name>.")
    vcpus: StrictInt = Field(
        default=1, ge=1, le=255,
        description="Virtual CPUs (libvirt <vcpu>); also each NIC's default queue count.")
    memory_mib: StrictInt = Field(
        default=256, ge=128, le=1048576,
        description="Memory in MiB (libvirt <memory unit='MiB'>); a cloud image wants 512 "
        "or more.")
    image: ImageSpec = Field(
        default="tiny", examples=["tiny", "debian", {"path": "/srv/images/noble.qcow2",
                                                     "sha256": "5f0e" + "0" * 60}],
        description="What the VM boots: tiny (the embedded guest, direct kernel boot), debian "
        "(the disk image `provision image build debian` makes), or your own disk image "
        "{path|url, sha256, format}.")
    cloud_init: CloudInitSpec | None = Field(
        default=None,
        description="Extras for this VM's cloud-init seed, added to the lab's cloud_init; "
        "only for a disk image (not tiny).")
    host: StrictStr = Field(
        default="localhost", examples=["localhost", "hv1"],
        description="The inventory host (all.hosts, or a host of a group below all.children) "
        "that runs the VM.")
    nics: tuple[NicSpec, ...] = Field(
        default=(), description="The VM's virtio-net NICs, eth0, eth1, ... in the guest.")

    @field_validator("image", mode="before")
    @classmethod
    def _image(cls, v: Any) -> Any:
        return check_image_value(v)

    @model_validator(mode="after")
    def _seed_needs_disk(self) -> VmSpec:
        if self.cloud_init is not None and not is_disk(self.image):
            raise _PathError("cloud_init", "image tiny has no cloud-init; drop cloud_init or "
                             "boot a disk image (image: debian, or {path|url, sha256})")
        return self

    @model_validator(mode="after")
    def _queues_fit(self) -> VmSpec:
        vectors = 0
        for i, nic in enumerate(self.nics):
            q = nic.queues or self.vcpus
            if q > self.vcpus:
                raise _PathError(
                    f"nics[{i}].queues",
                    f"{q} exceeds vcpus={self.vcpus}: the guest uses one queue pair per "
                    "vCPU at most; lower queues or raise vcpus",
                )
            vectors += 2 * q + 2
        if vectors > VECTORS_PER_VCPU * self.vcpus:
            raise _PathError(
                "nics",
                f"needs {vectors} MSI-X vectors, more than {self.vcpus} vCPUs can serve; "
                "lower queues",
            )
        return self


def _deprecated_datapath(schema: dict[str, Any]) -> None:
    """``datapath``: the deprecated name of ``backend``, read with a warning; not both."""
    backend = schema["properties"]["backend"]
    schema["properties"]["datapath"] = {
        "enum": backend["enum"], "type": "string", "deprecated": True,
        "description": "Deprecated: the old name of backend; rename it to backend.",
        "deprecationMessage": "datapath is the old name of backend: rename it to backend",
    }
    rules({"not": {"type": "object", "required": ["datapath", "backend"]}})(schema)


class Lab(Strict):
    """A lab: bridges and VMs, every object tagged as owned by ``name``."""

    model_config = ConfigDict(json_schema_extra=_deprecated_datapath)

    name: StrictStr = Field(
        pattern=LAB_NAME, examples=["demo"], json_schema_extra=also(
            patternErrorMessage="a lowercase letter, then up to 11 lowercase letters or "
            "digits; no '-'"),
        description="The lab's name, which prefixes every object it owns: a lowercase letter, "
        "then up to 11 lowercase letters or digits (no '-').")
    backend: Literal["auto", "vhost-net", "userspace"] = Field(
        default="auto",
        description="The virtio backend in the host: vhost-net (the kernel's), userspace "
        "(QEMU's), or auto (vhost-net where the host has it). Formerly datapath.")
    bridges: tuple[BridgeSpec, ...] = Field(
        min_length=1, examples=[[{"name": "br-demo"}]],
        description="The lab's OVS bridges, at least one, names unique.")
    vms: tuple[VmSpec, ...] = Field(
        default=(), description="The lab's VMs, names unique.")
    tunnels: TunnelSpec = Field(
        default=TunnelSpec(),
        description="How a bridge's copies on several hypervisors are joined: used when a "
        "bridge has VMs on more than one inventory host.")
    cloud_init: CloudInitSpec | None = Field(
        default=None,
        description="Extras for the cloud-init seed of every VM that boots a disk image (a "
        "VM's own cloud_init adds to them).")

    @field_validator("name", mode="before")
    @classmethod
    def _no_hyphen(cls, v: Any) -> Any:
        if isinstance(v, str) and "-" in v:
            fixed = v.strip().replace("-", "")
            fix = f"; write {shown(fixed)}" if re.fullmatch(LAB_NAME, fixed) else ""
            raise ValueError(f"{shown(v)} has a '-': owned objects are named <lab>-<vm>, which "
                             f"must name one VM of one lab, so lab names have none{fix}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _deprecated_keys(cls, data: Any) -> Any:
        """``datapath`` was the first name of ``backend``: read it for a release, with a warning
        (OVS's ``datapath_type`` is the only datapath in a lab file now)."""
        if isinstance(data, dict) and "datapath" in data:
            if "backend" in data:
                raise _PathError("datapath", "is the deprecated name of backend; keep only backend")
            warnings.warn(
                "lab.datapath is deprecated: rename it to lab.backend (the virtio backend)",
                SpecDeprecation,
                stacklevel=2,
            )
            data = {("backend" if k == "datapath" else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> Lab:
        _unique("bridges", [b.name for b in self.bridges], "name")
        _unique("vms", [v.name for v in self.vms], "name")
        bridges = {b.name for b in self.bridges}
        for vi, vm in enumerate(self.vms):
            for ni, nic in enumerate(vm.nics):
                if nic.bridge not in bridges:
                    raise _PathError(
                        f"vms[{vi}].nics[{ni}].bridge",
                        f"{shown(nic.bridge)} is not in lab.bridges; add it there or fix the name",
                    )
        taps = self._check_addresses()
        for bi, bridge in enumerate(self.bridges):
            if bridge.name in taps:  # OVS would find the tap's port where the bridge's should be
                raise _PathError(f"bridges[{bi}].name", f"{shown(bridge.name)} is also the tap of "
                                 f"{taps[bridge.name]} (taps are <lab>-<vm>-<nic>); rename the "
                                 "bridge")
        self._check_uplinks(taps)
        return self

    def _check_uplinks(self, taps: dict[str, str]) -> None:
        """An uplink is a host NIC: not a bridge, not a tap, and on one bridge only."""
        bridges = {b.name for b in self.bridges}
        seen: dict[str, str] = {}
        for bi, bridge in enumerate(self.bridges):
            if bridge.uplink is None:
                continue
            key, name = f"bridges[{bi}].uplink.interface", bridge.uplink.interface
            if name in bridges or name in taps:
                what = "a bridge of the lab" if name in bridges else f"the tap of {taps[name]}"
                raise _PathError(key, f"{shown(name)} is {what}; name a host NIC such as eth1")
            if name in seen:
                raise _PathError(key, f"{shown(name)} is also the uplink of {seen[name]}; "
                                 "a NIC joins one bridge")
            seen[name] = f"bridges[{bi}]"

    def _check_addresses(self) -> dict[str, str]:
        """Refuse a MAC, IP or tap name used twice; the taps, each with its NIC's key path."""
        macs: dict[str, str] = {}
        ips: dict[str, str] = {}
        taps: dict[str, str] = {}
        for vi, vm in enumerate(self.vms):
            for ni, nic in enumerate(vm.nics):
                where = f"vms[{vi}].nics[{ni}]"
                mac = nic_mac(self.name, vm.name, ni, nic.mac)
                if mac in macs:
                    how = "" if nic.mac else (" (derived from the lab, VM and NIC names, as "
                                              "no mac: is set: set mac: on one of the two)")
                    raise _PathError(f"{where}.mac", f"{mac} is also used by {macs[mac]}{how}")
                macs[mac] = where
                addresses = [(f"{where}.ip", nic.ip)] + [
                    (f"{where}.trunks[{ti}].ip", t.ip) for ti, t in enumerate(nic.trunks or ())
                ]
                for key, address in addresses:
                    if address is None:
                        continue
                    ip = str(address.ip)
                    if ip in ips:
                        raise _PathError(key, f"{ip} is also used by {ips[ip]}")
                    ips[ip] = key.removesuffix(".ip")
                tap = tap_name(self.name, vm.name, ni)
                if tap in taps:
                    raise _PathError(where, f"tap name {tap} collides with {taps[tap]}; rename")
                taps[tap] = where
        return taps

    def vm(self, name: str) -> VmSpec:
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(name)


class SpecDeprecation(UserWarning):
    """A lab file key that still works but has a new name; the CLI prints it as a warning."""


def _unique(section: str, names: list[str], key: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise _PathError(f"{section}[{i}].{key}",
                             f"{shown(name)} is used twice; names are unique")
        seen.add(name)


def nic_queues(vm: VmSpec, nic: NicSpec) -> int:
    """Queue pairs of a NIC: the spec's value, or one per vCPU."""
    return nic.queues or vm.vcpus


HASH_IF_SET = ("cloud_init",)  # keys added later: unset, they leave older labs' hashes alone


def _unset_dropped(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unset_dropped(v) for k, v in value.items()
                if not (k in HASH_IF_SET and v is None)}
    if isinstance(value, list):
        return [_unset_dropped(v) for v in value]
    return value


def spec_hash(model: BaseModel) -> str:
    """A short, stable hash of a validated model (lab or VM)."""
    dumped = _unset_dropped(model.model_dump(mode="json"))
    data = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def parse_lab(data: Any, source: str = "lab") -> Lab:
    """Validate the ``lab`` mapping; raise SpecError naming the first bad key path."""
    if not isinstance(data, dict):
        raise SpecError("lab", f"is {yaml_value(data)}; it must be a mapping with name, "
                        "bridges and vms")
    try:
        return Lab.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc) from None
