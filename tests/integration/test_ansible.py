"""The Ansible collection and playbooks on the real daemons: check, real, check again, real
again; drift made from outside seen in check mode and repaired; down and down again.

Every run is a real `ansible-playbook -i LABFILE playbooks/X.yml` process, as a user runs it.
Results come from the default callback: the recap line per host, and with -v each task's
result as one JSON line. State is checked straight through libvirt, ovs-vsctl and iproute2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest

from .conftest import (
    force_cleanup,
    link,
    ovs_row,
    provision_json,
    unique_name,
    vsctl,
    write_lab,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
BIN = Path(sys.executable).parent
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.M)  # fmt: skip
RESULT = re.compile(r"^(ok|changed|failed|fatal|skipping): \[(\S+)\].*? => (\{.*\})$", re.M)
TASK = re.compile(r"^TASK \[(.*)\] \**$", re.M)


@dataclass
class Run:
    """One ansible-playbook run: exit code, output, recap and each task's result."""

    rc: int
    out: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # task name -> result

    def result(self, prefix: str) -> dict[str, Any]:
        for name, res in self.results.items():
            if name.startswith(prefix):
                return res
        raise AssertionError(f"no task {prefix!r} in:\n{self.out}")

    def changed(self, host: str = "localhost") -> int:
        return self.recap[host]["changed"]


def playbook(name: str, lab_file: Path, *args: str, expect_rc: int | None = 0) -> Run:
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_CALLBACK_FORMAT_PRETTY": "false",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    argv = [str(BIN / "ansible-playbook"), "-v", "-i", str(lab_file), str(PLAYBOOKS / name), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=900,
                          check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    if expect_rc is not None:
        assert proc.returncode == expect_rc, f"{' '.join(argv)} exited {proc.returncode}:\n{out}"
    run = Run(proc.returncode, out)
    for m in RECAP.finditer(proc.stdout):
        run.recap[m[1]] = dict(zip(("ok", "changed", "unreachable", "failed"),
                                   map(int, m.groups()[1:]), strict=True))  # fmt: skip
    # Each result line belongs to the nearest TASK header above it.
    tasks = [(m.start(), m[1]) for m in TASK.finditer(proc.stdout)]
    for m in RESULT.finditer(proc.stdout):
        task = max((t for t in tasks if t[0] < m.start()), default=(0, "?"))[1]
        run.results[task] = {"_status": m[1], **json.loads(m[3])}
    return run


def targets(result: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(c["action"], c["kind"], c["target"]) for c in result["changes"]}


@dataclass
class AnsibleLab:
    name: str
    path: Path
    bridge: str
    domains: tuple[str, ...]
    ports: tuple[str, ...]


@pytest.fixture(scope="module")
def alab(conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[AnsibleLab]:  # fmt: skip
    """A lab of two small VMs (2 vCPUs, 2 queues), nothing of it on the host yet."""
    name = unique_name()
    bridge = f"br-{name}"
    path = write_lab(tmp_path_factory.mktemp("ansible") / f"{name}.yml", {
        "name": name,
        "bridges": [{"name": bridge}],
        "vms": [
            {"name": "vm1", "vcpus": 2, "memory_mib": 256, "nics": [
                {"bridge": bridge, "vlan": 100, "ip": "10.78.0.1/24"}]},
            {"name": "vm2", "vcpus": 2, "memory_mib": 256, "nics": [
                {"bridge": bridge, "vlan": 100, "ip": "10.78.0.2/24"}]},
        ],
    })  # fmt: skip
    try:
        yield AnsibleLab(name, path, bridge, (f"{name}-vm1", f"{name}-vm2"),
                         (f"{name}-vm1-0", f"{name}-vm2-0"))  # fmt: skip
    finally:
        force_cleanup(conn, name, path)


def domain_state(conn: libvirt.virConnect, name: str) -> str | None:
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return None
    return "running" if dom.isActive() else "shut off"


def test_ansible_doc_renders_every_module() -> None:
    for module in ("lab", "verify", "host", "report"):
        argv = [str(BIN / "ansible-doc"), "--playbook-dir", str(PLAYBOOKS),
                f"virtio_lab.lab.{module}"]  # fmt: skip
        proc = subprocess.run(
            argv,
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        for section in ("OPTIONS", "EXAMPLES", "RETURN VALUES"):
            assert section in proc.stdout, f"{module}: no {section}\n{proc.stdout}"


PIDFILES = {"ovsdb-server": "/var/run/openvswitch/ovsdb-server.pid",
            "ovs-vswitchd": "/var/run/openvswitch/ovs-vswitchd.pid",
            "virtlogd": "/var/run/virtlogd.pid", "libvirtd": "/var/run/libvirtd.pid"}  # fmt: skip


def daemon_pids() -> dict[str, str]:
    """The host daemons' pids from their pidfiles (pgrep would also see namespace hosts').
    Under systemd libvirtd and virtlogd are socket-activated and come and go by themselves:
    left out there."""
    activated = ("virtlogd", "libvirtd") if Path("/run/systemd/system").is_dir() else ()
    return {n: Path(f).read_text().strip() for n, f in PIDFILES.items()
            if n not in activated and Path(f).exists()}  # fmt: skip


def test_host_check_mode_reports_without_changing(alab: AnsibleLab) -> None:
    """On a prepared host (`make test` ran `host prepare` and `image build`) check mode has
    nothing to do, says so as the CLI's host plan does, and touches nothing."""
    pids = daemon_pids()
    assert pids, "no daemon pidfile found"
    run = playbook("host.yml", alab.path, "--check")
    res = run.result("Install packages")
    assert res["missing_packages"] == [] and all(res["daemons"].values()), res
    assert res["actions"] == [] and res["changed"] is False and run.changed() == 0, res
    cli = provision_json("host", "prepare", "--check")
    assert cli == {"actions": [], "changed": False, "check": True}
    host_actions = [a for a in res["actions"] if a["kind"] != "build-image"]
    assert host_actions == cli["actions"]
    assert daemon_pids() == pids  # nothing started or restarted
    assert "domain_type" in res["caps"]


def test_check_run_reports_changes_and_touches_nothing(conn: libvirt.virConnect,
                                                       alab: AnsibleLab) -> None:  # fmt: skip
    run = playbook("up.yml", alab.path, "--check", "--diff")
    res = run.result("Converge lab")
    assert res["changed"] is True and run.changed() == 1
    assert res["vms"] == ["vm1", "vm2"]
    assert {("create", "domain", d) for d in alab.domains} <= targets(res)
    assert {("create", "port", p) for p in alab.ports} <= targets(res)
    assert ("create", "bridge", alab.bridge) in targets(res)
    assert f"bridge {alab.bridge}" in run.out  # diff headers, one per changed object
    assert all(domain_state(conn, d) is None for d in alab.domains)
    assert alab.bridge not in vsctl("list-br").split()
    assert all(link(p) is None for p in alab.ports)


def test_real_run_changes(conn: libvirt.virConnect, alab: AnsibleLab) -> None:
    run = playbook("up.yml", alab.path)
    assert run.changed() == 1, run.out
    res = run.result("Converge lab")
    assert res["backend"] in ("vhost-net", "userspace")
    assert all(domain_state(conn, d) == "running" for d in alab.domains)
    assert all(ovs_row("Port", p)["tag"] == 100 for p in alab.ports)


def test_check_run_again_reports_nothing(alab: AnsibleLab) -> None:
    run = playbook("up.yml", alab.path, "--check", "--diff")
    res = run.result("Converge lab")
    assert res["changed"] is False and res["changes"] == [] and run.changed() == 0, run.out


def test_second_real_run_changes_nothing(alab: AnsibleLab) -> None:
    run = playbook("up.yml", alab.path)
    assert run.recap["localhost"]["changed"] == 0, run.out
    assert run.result("Converge lab")["in_sync"] is True


def test_drift_shows_in_check_mode_and_is_repaired(conn: libvirt.virConnect,
                                                   alab: AnsibleLab) -> None:  # fmt: skip
    port, domain = alab.ports[0], alab.domains[1]
    vsctl("set", "Port", port, "tag=999")
    conn.lookupByName(domain).destroy()

    check = playbook("up.yml", alab.path, "--check", "--diff")
    res = check.result("Converge lab")
    assert res["changed"] is True and check.changed() == 1
    by_target = {c["target"]: c for c in res["changes"]}
    assert by_target[port]["action"] == "modify"
    assert by_target[port]["before"]["tag"] == 999 and by_target[port]["after"]["tag"] == 100
    assert by_target[domain]["action"] == "start"
    assert "tag: 999" in check.out and "tag: 100" in check.out  # the diff's before and after
    assert ovs_row("Port", port)["tag"] == 999  # check mode left the drift alone
    assert domain_state(conn, domain) == "shut off"

    repair = playbook("up.yml", alab.path, "--diff")
    assert repair.changed() == 1, repair.out
    assert ovs_row("Port", port)["tag"] == 100
    assert domain_state(conn, domain) == "running"
    again = playbook("up.yml", alab.path, "--check")
    assert again.changed() == 0, again.out


def test_verify_passes_a_healthy_lab_and_fails_a_broken_one(
        alab: AnsibleLab, tmp_path: Path) -> None:  # fmt: skip
    """The healthy lab passes (rc 0, no failed check); a port broken from outside fails the
    task naming the check, and the report file says the same."""
    report_file = tmp_path / "report.json"
    run = playbook("verify.yml", alab.path, "-e", f"virtio_lab_report={report_file}",
                   expect_rc=None)  # fmt: skip
    res = run.result("Verify lab")
    failed = [(c["name"], c["target"], c["detail"]) for c in res["checks"]
              if c["status"] == "fail"]
    assert run.rc == 0 and res["passed"] is True and not failed, failed
    assert res["changed"] is False and res["lab"] == alab.name
    assert run.recap["localhost"]["failed"] == 0
    assert {"domain", "qemu", "tap", "ovs", "guest", "reach", "queues"} <= {
        c["hop"] for c in res["checks"]}
    assert json.loads(report_file.read_text())["passed"] is True

    port = alab.ports[0]
    vsctl("set", "Port", port, "tag=999")
    try:
        broken = playbook("verify.yml", alab.path, "-e", f"virtio_lab_report={report_file}",
                          expect_rc=2)  # fmt: skip
        res = broken.result("Verify lab")
        assert res["passed"] is False and res["exit_code"] == 1
        assert broken.recap["localhost"]["failed"] == 1
        names = {(c["name"], c["target"]) for c in res["failed_checks"]}
        assert ("ovs.port", f"{alab.name}/vm1/0") in names, names
        assert "ovs.port" in res["msg"]
        assert json.loads(report_file.read_text())["passed"] is False
    finally:
        vsctl("set", "Port", port, "tag=100")


def test_bad_spec_fails_the_task_with_the_key_path(tmp_path: Path) -> None:
    path = write_lab(tmp_path / "bad.yml", {"name": unique_name(), "bridges": [{"name": "br-x"}],
                                            "vms": [{"name": "vm1", "vcpu": 2}]})  # fmt: skip
    run = playbook("up.yml", path, "--check", expect_rc=2)
    res = run.result("Converge lab")
    assert res["exit_code"] == 3 and "lab.vms[0].vcpu" in res["msg"], res


def test_vms_placed_on_other_hosts_are_left_out(tmp_path: Path) -> None:
    name = unique_name()
    path = write_lab(tmp_path / f"{name}.yml", {
        "name": name,
        "bridges": [{"name": f"br-{name}"}],
        "vms": [{"name": "vm1", "nics": [{"bridge": f"br-{name}"}]},
                {"name": "vm2", "host": "hv2", "nics": [{"bridge": f"br-{name}"}]}],
    })  # fmt: skip
    res = playbook("up.yml", path, "--check").result("Converge lab")
    assert res["vms"] == ["vm1"]
    assert not any(c["target"].startswith(f"{name}-vm2") for c in res["changes"])


def test_down_removes_the_lab_and_is_idempotent(conn: libvirt.virConnect,
                                                alab: AnsibleLab) -> None:  # fmt: skip
    check = playbook("down.yml", alab.path, "--check", "--diff")
    assert check.changed() == 1
    assert {("delete", "domain", d) for d in alab.domains} <= targets(check.result("Remove lab"))
    assert all(domain_state(conn, d) == "running" for d in alab.domains)

    down = playbook("down.yml", alab.path)
    assert down.changed() == 1, down.out
    assert all(domain_state(conn, d) is None for d in alab.domains)
    assert alab.bridge not in vsctl("list-br").split()
    assert all(link(p) is None for p in alab.ports)
    again = playbook("down.yml", alab.path)
    assert again.changed() == 0, again.out
