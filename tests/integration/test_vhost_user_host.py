"""The host side of vhost-user labs (issue 13), for real: `provision host prepare --with
vhost-user` installs OVS built with DPDK from bookworm and unpacks QEMU 10.0.2 from
bookworm-backports, `host check --json` then says vhost-user labs can run, with evidence
checked here against the tools themselves, the host's ovs-vswitchd is still the one that
runs, and a second prepare takes no action.

On a fresh host the one prepare of this module downloads about 19 MiB (21 packages through
apt, 8 through a private apt state) and takes a minute or two; afterwards it is a no-op.
No VM is booted beyond `host prepare`'s own throwaway domain.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from .conftest import provision_json, run

PACKAGES = ("openvswitch-switch-dpdk", "librte-mempool-ring23")
PLAIN_VSWITCHD = "/usr/lib/openvswitch-switch/ovs-vswitchd"
TREE = "/opt/virtio-lab/qemu-10.0.2"


def vswitchd() -> tuple[int, str]:
    """The running ovs-vswitchd's PID and executable, read from its pidfile and /proc."""
    pid = int(Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text().strip())
    return pid, os.readlink(f"/proc/{pid}/exe")


@pytest.fixture(scope="module")
def prepared() -> dict[str, Any]:
    before = vswitchd()
    result = provision_json("host", "prepare", "--with", "vhost-user")
    return {"before": before, "result": result}


def test_prepare_installs_only_the_dpdk_packages_and_the_private_qemu(
        prepared: dict[str, Any]) -> None:
    done = {(a["kind"], a["target"]) for a in prepared["result"]["actions"]}
    assert done <= {*(("install", p) for p in PACKAGES), ("unpack", TREE)}, done
    status = run("dpkg-query", "-W", "-f", "${Package} ${Status}\n", *PACKAGES).stdout
    assert sorted(status.splitlines()) == sorted(f"{p} install ok installed" for p in PACKAGES)


def test_host_check_says_vhost_user_labs_can_run_with_its_evidence(
        prepared: dict[str, Any]) -> None:
    vhost_user = provision_json("host", "check")["vhost_user"]
    assert vhost_user["ready"] is True, vhost_user["reason"]
    evidence = vhost_user["evidence"]
    assert evidence["qemu_pinned"] is True and evidence["qemu_version"] == "10.0.2"
    assert evidence["qemu_wrapper"] == f"{TREE}/bin/qemu-system-x86_64"
    assert evidence["memfd"] is True and evidence["missing_packages"] == []
    qemu = run(evidence["qemu_wrapper"], "--version").stdout
    assert qemu.startswith("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)")
    manifest = json.loads(Path(TREE, "virtio-lab-qemu.json").read_text())
    assert {p["package"] for p in manifest["packages"]} >= {"qemu-system-x86", "seabios"}
    dpdk = run(evidence["dpdk_vswitchd"], "--version").stdout
    assert f"DPDK {evidence['dpdk_version']}" in dpdk.splitlines()
    assert evidence["dpdk_version"].startswith("22.11.")
    assert Path(evidence["mempool_ring"]).is_file()
    assert vhost_user["reason"].startswith(f"QEMU 10.0.2 at {evidence['qemu_wrapper']}")


def test_the_hosts_ovs_vswitchd_stays_the_one_that_runs(prepared: dict[str, Any]) -> None:
    assert vswitchd() == prepared["before"]
    assert prepared["before"][1] == PLAIN_VSWITCHD
    query = run("update-alternatives", "--query", "ovs-vswitchd").stdout
    assert f"Value: {PLAIN_VSWITCHD}" in query.splitlines()


def test_a_second_prepare_takes_no_action(prepared: dict[str, Any]) -> None:
    check = provision_json("host", "prepare", "--check", "--with", "vhost-user")
    assert check == {"actions": [], "changed": False, "check": True}
    again = provision_json("host", "prepare", "--with", "vhost-user")
    assert again["actions"] == [] and again["changed"] is False
