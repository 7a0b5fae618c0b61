"""`provision hosts`: two namespace hypervisors made through the CLI, checked from outside
(`hosts exec`, ssh, ansible, iproute2, /proc), then removed without a trace.

Every `provision` here runs this checkout's code (`python -m provision.cli` with PYTHONPATH
at the repository), also inside the hypervisors. No VM is booted: a domain is only defined,
to show whose libvirtd sees it. The module refuses to run when hypervisors exist already
(they may be someone's), and removes its own in a finally, failed or not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
STATE = Path("/var/lib/virtio-lab/hypervisors")
TAG = "virtio-lab:hypervisors"
MARKER = "virtio-lab-hypervisor"
ANSIBLE = str(Path(sys.executable).with_name("ansible"))
ANSIBLE_INVENTORY = str(Path(sys.executable).with_name("ansible-inventory"))
DOMAIN_XML = ("<domain type='qemu'><name>vlt-hv1-only</name><memory unit='MiB'>64</memory>"
              "<os><type arch='x86_64'>hvm</type></os></domain>")  # fmt: skip


def run(*argv: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("env", ENV)
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False,
                          timeout=120, **kw)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def provision(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "provision.cli", *args, check=check, cwd="/")


def inside(host: str, *argv: str, check: bool = True) -> str:
    return provision("hosts", "exec", host, "--", *argv, check=check).stdout


def ssh(host: dict[str, Any], *argv: str) -> subprocess.CompletedProcess[str]:
    return run("ssh", "-i", host["ansible_ssh_private_key_file"],
               *host["ansible_ssh_common_args"].split(), "-o", "BatchMode=yes",
               f"root@{host['ansible_host']}", *argv)  # fmt: skip


def inits() -> list[int]:
    """PIDs of processes running a hypervisor init, seen in /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if MARKER.encode() in argv and Path(argv[0].decode()).name != "unshare":
                found.append(int(entry.name))
    return found


def tagged_links() -> list[str]:
    links = json.loads(run("ip", "-j", "-d", "link", "show").stdout)
    return [link["ifname"] for link in links if link.get("ifalias") == TAG]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if STATE.exists() or inits():
        pytest.skip("namespace hypervisors exist already; `provision hosts down` first")
    inventory = tmp_path_factory.mktemp("hosts") / "hosts.yml"
    try:
        proc = provision("hosts", "up", "2", "--inventory", str(inventory), "--json")
        yield {"up": json.loads(proc.stdout), "inventory": inventory,
               "vars": yaml.safe_load(inventory.read_text())["all"]["hosts"]}  # fmt: skip
    finally:
        provision("hosts", "down", check=False)


def test_up_makes_two_hypervisors_and_their_inventory(hosts: dict[str, Any]) -> None:
    up = hosts["up"]
    assert [(h["name"], h["action"]) for h in up["hosts"]] == [("hv1", "created"),
                                                               ("hv2", "created")]
    assert all(h["seconds"] > 0 and "inside.daemons" in h["steps"] for h in up["hosts"])
    assert up["seconds"] < 30
    assert hosts["vars"]["hv2"]["virtio_lab_underlay_ip"] == "192.168.251.2"
    status = json.loads(provision("hosts", "status", "--json").stdout)
    assert [h["name"] for h in status["hypervisors"]] == ["hv1", "hv2"]
    assert all(all(h["daemons"].values()) for h in status["hypervisors"]), status


def test_each_hypervisor_has_its_own_ovs(hosts: dict[str, Any]) -> None:
    inside("hv1", "ovs-vsctl", "add-br", "br-vlt-hv1", "--", "set", "bridge", "br-vlt-hv1",
           "datapath_type=netdev")
    try:
        assert "br-vlt-hv1" in inside("hv1", "ovs-vsctl", "list-br").split()
        assert "br-vlt-hv1" not in inside("hv2", "ovs-vsctl", "list-br").split()
        assert "br-vlt-hv1" not in run("ovs-vsctl", "--timeout=10", "list-br").stdout.split()
        assert "Bridge br-vlt-hv1" in inside("hv1", "ovs-vsctl", "show")
    finally:
        inside("hv1", "ovs-vsctl", "--if-exists", "del-br", "br-vlt-hv1")


def test_each_hypervisor_has_its_own_libvirtd(hosts: dict[str, Any]) -> None:
    uri = "qemu:///system"
    assert "QEMU" in inside("hv1", "virsh", "-c", uri, "version")
    inside("hv1", "sh", "-c", f'echo "{DOMAIN_XML}" > /run/vlt.xml && '
           f"virsh -c {uri} define /run/vlt.xml")  # only defined, never started
    try:
        assert "vlt-hv1-only" in inside("hv1", "virsh", "-c", uri, "list", "--all", "--name")
        assert "vlt-hv1-only" not in inside("hv2", "virsh", "-c", uri, "list", "--all", "--name")
        assert "vlt-hv1-only" not in run("virsh", "-c", uri, "list", "--all", "--name").stdout
        assert not Path("/etc/libvirt/qemu/vlt-hv1-only.xml").exists()
        assert not Path("/run/vlt.xml").exists()  # /run is private too
    finally:
        inside("hv1", "virsh", "-c", uri, "undefine", "vlt-hv1-only", check=False)


def test_exec_passes_the_exit_code_through(hosts: dict[str, Any]) -> None:
    assert provision("hosts", "exec", "hv2", "--", "sh", "-c", "exit 7",
                     check=False).returncode == 7
    assert inside("hv2", "hostname").strip() == "hv2"
    assert provision("hosts", "exec", "hv9", "--", "true", check=False).returncode == 3


def test_ssh_reaches_each_hypervisor_with_the_generated_key(hosts: dict[str, Any]) -> None:
    for name, host in hosts["vars"].items():
        assert ssh(host, "hostname").stdout.strip() == name


def test_the_underlay_joins_the_hypervisors(hosts: dict[str, Any]) -> None:
    peer = hosts["vars"]["hv2"]["virtio_lab_underlay_ip"]
    assert "2 packets received" in inside("hv1", "busybox", "ping", "-c", "2", "-W", "2", peer)
    addresses = inside("hv1", "ip", "-br", "addr", "show", "underlay0")
    assert hosts["vars"]["hv1"]["virtio_lab_underlay_ip"] + "/24" in addresses


def test_ansible_reaches_every_hypervisor(hosts: dict[str, Any], tmp_path: Path) -> None:
    # No ControlPersist master may outlive the test (and its hosts).
    env = {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no", "ANSIBLE_LOCAL_TEMP": str(tmp_path)}
    proc = run(ANSIBLE, "-i", str(hosts["inventory"]), "all", "-m", "ping", "-o",
               env={**ENV, **env})  # fmt: skip
    assert proc.stdout.count("SUCCESS") == 2, proc.stdout
    lab = tmp_path / "lab.yml"  # a lab file naming the hypervisors combines with the inventory
    lab.write_text(yaml.safe_dump({"all": {"hosts": {"hv1": {}, "hv2": {}},
                                           "vars": {"lab": {"name": "wide"}}}}))
    merged = json.loads(run(ANSIBLE_INVENTORY, "-i", str(hosts["inventory"]), "-i", str(lab),
                            "--host", "hv2").stdout)  # fmt: skip
    assert merged["ansible_host"] == "192.168.250.2" and merged["lab"]["name"] == "wide"


@pytest.mark.skipif(not Path("/var/cache/virtio-lab/images/tiny").exists(),
                    reason="the embedded guest is not built (`provision image build`)")
def test_a_lab_across_the_hypervisors_plans_over_ssh(hosts: dict[str, Any],
                                                     tmp_path: Path) -> None:
    """`ansible-playbook -i HOSTS -i LAB up.yml --check`: each hypervisor plans its part of
    the lab through its own libvirtd and OVS, and nothing is made (no VM boots)."""
    lab = tmp_path / "wide.yml"
    lab.write_text(yaml.safe_dump({"all": {"hosts": {"hv1": {}, "hv2": {}}, "vars": {"lab": {
        "name": "vltwide", "bridges": [{"name": "br-vltwide"}],
        "vms": [{"name": f"vm{k}", "host": f"hv{k}", "nics": [{"bridge": "br-vltwide"}]}
                for k in (1, 2)]}}}}))  # fmt: skip
    proc = run(str(Path(sys.executable).with_name("ansible-playbook")), "-i",
               str(hosts["inventory"]), "-i", str(lab), str(REPO / "playbooks" / "up.yml"),
               "--check", env={**ENV, "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",
                               "ANSIBLE_LOCAL_TEMP": str(tmp_path)})  # fmt: skip
    # tap, bridge, port, the tunnel to the other hypervisor, domain
    assert "lab vltwide on hv1: 5 change(s) planned, VMs vm1," in proc.stdout, proc.stdout
    assert "lab vltwide on hv2: 5 change(s) planned, VMs vm2," in proc.stdout, proc.stdout
    for name in ("hv1", "hv2"):
        assert inside(name, "ovs-vsctl", "list-br").strip() == ""
        domains = inside(name, "virsh", "-c", "qemu:///system", "list", "--all", "--name")
        assert domains.strip() == ""


def test_up_repairs_a_lost_link_and_a_stopped_daemon(hosts: dict[str, Any]) -> None:
    run("ip", "link", "del", "vlhv1-underlay")
    inside("hv2", "sh", "-c", "kill $(cat /run/sshd.pid)")
    again = json.loads(provision("hosts", "up", "2", "--inventory", str(hosts["inventory"]),
                                 "--json").stdout)  # fmt: skip
    assert [(h["action"], h["log"]) for h in again["hosts"]] == [
        ("repaired", ["replaced its veths"]), ("repaired", ["started sshd"])]
    assert "1 packets received" in inside("hv1", "busybox", "ping", "-c", "1", "-W", "2",
                                          hosts["vars"]["hv2"]["virtio_lab_underlay_ip"])
    assert ssh(hosts["vars"]["hv2"], "hostname").stdout.strip() == "hv2"


def test_a_second_up_changes_nothing(hosts: dict[str, Any]) -> None:
    again = json.loads(provision("hosts", "up", "2", "--inventory", str(hosts["inventory"]),
                                 "--json").stdout)  # fmt: skip
    assert not again["changed"]
    assert [h["action"] for h in again["hosts"]] == ["kept", "kept"]


def test_down_leaves_nothing_and_a_second_down_is_a_no_op(hosts: dict[str, Any]) -> None:
    down = json.loads(provision("hosts", "down", "--json").stdout)
    assert down["changed"] and down["hosts"] == ["hv1", "hv2"]
    assert inits() == []
    assert tagged_links() == []
    assert "vlhv" not in run("ip", "-br", "link").stdout
    assert not STATE.exists()
    assert "virtio-lab" not in Path("/proc/self/mountinfo").read_text()
    again = provision("hosts", "down")
    assert "nothing to remove" in again.stdout
    assert json.loads(provision("hosts", "down", "--json").stdout)["changed"] is False
