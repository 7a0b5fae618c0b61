"""Faults: `up` killed mid-way, daemons restarted under a running lab or stopped before `up`,
two labs at once, and a second `up` of a lab while one runs.

Every observation goes to libvirt, ovs-vsctl and iproute2 directly. The labs are small
(1- and 2-vCPU guests, 128 MiB) and brought up once per scenario.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from .conftest import (
    PROVISION,
    force_cleanup,
    link,
    provision,
    provision_json,
    run,
    unique_name,
    vsctl,
    write_lab,
)

pytestmark = pytest.mark.integration


def two_vm_lab(name: str) -> dict:
    """vm1: 2 vCPUs and a 2-queue NIC on VLAN 10; vm2: 1 vCPU, one queue, same VLAN."""
    br = f"br-{name}"
    return {"name": name, "bridges": [{"name": br}], "vms": [
        {"name": "vm1", "vcpus": 2, "memory_mib": 128,
         "nics": [{"bridge": br, "vlan": 10, "ip": "10.78.0.1/24"}]},
        {"name": "vm2", "vcpus": 1, "memory_mib": 128,
         "nics": [{"bridge": br, "vlan": 10, "ip": "10.78.0.2/24"}]},
    ]}


def libvirt_conn() -> libvirt.virConnect:
    """A new connection each time: these tests restart libvirtd under their own feet."""
    return libvirt.open("qemu:///system")


def domains(lab: str) -> dict[str, bool]:
    """The lab's domains by name (their names start with `<lab>-`), and whether each runs;
    one removed while we look is left out."""
    found = {}
    for d in libvirt_conn().listAllDomains():
        if d.name().startswith(f"{lab}-"):
            with contextlib.suppress(libvirt.libvirtError):
                found[d.name()] = bool(d.isActive())
    return found


def owned_ports(lab: str) -> list[str]:
    out = vsctl("--format=csv", "--data=bare", "--no-headings", "--columns=name",
                "find", "Port", f"external_ids:virtio-lab-lab={lab}")
    return out.split()


def assert_nothing_left(lab: str) -> None:
    assert domains(lab) == {}
    assert f"br-{lab}" not in vsctl("list-br").split()
    assert owned_ports(lab) == []
    for vm in ("vm1", "vm2"):
        assert link(f"{lab}-{vm}-0") is None


def assert_verify_passes(path: Path) -> None:
    proc = provision("verify", str(path), "--json", "-", check=False)
    report = json.loads(proc.stdout)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert proc.returncode == 0 and report["passed"] is True and not failed, failed


def up_killed_when(path: Path, reached: Callable[[], bool], what: str,
                   meanwhile: Callable[[], None] | None = None) -> None:
    run_killed_when(["up", str(path)], reached, what, meanwhile)


def run_killed_when(args: list[str], reached: Callable[[], bool], what: str,
                    meanwhile: Callable[[], None] | None = None) -> None:
    """Run `provision ARGS` and SIGKILL it the moment ``reached()`` holds (polled every
    20 ms); ``meanwhile`` runs first, while that run still holds the lab."""
    proc = subprocess.Popen([PROVISION, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not reached():
            assert proc.poll() is None, f"{args[0]} ended before {what}: {proc.stderr.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"{args[0]} never reached {what}"
            time.sleep(0.02)
        if meanwhile is not None:
            meanwhile()
        assert proc.poll() is None, f"{args[0]} finished before it could be killed at {what}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def killed_lab(tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[str, Path, list[float]]]:
    """A lab whose `up` was SIGKILLed at four moments in turn, each run starting from what
    the killed one left, and then run once more to the end."""
    name = unique_name()
    path = write_lab(tmp_path_factory.mktemp("faults") / f"{name}.yml", two_vm_lab(name))
    contention: list[float] = []

    def second_up() -> None:  # the same lab, while the killed `up` holds it
        t0 = time.monotonic()
        proc = provision("up", str(path), check=False)
        contention.append(time.monotonic() - t0)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "another `provision up` or `down`" in lines[0], proc.stderr
        assert name in lines[0]

    try:
        # The second `up` starts while the first has a whole lab still to make (~10 s).
        up_killed_when(path, lambda: link(f"{name}-vm1-0") is not None, "the first tap",
                       meanwhile=second_up)
        up_killed_when(path, lambda: f"br-{name}" in vsctl("list-br").split(), "the bridge")
        up_killed_when(path, lambda: f"{name}-vm1" in domains(name), "the first domain")
        up_killed_when(path, lambda: domains(name).get(f"{name}-vm2", False),
                       "both domains running")
        yield name, path, contention
    finally:
        force_cleanup(libvirt_conn(), name, path)


def test_up_after_sigkills_converges_and_verifies(killed_lab: tuple[str, Path, list[float]],
                                                   ) -> None:
    name, path, _ = killed_lab
    before = provision_json("plan", str(path), expect=2)  # the killed runs left work to do
    assert before["changes"], before
    up = provision_json("up", str(path))
    assert up["changed"] is True
    assert domains(name) == {f"{name}-vm1": True, f"{name}-vm2": True}
    assert provision_json("plan", str(path))["in_sync"] is True
    assert_verify_passes(path)


def test_second_up_while_one_runs_fails_fast_naming_the_lock(
        killed_lab: tuple[str, Path, list[float]]) -> None:
    _, _, contention = killed_lab
    # It returned while the first `up` was still running (up_killed_when checks that).
    assert len(contention) == 1


def daemon_stop(name: str) -> None:
    """Stop one daemon the way an operator would, and wait until it is gone."""
    if name in ("ovsdb-server", "ovs-vswitchd"):
        run("ovs-appctl", "-t", name, "exit")
    else:
        pid = int(Path(f"/var/run/{name}.pid").read_text().strip())
        os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if run("pgrep", "-x", name, check=False).returncode != 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} did not stop")


def daemons_start() -> None:
    """What CI does: `provision host prepare` starts whatever is not running."""
    provision("host", "prepare", "--no-install")


@pytest.mark.parametrize("daemon", ["ovs-vswitchd", "ovsdb-server", "libvirtd"])
def test_a_daemon_restarted_under_a_running_lab_leaves_it_in_sync_and_passing(
        killed_lab: tuple[str, Path, list[float]], daemon: str) -> None:
    _, path, _ = killed_lab
    provision_json("up", str(path))  # whatever an earlier test left, the lab is up
    try:
        daemon_stop(daemon)
    finally:
        daemons_start()
    assert provision_json("plan", str(path))["in_sync"] is True
    assert_verify_passes(path)


def test_down_after_the_faults_leaves_nothing(killed_lab: tuple[str, Path, list[float]],
                                             ) -> None:
    name, path, _ = killed_lab
    assert len(domains(name)) == 2
    run_killed_when(["down", str(path)], lambda: len(domains(name)) < 2,
                    "the first domain removed")
    assert provision_json("down", str(path))["changed"] is True
    assert_nothing_left(name)


def test_two_labs_brought_up_at_once_both_come_up(
        tmp_path: Path) -> None:
    names = [unique_name(), unique_name()]
    paths = [write_lab(tmp_path / f"{n}.yml", {
        "name": n, "bridges": [{"name": f"br-{n}"}],
        "vms": [{"name": "vm1", "memory_mib": 128, "nics": [{"bridge": f"br-{n}"}]}]})
        for n in names]
    try:
        procs = [subprocess.Popen([PROVISION, "up", str(p), "--json"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for p in paths]
        results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read())  # type: ignore[union-attr]
                   for p in procs]
        for code, out, err in results:
            assert code == 0, out + err
        for n, p in zip(names, paths, strict=True):
            assert domains(n) == {f"{n}-vm1": True}
            assert provision_json("plan", str(p))["in_sync"] is True
            assert_verify_passes(p)
    finally:
        for n, p in zip(names, paths, strict=True):
            force_cleanup(libvirt_conn(), n, p)
    for n in names:
        assert_nothing_left(n)


@pytest.mark.parametrize("daemon", ["ovsdb-server", "ovs-vswitchd", "virtlogd", "libvirtd"])
def test_up_with_a_daemon_stopped_exits_4_naming_it_and_changes_nothing(
        tmp_path: Path, daemon: str) -> None:
    name = unique_name()
    path = write_lab(tmp_path / f"{name}.yml", two_vm_lab(name))
    daemon_stop(daemon)
    try:
        proc = provision("up", str(path), check=False)
    finally:
        daemons_start()
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and daemon in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert_nothing_left(name)


def test_a_bridge_named_like_a_host_interface_is_refused(tmp_path: Path) -> None:
    name = unique_name()
    nic = f"{name}nic"  # a host interface of the test's own, not an OVS bridge
    lab = two_vm_lab(name)
    lab["bridges"][0]["name"] = nic
    for vm in lab["vms"]:
        vm["nics"][0]["bridge"] = nic
    path = write_lab(tmp_path / f"{name}.yml", lab)
    run("ip", "link", "add", nic, "type", "veth", "peer", "name", f"{name}peer")
    try:
        for command in ("plan", "up"):
            proc = provision(command, str(path), check=False)
            assert proc.returncode == 1, proc.stdout + proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and f"bridge {nic}: a Linux interface" in lines[0], proc.stderr
        assert nic not in vsctl("list-br").split()
        assert link(nic)["linkinfo"]["info_kind"] == "veth"  # untouched: still the test's veth
        assert_nothing_left(name)
    finally:
        run("ip", "link", "del", nic, check=False)
