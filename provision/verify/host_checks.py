"""Host-side hops: the libvirt domain (live XML against the spec), the tap (netlink), and OVS
(OVSDB through ``provision.backends.ovs.Ovs``). Observation only.
"""

from __future__ import annotations

from typing import Any

import libvirt

from provision.backends import virt
from provision.backends.ovs import Ovs
from provision.core import compare, domxml
from provision.core.desired import DesiredDomain, DesiredLab
from provision.core.observed import ObservedLab
from provision.verify.matrix import Endpoint
from provision.verify.model import Check, verdict

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
    diffs = compare.domain_diffs(want.xml, live)
    by_nic: dict[str, list[compare.Diff]] = {}
    for d in diffs:
        if d.key.startswith("interface "):
            mac = d.key.split()[1].split(".", 1)[0]
            by_nic.setdefault(mac, []).append(d)
    have_owner = live.get("owner") or {}
    problems = [str(d) for d in diffs if not d.key.startswith("interface ")]
    checks.append(verdict("domain.owner", target, problems, {"owner": have_owner},
                          f"owned by lab {have_owner.get('lab')}, spec-hash "
                          f"{have_owner.get('spec-hash')}, definition as rendered"))
    have_nics = {i["mac"]: i for i in live["interfaces"]}
    for ep in eps:
        checks.append(_nic_check(ep, have_nics.get(ep.mac), by_nic.get(ep.mac, [])))
    return checks, running


def _nic_check(ep: Endpoint, have: dict[str, Any] | None, diffs: list[compare.Diff]) -> Check:
    if have is None:
        return verdict("domain.nic", ep.target, [f"no <interface> with MAC {ep.mac} in the "
                                                 "live XML"], {"mac": ep.mac})
    problems = [str(d) for d in diffs]
    evidence = {k: have.get(k) for k in ("mac", *NIC_KEYS)}
    ok = f"{have.get('model')} queues={have.get('queues')} driver={have.get('backend')}"
    return verdict("domain.nic", ep.target, problems, evidence, ok)


def tap_check(ep: Endpoint, want: DesiredLab, observed: ObservedLab) -> Check:
    tap = observed.taps.get(ep.tap)
    desired = next((t for t in want.taps if t.name == ep.tap), None)
    if tap is None or desired is None:
        return verdict("tap", ep.target, [f"tap {ep.tap} does not exist"], {"tap": ep.tap})
    problems = [str(d) for d in compare.tap_diffs(desired, tap)]
    # While the VM runs, QEMU holds one fd per queue: evidence the plan does not need.
    if tap.queues_attached != ep.queues:
        problems.append(f"{tap.queues_attached} queues attached, want {ep.queues}")
    evidence = {"tap": ep.tap, "up": tap.up, "multi_queue": tap.multi_queue,
                "queues_attached": tap.queues_attached,
                "owner": vars(tap.owner) if tap.owner else None}
    flag = "multi_queue" if tap.multi_queue else "single queue"
    ok = f"{ep.tap} up, {flag}, {tap.queues_attached} of {ep.queues} queue(s) attached"
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
        problems = [str(d) for d in compare.bridge_diffs(br, seen)]
        lab = seen.owner.lab if seen.owner else None
        evidence = {"datapath_type": dtype, "owner": lab, "ports": list(seen.ports)}
        owner = f"owned by {lab}" if lab else "the user's, used by the lab"
        checks.append(verdict("ovs.bridge", br.name, problems, evidence,
                              f"datapath_type {dtype}, {owner}"))
    return checks


def port_check(ep: Endpoint, want: DesiredLab, observed: ObservedLab) -> Check:
    port = observed.ports.get(ep.tap)
    desired = next((p for p in want.ports if p.name == ep.tap), None)
    if port is None or desired is None:
        return verdict("ovs.port", ep.target, [f"port {ep.tap} is not in OVSDB"],
                       {"port": ep.tap})
    problems = [str(d) for d in compare.port_diffs(desired, port)]
    evidence = {**compare.port_view(port), "port": port.name, "ofport": port.ofport,
                "error": port.error}
    vlan = f"tag {port.tag}" if port.tag else f"trunks {list(port.trunks)}" if port.trunks \
        else "untagged"
    ok = f"on {port.bridge}, {vlan}, ofport {port.ofport}"
    return verdict("ovs.port", ep.target, problems, evidence, ok)


def link_port_checks(want: DesiredLab, observed: ObservedLab) -> list[Check]:
    """The ports that are not a VM's: uplinks (a host NIC) and tunnels to other hypervisors,
    each attached (ofport > 0, no error) with its VLANs, and a tunnel with its peer and key."""
    checks = []
    for port in want.ports:
        if port.role == "nic":
            continue
        name = f"ovs.{port.role}"
        seen = observed.ports.get(port.name)
        if seen is None:
            checks.append(verdict(name, port.name, [f"port {port.name} is not in OVSDB"],
                                  {"port": port.name, "bridge": port.bridge}))
            continue
        problems = [str(d) for d in compare.port_diffs(port, seen)]
        evidence = {**compare.port_view(seen), "port": seen.name, "ofport": seen.ofport,
                    "error": seen.error}
        options = dict(seen.options)
        what = (f"{seen.type} to {options.get('remote_ip')} key {options.get('key')}"
                if port.role == "tunnel" else
                f"tag {seen.tag}" if seen.tag else f"trunks {list(seen.trunks) or 'all'}")
        checks.append(verdict(name, port.name, problems, evidence,
                              f"on {seen.bridge}, {what}, ofport {seen.ofport}"))
    return checks


def interface_stats(ovs: Ovs, names: list[str]) -> dict[str, dict[str, int]]:
    """OVS Interface statistics (rx/tx packets) of the named interfaces, from OVSDB."""
    want = set(names)
    out = {}
    for row in list(ovs.api.tables["Interface"].rows.values()):
        if row.name in want:
            stats = dict(row.statistics)
            out[row.name] = {k: int(stats.get(k, 0)) for k in ("rx_packets", "tx_packets")}
    return out
