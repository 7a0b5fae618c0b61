"""A lab across three hypervisors: `provision hosts up 3`, the playbooks over SSH, and checks
from outside each host (its own ovs-vsctl and libvirt through `provision hosts exec`, pings
run in the guests through libvirt's agent API), then a VM moved, and `down` on every host.

br-a spans hv1, hv2 and hv3 with VLANs 10 and 20; br-b spans hv1 and hv2 (and, once v2
moves to hv3, hv1 and hv3). Small guests: 128 MiB, one vCPU but v1 (two, two queues).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_ansible import playbook

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROVISION = str(Path(sys.executable).with_name("provision"))
HOSTS = ("hv1", "hv2", "hv3")
# Runs inside a hypervisor: a shell command in a guest through libvirt's agent API.
GUEST_SH = """
import base64, json, sys, time
import libvirt, libvirt_qemu
dom = libvirt.open("qemu:///system").lookupByName(sys.argv[1])
def call(e, a):
    msg = json.dumps({"execute": e, "arguments": a})
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, msg, 20, 0))["return"]
pid = call("guest-exec", {"path": "/bin/sh", "arg": ["-c", sys.argv[2]], "capture-output": True})
for _ in range(300):
    s = call("guest-exec-status", {"pid": pid["pid"]})
    if s["exited"]:
        print(s.get("exitcode"), base64.b64decode(s.get("out-data", "")).decode())
        break
    time.sleep(0.1)
"""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def inside(host: str, *argv: str) -> str:
    return run(PROVISION, "hosts", "exec", host, "--", *argv).stdout


def ping(host: str, domain: str, address: str) -> int:
    """Replies to three pings from the guest ``domain`` on ``host``."""
    out = inside(host, sys.executable, "-c", GUEST_SH, domain,
                 f"ping -c 3 -W 2 {address} | grep -o '[0-9]* packets received'")
    words = out.split()
    return int(words[1]) if len(words) > 1 and words[1].isdigit() else 0


def domains(host: str) -> set[str]:
    return set(inside(host, "virsh", "-c", "qemu:///system", "list", "--all",
                      "--name").split())


def tunnels(host: str) -> dict[str, tuple[str, str]]:
    """Geneve ports on ``host``: name -> (bridge, remote_ip)."""
    out = {}
    for br in inside(host, "ovs-vsctl", "list-br").split():
        for port in inside(host, "ovs-vsctl", "list-ports", br).split():
            kind = inside(host, "ovs-vsctl", "get", "Interface", port, "type").strip()
            if kind == "geneve":
                remote = inside(host, "ovs-vsctl", "get", "Interface", port,
                                "options:remote_ip").strip().strip('"')
                out[port] = (br, remote)
    return out


def lab_doc(v2_host: str) -> dict[str, Any]:
    def vm(name: str, host: str, nics: list[dict[str, Any]], vcpus: int = 1) -> dict[str, Any]:
        return {"name": name, "host": host, "vcpus": vcpus, "memory_mib": 128, "nics": nics}
    return {"all": {"hosts": dict.fromkeys(HOSTS), "vars": {"lab": {
        "name": "vltwide",
        "bridges": [{"name": "br-vlta"}, {"name": "br-vltb"}],
        "vms": [
            vm("v1", "hv1", [{"bridge": "br-vlta", "vlan": 10, "ip": "10.93.10.1/24"},
                             {"bridge": "br-vltb", "ip": "10.93.50.1/24"}], vcpus=2),
            vm("v2", v2_host, [{"bridge": "br-vlta", "vlan": 10, "ip": "10.93.10.2/24"},
                               {"bridge": "br-vltb", "ip": "10.93.50.2/24"}]),
            vm("v3", "hv3", [{"bridge": "br-vlta", "vlan": 20, "ip": "10.93.10.3/24"}]),
            vm("v4", "hv3", [{"bridge": "br-vlta", "vlan": 10, "ip": "10.93.10.4/24"}]),
        ]}}}}


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three hypervisors and the lab brought up on them by site.yml (host, up, verify)."""
    tmp = tmp_path_factory.mktemp("multihost")
    hosts_file, lab_file = tmp / "hosts.yml", tmp / "lab.yml"
    lab_file.write_text(yaml.safe_dump(lab_doc("hv2")))
    try:
        run(PROVISION, "hosts", "up", "3", "--inventory", str(hosts_file))
        merged = tmp / "verify.json"
        first = playbook("site.yml", lab_file, "-i", str(hosts_file),
                         "-e", f"virtio_lab_report={merged}", "-e", f"virtio_lab_junit={tmp}/v.xml")
        yield {"hosts": hosts_file, "lab": lab_file, "first": first, "merged": merged}
    finally:
        run(PROVISION, "hosts", "down", check=False)


def test_site_brings_the_lab_up_on_three_hosts_and_verifies_it(wide: dict[str, Any]) -> None:
    first = wide["first"]
    assert all(first.recap[h]["failed"] == 0 and first.recap[h]["changed"] > 0 for h in HOSTS)
    verify = first.result("Verify lab")
    assert verify["passed"] is True, verify.get("failed_checks")
    merged = json.loads(wide["merged"].read_text())  # one report, every host's checks in it
    assert merged["passed"] is True and merged["lab"] == "vltwide"
    by_host = {c["target"].split(":", 1)[0] for c in merged["checks"]}
    assert by_host == set(HOSTS)
    across = [c for c in merged["checks"] if c["name"] == "reach" and c["status"] == "pass"
              and c["evidence"].get("payload", 56) > 56]  # full-size pings through tunnels
    assert {c["target"].split(":", 1)[0] for c in across} == set(HOSTS)
    assert {c["target"].split(":", 1)[0] for c in merged["checks"]
            if c["name"] == "ovs.tunnel" and c["status"] == "pass"} == set(HOSTS)
    assert domains("hv1") == {"vltwide-v1"} and domains("hv2") == {"vltwide-v2"}
    assert domains("hv3") == {"vltwide-v3", "vltwide-v4"}
    # no lab object reached this machine's own daemons
    assert not [d for d in run("virsh", "list", "--all", "--name").stdout.split()
                if d.startswith("vltwide")]


def test_each_host_has_a_tunnel_to_each_peer_on_each_shared_bridge(
        wide: dict[str, Any]) -> None:
    underlay = {h: f"192.168.251.{i}" for i, h in enumerate(HOSTS, 1)}
    got = {h: sorted(tunnels(h).values()) for h in HOSTS}
    assert got == {
        "hv1": sorted([("br-vlta", underlay["hv2"]), ("br-vlta", underlay["hv3"]),
                       ("br-vltb", underlay["hv2"])]),
        "hv2": sorted([("br-vlta", underlay["hv1"]), ("br-vlta", underlay["hv3"]),
                       ("br-vltb", underlay["hv1"])]),
        "hv3": sorted([("br-vlta", underlay["hv1"]), ("br-vlta", underlay["hv2"])]),
    }


def test_same_vlan_reaches_across_hosts_and_other_vlans_do_not(wide: dict[str, Any]) -> None:
    assert ping("hv1", "vltwide-v1", "10.93.10.2") == 3  # hv1 -> hv2, VLAN 10
    assert ping("hv1", "vltwide-v1", "10.93.10.4") == 3  # hv1 -> hv3, VLAN 10
    assert ping("hv2", "vltwide-v2", "10.93.50.1") == 3  # br-vltb, hv2 -> hv1
    assert ping("hv1", "vltwide-v1", "10.93.10.3") == 0  # VLAN 20 on hv3: isolated
    assert ping("hv3", "vltwide-v4", "10.93.10.3") == 0  # VLAN 20 on the same host


def test_a_second_run_changes_nothing_on_any_host(wide: dict[str, Any]) -> None:
    again = playbook("up.yml", wide["lab"], "-i", str(wide["hosts"]))
    assert {h: again.changed(h) for h in HOSTS} == dict.fromkeys(HOSTS, 0)


def test_moving_a_vm_moves_it_and_its_tunnels(wide: dict[str, Any]) -> None:
    wide["lab"].write_text(yaml.safe_dump(lab_doc("hv3")))  # v2 moves from hv2 to hv3
    moved = playbook("site.yml", wide["lab"], "-i", str(wide["hosts"]))
    assert moved.result("Verify lab")["passed"] is True
    assert domains("hv2") == set()
    assert domains("hv3") == {"vltwide-v2", "vltwide-v3", "vltwide-v4"}
    assert tunnels("hv2") == {}  # hv2 runs no VM of the lab now: its tunnels are gone
    assert sorted(tunnels("hv1").values()) == [("br-vlta", "192.168.251.3"),
                                               ("br-vltb", "192.168.251.3")]
    assert ping("hv1", "vltwide-v1", "10.93.50.2") == 3  # br-vltb now reaches hv3


def test_down_leaves_nothing_on_any_host(wide: dict[str, Any]) -> None:
    playbook("down.yml", wide["lab"], "-i", str(wide["hosts"]))
    for h in HOSTS:
        assert domains(h) == set()
        assert tunnels(h) == {}
        bridges = set(inside(h, "ovs-vsctl", "list-br").split())
        assert not bridges & {"br-vlta", "br-vltb"}, (h, bridges)
        links = json.loads(inside(h, "ip", "-j", "link"))
        assert not [x["ifname"] for x in links if x["ifname"].startswith("vltwide")]
