"""The objects of the lab's picture, one function per kind: a host's bridges, its VMs with
their NICs, taps and ports, its uplinks and tunnels, what the lab owns there but no longer
names, and the failing NIC pairs of a verify report. Pure: from the spec and the observed
state (``None`` for a host not observed from here, drawn from the spec)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import graphviz

from provision.core.observed import ObservedDomain, ObservedGuestNic, ObservedLab
from provision.core.owner import domain_name, nic_mac, owned_by, tap_name
from provision.core.placement import bridge_hosts
from provision.core.spec import NicSpec, VmSpec, nic_queues
from provision.core.tunnels import tunnel_name, vni
from provision.report.marks import Element, Marks
from provision.report.scene import FAILED_PAIR, Scene, element_id, text, vlan_text

XML_BACKENDS = {"qemu": "userspace (domain XML)", "vhost": "vhost-net asked (domain XML)"}
TUNNEL_TYPES = ("geneve", "vxlan")


def draw_host(sc: Scene, g: graphviz.Digraph, host: str | None, seen: ObservedLab | None
              ) -> None:
    """Everything of the lab on ``host`` (None: the one host drawn) into ``g``."""
    draw_bridges(sc, g, host, seen)
    vms = [vm for vm in sc.lab.vms if not sc.clustered or vm.host == host]
    for vm in vms:
        draw_vm(sc, g, host, vm, seen)
    draw_uplinks(sc, g, host, seen)
    if sc.clustered:
        draw_tunnels(sc, g, host, seen)
    if seen is not None:
        draw_unexpected(sc, g, host, seen, {domain_name(sc.lab.name, vm.name) for vm in vms})


def draw_bridges(sc: Scene, g: graphviz.Digraph, host: str | None, seen: ObservedLab | None
                 ) -> None:
    for b in sc.lab.bridges:
        have = seen.bridges.get(b.name) if seen else None
        lines = [b.name]
        if have is not None:
            lines.append(f"datapath {have.datapath_type or 'system'}")
            if not owned_by(have.owner, sc.lab.name):
                lines.append("the user's bridge: used, not owned")
        else:
            lines.append(f"datapath_type {b.datapath_type} (lab file)")
        state = "remote" if seen is None else "present" if have else "absent"
        sc.node(g, Element("bridge", host, b.name), lines, state, shape="box3d")
    names = {b.name for b in sc.lab.bridges}
    for have in (seen.bridges.values() if seen else ()):
        if have.name not in names and owned_by(have.owner, sc.lab.name):
            sc.node(g, Element("bridge", host, have.name),
                    [have.name, f"datapath {have.datapath_type or 'system'}"], "unexpected",
                    shape="box3d")


def bridge_id(sc: Scene, g: graphviz.Digraph, host: str | None, name: str) -> str:
    """The node of bridge ``name`` on ``host``; a bridge the lab neither names nor owns
    (a port was found on it) is drawn on first use."""
    element = Element("bridge", host, name)
    if element not in sc.drawn:
        sc.node(g, element, [name, "not the lab's"], "unexpected", shape="box3d")
    return element_id(element)


def draw_vm(sc: Scene, g: graphviz.Digraph, host: str | None, vm: VmSpec,
            seen: ObservedLab | None) -> None:
    """The VM as a cluster holding its NICs; each NIC's tap and port beside it."""
    dom_name = domain_name(sc.lab.name, vm.name)
    dom = seen.domains.get(dom_name) if seen else None
    state = "remote" if seen is None else "present" if dom else "absent"
    lines = [f"{vm.name} ({dom_name})",
             _vcpus((dom.facts.get("vcpus") if dom else None) or vm.vcpus)]
    if dom is not None and seen is not None:
        lines[-1] += f", {_run_state(dom, seen)}"
        if not owned_by(dom.owner, sc.lab.name):
            lines.append(f"not owned by lab {sc.lab.name}: a conflict")
    ifaces = {i["mac"]: i for i in (dom.facts.get("interfaces", []) if dom else [])}
    guest = seen.guests.get(dom_name, {}) if seen else {}
    with sc.cluster(g, Element("vm", host, vm.name), lines, state) as box:
        nic_ids = [draw_nic(sc, box, host, vm, i, nic, state, ifaces, guest)
                   for i, nic in enumerate(vm.nics)]
    for i, nic in enumerate(vm.nics):
        port = draw_port(sc, g, host, vm, i, nic, seen)
        sc.edge(nic_ids[i], port, dir="none")


def _vcpus(count: int | None) -> str:
    return f"{count} vCPU{'' if count == 1 else 's'}"


def _run_state(dom: ObservedDomain, seen: ObservedLab) -> str:
    if not dom.running:
        return "shut off"
    if dom.name in seen.guests:
        return "running, agent answers"
    return "running, agent silent" if seen.guests_observed else "running"


def draw_nic(sc: Scene, g: graphviz.Digraph, host: str | None, vm: VmSpec, i: int,
             nic: NicSpec, vm_state: str, ifaces: Mapping[str, dict[str, Any]],
             guest: Mapping[str, ObservedGuestNic]) -> str:
    mac = nic_mac(sc.lab.name, vm.name, i, nic.mac)
    iface, inside = ifaces.get(mac), guest.get(mac)
    state = vm_state if vm_state != "present" else "present" if iface else "absent"
    queues = iface["queues"] if iface else nic_queues(vm, nic)
    backend = sc.backends.get(f"{vm.name}/{i}") or XML_BACKENDS.get((iface or {}).get("backend"))
    lines = [f"nic {i}" + (f" {inside.ifname}" if inside else ""), mac,
             f"{queues} queue{'s' if queues != 1 else ''}" + (f", {backend}" if backend else "")]
    if inside is not None:
        lines.append(f"guest: {inside.combined} combined, " + (" ".join(inside.addresses)
                                                                or "no address"))
        lines += [f"{v.ifname} {' '.join(v.addresses)}".strip() for v in inside.vlans]
    else:
        lines += [str(nic.ip)] if nic.ip else []
        lines += [f"VLAN {t.vlan} {t.ip}" for t in nic.trunks or () if t.ip]
    return sc.node(g, Element("nic", host, f"{vm.name}/{i}"), lines, state, rounded=True)


def draw_port(sc: Scene, g: graphviz.Digraph, host: str | None, vm: VmSpec, i: int,
              nic: NicSpec, seen: ObservedLab | None) -> str:
    """The NIC's tap and OVS port (one name, one node), joined to its bridge."""
    name = tap_name(sc.lab.name, vm.name, i)
    port = seen.ports.get(name) if seen else None
    tap = seen.taps.get(name) if seen else None
    lines = [name]
    if port is None and tap is None:  # not observed, or absent: what the lab file says
        lines.append(f"{vlan_text(nic.vlan, nic.trunk_vlans)} (lab file)")
    else:
        lines.append(_tap_text(tap))
        lines += _port_text(port)
    state = "remote" if seen is None else "present" if port or tap else "absent"
    node = sc.node(g, Element("port", host, name), lines, state)
    sc.edge(node, bridge_id(sc, g, host, port.bridge if port else nic.bridge), dir="none")
    return node


def _tap_text(tap: Any) -> str:
    if tap is None:
        return "tap absent"
    kind = "multi_queue" if tap.multi_queue else "single queue"
    return f"tap {kind}, {tap.queues_attached} attached" + ("" if tap.up else ", down")


def _port_text(port: Any) -> list[str]:
    if port is None:
        return ["OVS port absent"]
    lines = [f"OVS {vlan_text(port.tag, port.trunks)}, ofport {port.ofport}"]
    if port.error:
        lines.append(f"error: {port.error[:80]}")
    return lines


def draw_uplinks(sc: Scene, g: graphviz.Digraph, host: str | None, seen: ObservedLab | None
                 ) -> None:
    for b in sc.lab.bridges:
        if b.uplink is None:
            continue
        up = b.uplink
        port = seen.ports.get(up.interface) if seen else None
        carried = vlan_text(up.tag, up.trunks) if up.tag or up.trunks else "all VLANs"
        lines = [f"{up.interface} (uplink)"]
        lines += _port_text(port) if seen is not None else [f"{carried} (lab file)"]
        state = "remote" if seen is None else "present" if port else "absent"
        node = sc.node(g, Element("port", host, up.interface), lines, state, shape="invhouse")
        sc.edge(node, bridge_id(sc, g, host, port.bridge if port else b.name), dir="none")


def draw_tunnels(sc: Scene, g: graphviz.Digraph, host: str | None, seen: ObservedLab | None
                 ) -> None:
    """This host's tunnel port to each peer that has VMs on the same bridge."""
    for bridge, hosts in bridge_hosts(sc.lab).items():
        if host not in hosts or len(hosts) < 2:
            continue
        for peer in (h for h in hosts if h != host):
            name = tunnel_name(sc.lab.name, bridge, peer)
            port = seen.ports.get(name) if seen else None
            lines = [f"tunnel to {peer}", name]
            if port is not None:
                opts = port.options
                lines.append(f"{port.type} to {opts.get('remote_ip')} key {opts.get('key')}")
            else:
                lines.append(f"{sc.lab.tunnels.type} key {vni(sc.lab.name, bridge)}")
            state = "remote" if seen is None else "present" if port else "absent"
            node = sc.node(g, Element("port", host, name), lines, state, shape="hexagon")
            sc.tunnels[(host, bridge, peer)] = node
            sc.edge(node, bridge_id(sc, g, host, port.bridge if port else bridge), dir="none")


def draw_tunnel_links(sc: Scene) -> None:
    """Each pair of tunnel ends, joined once through the underlay."""
    for (host, bridge, peer), node in sc.tunnels.items():
        other = sc.tunnels.get((peer, bridge, host))
        if other is not None and str(host) < str(peer):
            sc.edge(node, other, dir="none", style="dashed", label="underlay",
                    constraint="false")


def draw_unexpected(sc: Scene, g: graphviz.Digraph, host: str | None, seen: ObservedLab,
                    domains: set[str]) -> None:
    """What the lab owns here that the picture has not drawn: ports and taps, then
    domains, each marked as not in the lab file (or placed on another host)."""
    drawn_ports = {e.name for e in sc.drawn if e.kind == "port" and e.host == host}
    lab = sc.lab.name
    ports = {p.name: p for p in seen.ports.values() if owned_by(p.owner, lab)}
    taps = {t.name: t for t in seen.taps.values() if owned_by(t.owner, lab)}
    port_ids = {}
    for name in sorted((set(ports) | set(taps)) - drawn_ports):
        port = ports.get(name)
        lines = [name]
        if port is not None and port.type in TUNNEL_TYPES:
            lines.append(f"{port.type} to {port.options.get('remote_ip')}")
        else:
            lines.append(_tap_text(taps.get(name)))
        lines += _port_text(port)
        node = sc.node(g, Element("port", host, name), lines, "unexpected")
        port_ids[name] = node
        if port is not None:
            sc.edge(node, bridge_id(sc, g, host, port.bridge), dir="none")
    for dom in seen.domains.values():
        if dom.name not in domains and owned_by(dom.owner, lab):
            _draw_unexpected_domain(sc, g, host, dom, port_ids)


def _draw_unexpected_domain(sc: Scene, g: graphviz.Digraph, host: str | None,
                            dom: ObservedDomain, port_ids: Mapping[str, str]) -> None:
    state = "running" if dom.running else "shut off"
    lines = [dom.name, f"{_vcpus(dom.facts.get('vcpus'))}, {state}"]
    placed = next((vm.host for vm in sc.lab.vms
                   if domain_name(sc.lab.name, vm.name) == dom.name), None)
    if placed is not None:
        lines.append(f"the lab file places it on {placed}")
    with sc.cluster(g, Element("domain", host, dom.name), lines, "unexpected") as box:
        for iface in dom.facts.get("interfaces", []):
            queues = iface.get("queues")
            node = sc.node(box, Element("nic", host, f"{dom.name}/{iface['mac']}"),
                           [iface["mac"], f"{queues} queues",
                            XML_BACKENDS.get(iface.get("backend"), "")], "unexpected")
            if iface.get("tap") in port_ids:
                sc.edge(node, port_ids[iface["tap"]], dir="none")


def draw_failed_pairs(sc: Scene, marks: Marks) -> None:
    """A red dashed edge for each NIC pair whose reach, isolation or TCP check failed."""
    for element, pair_marks in marks.pairs():
        failed = [m for m in pair_marks if m.status == "fail"]
        src, dst = element.src, element.dst
        if not failed or src not in sc.drawn or dst not in sc.drawn:
            continue
        sc.drawn.add(element)
        names = ", ".join(sorted({m.name for m in failed}))
        sc.edge(element_id(src), element_id(dst), label=text([names]),
                tooltip=graphviz.escape("\n".join(f"FAIL {m.name} {element.name}: {m.detail}"
                                                  for m in failed)), **FAILED_PAIR)


def report_backends(report: Mapping[str, Any] | None, lab_name: str) -> dict[str, str]:
    """The backend QEMU uses per NIC ("vm/i"), from the report's qemu.netdev evidence."""
    out: dict[str, str] = {}
    for check in (report or {}).get("checks", []):
        evidence = check.get("evidence")
        if check.get("name") != "qemu.netdev" or not isinstance(evidence, dict):
            continue
        target = str(check.get("target", "")).rpartition(": ")[2]
        lab, _, nic = target.partition("/")
        if lab == lab_name and isinstance(evidence.get("backend"), str):
            out[nic] = evidence["backend"]
    return out
