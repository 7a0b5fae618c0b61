"""Host-side hops: the libvirt domain (live XML against the spec), the tap (netlink), and OVS
(OVSDB through ``provision.ovs.Ovs``). Observation only.
"""

from __future__ import annotations

from typing import Any

import libvirt

from provision.backends import virt
from provision.backends.ovs import Ovs
from provision.core import domxml
from provision.core.desired import OWNER_LAB, OWNER_NIC, OWNER_VM, DesiredDomain, DesiredLab
from provision.core.observed import ObservedLab
from provision.verify.matrix import Endpoint
from provision.verify.model import Check, verdict

OWNER_KEYS = ("lab", "vm", "spec-hash", "backend")
NIC_KEYS = ("type", "model", "backend", "queues", "tap", "rx_queue_size", "tx_queue_size")


def _live_facts(conn: libvirt.virConnect, name: str) -> tuple[dict[str, Any] | None, bool, str]:
    dom = virt.lookup(conn, name)
    if dom is None:
        return None, False, "absent"
    try:
        state = dom.state()[0]
        xml = dom.XMLDesc(0)
    except libvirt.libvirtError as exc:
        return None, False, f"unreadable: {exc.get_error_message()}"
    running = state == libvirt.VIR_DOMAIN_RUNNING
    names = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
             libvirt.VIR_DOMAIN_SHUTOFF: "shut off", libvirt.VIR_DOMAIN_CRASHED: "crashed"}
    return domxml.domain_facts(xml), running, names.get(state, f"state {state}")


def domain_checks(
    conn: libvirt.virConnect, want: DesiredDomain, eps: list[Endpoint], target: str
) -> tuple[list[Check], bool]:
    """domain.running and domain.owner for the VM, domain.nic per NIC; whether it runs."""
    live, running, state = _live_facts(conn, want.name)
    checks = [verdict("domain.running", target, [] if running else [f"domain {want.name} is "
                                                                    f"{state}"],
                      {"domain": want.name, "state": state}, f"{want.name} {state}")]
    if live is None:
        why = f"domain {want.name} is {state}"
        checks.append(verdict("domain.owner", target, [why], {}))
        checks += [verdict("domain.nic", ep.target, [why], {}) for ep in eps]
        return checks, False
    wanted = domxml.domain_facts(want.xml)
    have_owner, want_owner = live.get("owner") or {}, wanted.get("owner") or {}
    problems = [f"metadata {k} is {have_owner.get(k)!r}, want {want_owner.get(k)!r}"
                for k in OWNER_KEYS if have_owner.get(k) != want_owner.get(k)]
    checks.append(verdict("domain.owner", target, problems, {"owner": have_owner},
                          f"owned by lab {have_owner.get('lab')}, spec-hash "
                          f"{have_owner.get('spec-hash')}"))
    have_nics = {i["mac"]: i for i in live["interfaces"]}
    want_nics = {i["mac"]: i for i in wanted["interfaces"]}
    for ep in eps:
        checks.append(_nic_check(ep, have_nics.get(ep.mac), want_nics.get(ep.mac, {})))
    return checks, running


def _nic_check(ep: Endpoint, have: dict[str, Any] | None, want: dict[str, Any]) -> Check:
    if have is None:
        return verdict("domain.nic", ep.target, [f"no <interface> with MAC {ep.mac} in the "
                                                 "live XML"], {"mac": ep.mac})
    problems = [f"{k} is {have.get(k)!r}, want {want.get(k)!r}"
                for k in NIC_KEYS if have.get(k) != want.get(k)]
    evidence = {k: have.get(k) for k in ("mac", *NIC_KEYS)}
    ok = f"{have.get('model')} queues={have.get('queues')} driver={have.get('backend')}"
    return verdict("domain.nic", ep.target, problems, evidence, ok)


def tap_check(ep: Endpoint, observed: ObservedLab) -> Check:
    tap = observed.taps.get(ep.tap)
    if tap is None:
        return verdict("tap", ep.target, [f"tap {ep.tap} does not exist"], {"tap": ep.tap})
    owner = tap.owner or {}
    want_owner = {"lab": ep.lab, "vm": ep.vm, "nic": str(ep.index)}
    problems = []
    if {k: owner.get(k) for k in want_owner} != want_owner:
        problems.append(f"ifalias owner is {owner or 'absent'}, want {want_owner}")
    if not tap.up:
        problems.append("link is down")
    if not tap.multi_queue:
        problems.append("not multi_queue")
    if tap.queues_attached != ep.queues:
        problems.append(f"{tap.queues_attached} queues attached, want {ep.queues}")
    evidence = {"tap": ep.tap, "up": tap.up, "multi_queue": tap.multi_queue,
                "queues_attached": tap.queues_attached, "owner": owner}
    ok = f"{ep.tap} up, multi_queue, {tap.queues_attached} queues attached"
    return verdict("tap", ep.target, problems, evidence, ok)


def bridge_checks(want: DesiredLab, observed: ObservedLab) -> list[Check]:
    checks = []
    for br in want.bridges:
        seen = observed.bridges.get(br.name)
        if seen is None:
            checks.append(verdict("ovs.bridge", br.name, [f"bridge {br.name} does not exist"],
                                  {}))
            continue
        dtype = seen.datapath_type or "system"
        problems = [] if dtype == br.datapath_type else [
            f"datapath_type is {dtype}, want {br.datapath_type}"]
        evidence = {"datapath_type": dtype, "owner": seen.owner, "ports": list(seen.ports)}
        owner = f"owned by {seen.owner}" if seen.owner else "the user's, used by the lab"
        checks.append(verdict("ovs.bridge", br.name, problems, evidence,
                              f"datapath_type {dtype}, {owner}"))
    return checks


def port_check(ep: Endpoint, observed: ObservedLab) -> Check:
    port = observed.ports.get(ep.tap)
    if port is None:
        return verdict("ovs.port", ep.target, [f"port {ep.tap} is not in OVSDB"],
                       {"port": ep.tap})
    problems = []
    if port.bridge != ep.bridge:
        problems.append(f"on bridge {port.bridge or '(none)'}, want {ep.bridge}")
    if port.tag != ep.vlan:
        problems.append(f"tag is {port.tag}, want {ep.vlan}")
    if port.trunks != ep.trunks:
        problems.append(f"trunks are {list(port.trunks)}, want {list(ep.trunks)}")
    if not port.ofport or port.ofport <= 0:
        problems.append(f"ofport is {port.ofport}: ovs-vswitchd did not attach it")
    if port.error:
        problems.append(f"Interface error: {port.error}")
    ids = {OWNER_LAB: ep.lab, OWNER_VM: ep.vm, OWNER_NIC: str(ep.index)}
    have = {k: port.external_ids.get(k) for k in ids}
    if have != ids:
        problems.append(f"external_ids {have}, want {ids}")
    evidence = {"port": port.name, "bridge": port.bridge, "tag": port.tag,
                "trunks": list(port.trunks), "ofport": port.ofport, "error": port.error,
                "external_ids": have}
    vlan = f"tag {port.tag}" if port.tag else f"trunks {list(port.trunks)}" if port.trunks \
        else "untagged"
    ok = f"on {port.bridge}, {vlan}, ofport {port.ofport}"
    return verdict("ovs.port", ep.target, problems, evidence, ok)


def interface_stats(ovs: Ovs, names: list[str]) -> dict[str, dict[str, int]]:
    """OVS Interface statistics (rx/tx packets) of the named interfaces, from OVSDB."""
    want = set(names)
    out = {}
    for row in list(ovs.api.tables["Interface"].rows.values()):
        if row.name in want:
            stats = dict(row.statistics)
            out[row.name] = {k: int(stats.get(k, 0)) for k in ("rx_packets", "tx_packets")}
    return out
