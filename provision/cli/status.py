"""``provision status``: what a lab has on this host now, per VM and NIC, from observation."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from provision.core.owner import domain_name, nic_mac, owned_by, tap_name
from provision.core.spec import Lab, nic_queues
from provision.engine.converge import Backends, observe_lab


def lab_status(b: Backends, lab: Lab) -> dict[str, Any]:
    """Observed facts for every VM and NIC of the lab (no judgement: that is verify's job)."""
    seen = observe_lab(b, lab.name)
    vms = []
    for vm in lab.vms:
        dom_name = domain_name(lab.name, vm.name)
        dom = seen.domains.get(dom_name)
        guest = seen.guests.get(dom_name, {})
        nics = []
        for i, nic in enumerate(vm.nics):
            tap = tap_name(lab.name, vm.name, i)
            mac = nic_mac(lab.name, vm.name, i, nic.mac)
            t, p, g = seen.taps.get(tap), seen.ports.get(tap), guest.get(mac)
            nics.append(
                {
                    "tap": tap,
                    "mac": mac,
                    "queues": nic_queues(vm, nic),
                    "tap_up": t.up if t else None,
                    "tap_multi_queue": t.multi_queue if t else None,
                    "tap_queues_attached": t.queues_attached if t else None,
                    "bridge": p.bridge if p else None,
                    "tag": p.tag if p else None,
                    "trunks": list(p.trunks) if p else None,
                    "ofport": p.ofport if p else None,
                    "ovs_error": p.error if p else None,
                    "guest_ifname": g.ifname if g else None,
                    "guest_combined": g.combined if g else None,
                    "guest_addresses": list(g.addresses) if g else None,
                }
            )
        vms.append(
            {
                "vm": vm.name,
                "domain": dom_name,
                "state": ("running" if dom.running else "shut off") if dom else "absent",
                "backend": (dom.facts.get("owner") or {}).get("backend") if dom else None,
                "agent": dom_name in seen.guests,
                "nics": nics,
            }
        )
    bridges = [
        {"name": b.name, "datapath_type": b.datapath_type, "owned": owned_by(b.owner, lab.name)}
        for b in seen.bridges.values()
    ]
    return {"lab": lab.name, "bridges": bridges, "vms": vms}


def print_status(console: Console, data: dict[str, Any]) -> None:
    for br in data["bridges"]:
        owner = "owned" if br["owned"] else "not owned, used"
        console.print(
            f"bridge {br['name']}: datapath_type={br['datapath_type'] or 'system'} ({owner})"
        )
    t = Table(title=f"lab {data['lab']}")
    for col in (
        "vm",
        "state",
        "agent",
        "tap",
        "queues",
        "attached",
        "bridge",
        "vlan",
        "ofport",
        "guest if",
        "combined",
        "address",
    ):
        t.add_column(col)
    for vm in data["vms"]:
        for nic in vm["nics"] or [{}]:
            vlan = nic.get("tag") or ",".join(map(str, nic.get("trunks") or [])) or "-"
            t.add_row(
                vm["vm"],
                vm["state"],
                "yes" if vm["agent"] else "no",
                *(
                    str(nic.get(k) if nic.get(k) is not None else "-")
                    for k in ("tap", "queues", "tap_queues_attached", "bridge")
                ),
                str(vlan),
                *(
                    str(nic.get(k) if nic.get(k) is not None else "-")
                    for k in ("ofport", "guest_ifname", "guest_combined")
                ),
                " ".join(nic.get("guest_addresses") or []) or "-",
            )
    console.print(t)
