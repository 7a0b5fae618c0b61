"""A lab bridge with an uplink: a host NIC (one end of a veth pair whose other end is an
"outside" host in a network namespace) joins the bridge as an owned access port on VLAN 10.
VMs on VLAN 10 reach the outside address, those on VLAN 20 do not, the NIC itself is never
changed, and `down` removes only the port.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from .conftest import (
    force_cleanup,
    link,
    ovs_row,
    provision,
    provision_json,
    run,
    unique_name,
    vsctl,
    write_lab,
)

pytestmark = pytest.mark.integration

PROBE = "10.94.0.254"


def nic_state(name: str) -> dict[str, Any]:
    """What the host owns of the NIC: MTU, flags and addresses (the lab may change none)."""
    info = link(name)
    assert info is not None, f"{name} is gone"
    addrs = json.loads(run("ip", "-j", "addr", "show", "dev", name).stdout)[0]["addr_info"]
    # PROMISC is ovs-vswitchd's while the NIC is a port (a switch port hears every frame)
    return {"mtu": info["mtu"], "flags": sorted(set(info["flags"]) - {"PROMISC"}),
            "addresses": sorted(a["local"] for a in addrs if a["family"] == "inet")}


def outside_ping(ns: str, address: str) -> int:
    # busybox's ping: busybox-static is one of the packages `host prepare` installs
    proc = run("ip", "netns", "exec", ns, "busybox", "ping", "-c", "3", "-W", "2", address,
               check=False)
    for line in proc.stdout.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    return 0


@pytest.fixture(scope="module")
def uplinked(conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Any]]:
    name = unique_name()
    nic, peer, ns = f"{name}up", f"{name}out", f"{name}ns"
    path = write_lab(tmp_path_factory.mktemp("uplink") / f"{name}.yml", {
        "name": name,
        "bridges": [{"name": f"br-{name}", "uplink": {
            "interface": nic, "vlan_mode": "access", "vlans": [10], "probe": PROBE}}],
        "vms": [
            {"name": "vm1", "memory_mib": 128,
             "nics": [{"bridge": f"br-{name}", "vlan": 10, "ip": "10.94.0.1/24"}]},
            {"name": "vm2", "memory_mib": 128,
             "nics": [{"bridge": f"br-{name}", "vlan": 20, "ip": "10.94.0.2/24"}]},
        ],
    })
    run("ip", "netns", "add", ns)
    try:
        run("ip", "link", "add", nic, "type", "veth", "peer", "name", peer)
        run("ip", "link", "set", peer, "netns", ns)
        run("ip", "link", "set", nic, "up")
        for argv in (("ip", "link", "set", "lo", "up"), ("ip", "link", "set", peer, "up"),
                     ("ip", "addr", "add", f"{PROBE}/24", "dev", peer)):
            run("ip", "netns", "exec", ns, *argv)
        before = nic_state(nic)
        up = provision_json("up", str(path))
        yield {"name": name, "nic": nic, "ns": ns, "path": path, "before": before, "up": up}
    finally:
        force_cleanup(conn, name, path)
        run("ip", "link", "del", nic, check=False)
        run("ip", "netns", "del", ns, check=False)


def test_the_uplink_is_an_owned_access_port_and_the_nic_is_untouched(
        uplinked: dict[str, Any]) -> None:
    nic, name = uplinked["nic"], uplinked["name"]
    assert vsctl("port-to-br", nic) == f"br-{name}"
    port = ovs_row("Port", nic)
    assert port["tag"] == 10 and port["external_ids"] == {"virtio-lab-lab": name}
    assert ovs_row("Interface", nic)["ofport"] > 0
    assert nic_state(nic) == uplinked["before"]


def test_verify_checks_the_uplink_and_that_vlan_10_reaches_the_outside(
        uplinked: dict[str, Any]) -> None:
    proc = provision("verify", str(uplinked["path"]), "--json", "-", check=False)
    report = json.loads(proc.stdout)
    by = {(c["name"], c["target"]): c for c in report["checks"]}
    assert proc.returncode == 0, [c for c in report["checks"] if c["status"] == "fail"]
    assert by[("ovs.uplink", uplinked["nic"])]["status"] == "pass"
    probe = by[("reach", f"{uplinked['name']}/vm1/0->{PROBE} via uplink {uplinked['nic']}")]
    assert probe["status"] == "pass" and probe["evidence"]["received"] > 0
    # vm2 is on VLAN 20, which the access uplink does not carry: no probe from it
    assert not [k for k in by if k[0] == "reach" and k[1].startswith(f"{uplinked['name']}/vm2")
                and PROBE in k[1]]
    assert outside_ping(uplinked["ns"], "10.94.0.1") == 3  # from the outside, in VLAN 10
    assert outside_ping(uplinked["ns"], "10.94.0.2") == 0  # VLAN 20 stays inside


def test_a_missing_uplink_nic_is_exit_4_before_any_change(tmp_path: Path) -> None:
    name = unique_name()
    path = write_lab(tmp_path / f"{name}.yml", {
        "name": name, "bridges": [{"name": f"br-{name}", "uplink": {"interface": f"{name}no"}}],
        "vms": [{"name": "vm1", "memory_mib": 128, "nics": [{"bridge": f"br-{name}"}]}]})
    proc = provision("up", str(path), check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert f"uplink {name}no of bridge br-{name}: no such interface" in proc.stderr
    assert f"br-{name}" not in vsctl("list-br").split() and link(f"{name}-vm1-0") is None


def test_down_removes_the_port_and_leaves_the_nic(uplinked: dict[str, Any]) -> None:
    nic, name = uplinked["nic"], uplinked["name"]
    provision_json("down", str(uplinked["path"]))
    assert f"br-{name}" not in vsctl("list-br").split()
    assert vsctl("port-to-br", nic, check=False) == ""
    assert nic_state(nic) == uplinked["before"]
    assert "PROMISC" not in link(nic)["flags"]  # ovs-vswitchd let go of it
