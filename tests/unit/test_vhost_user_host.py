"""vhost-user readiness (provision/host/vhost_user.py) and `host prepare --with vhost-user`'s
plan: decided from the probe's evidence alone, so these build the evidence by hand."""

from __future__ import annotations

import dataclasses

import pytest

from provision.cli.parser import build_parser
from provision.errors import HostError, SpecError
from provision.host import qemu_private
from provision.host.plan import DAEMON_ORDER, plan_host
from provision.host.tcg import WRAPPER as TCG_WRAPPER
from provision.host.vhost_user import (
    DPDK_VSWITCHD,
    MEMPOOL_RING,
    PACKAGES,
    VhostUserCaps,
    apt_targets,
    parse_dpdk_version,
    probe_memfd,
)

from .helpers import caps

TREE = "/opt/virtio-lab/qemu-10.0.2"
READY = VhostUserCaps(
    qemu_tree=TREE, qemu_pinned=True, qemu_wrapper=f"{TREE}/bin/qemu-system-x86_64",
    qemu_version="10.0.2", dpdk_vswitchd=str(DPDK_VSWITCHD), dpdk_version="22.11.11",
    mempool_ring=str(MEMPOOL_RING), memfd=True, memfd_reason="memfd shared memory",
)  # fmt: skip
FRESH = VhostUserCaps(
    qemu_tree=TREE, qemu_pinned=False, qemu_wrapper="", qemu_version="", dpdk_vswitchd="",
    dpdk_version="", mempool_ring="", memfd=True, memfd_reason="memfd shared memory",
    missing_packages=PACKAGES,
)  # fmt: skip


def test_a_ready_host_says_what_it_runs_vhost_user_with() -> None:
    assert READY.ready and READY.problems == ()
    assert READY.reason == (f"QEMU 10.0.2 at {TREE}/bin/qemu-system-x86_64, OVS with DPDK "
                            "22.11.11, memfd shared memory")
    data = READY.to_dict()
    assert data["ready"] is True and data["reason"] == READY.reason
    assert data["evidence"]["dpdk_version"] == "22.11.11"
    assert data["evidence"]["missing_packages"] == []


def test_a_fresh_host_names_each_missing_part_and_the_command_that_adds_them() -> None:
    assert not FRESH.ready
    assert [p.split(" (")[0] for p in FRESH.problems] == [
        f"no QEMU 10.0.2 at {TREE} matching its pinned packages",
        "no OVS built with DPDK", "no DPDK ring mempool driver"]
    assert "openvswitch-switch-dpdk" in FRESH.problems[1]
    assert "librte-mempool-ring23" in FRESH.problems[2]
    assert FRESH.reason.endswith("; run `provision host prepare --with vhost-user`")


def test_the_wrong_qemu_behind_the_wrapper_or_a_dpdk_less_build_is_not_ready() -> None:
    wrong = dataclasses.replace(READY, qemu_version="7.2.22", dpdk_version="")
    assert wrong.problems == (
        f"{TREE}/bin/qemu-system-x86_64 --version reports 7.2.22, not 10.0.2",
        f"{DPDK_VSWITCHD} --version names no DPDK release")


def test_without_memfd_prepare_is_no_remedy() -> None:
    no_memfd = dataclasses.replace(READY, memfd=False, memfd_reason="memfd_create fails (x)")
    assert no_memfd.reason == "memfd_create fails (x)"
    both = dataclasses.replace(no_memfd, mempool_ring="")
    assert both.reason.endswith("--with vhost-user`")


def test_the_pinned_qemu_release_is_the_private_trees() -> None:
    assert READY.want_qemu == qemu_private.upstream_version(qemu_private.QEMU_VERSION)


@pytest.mark.parametrize(("text", "version"), [
    ("ovs-vswitchd (Open vSwitch) 3.1.0\nDPDK 22.11.11\n", "22.11.11"),
    ("ovs-vswitchd (Open vSwitch) 3.1.0\n", ""),
    ("built with DPDK 22.11\n", ""),
])  # fmt: skip
def test_the_dpdk_release_comes_from_its_own_line(text: str, version: str) -> None:
    assert parse_dpdk_version(text) == version


def test_the_dpdk_build_is_pinned_to_the_installed_ovs_so_apt_never_upgrades_it() -> None:
    assert apt_targets(PACKAGES, "3.1.0-2+deb12u1") == [
        "openvswitch-switch-dpdk=3.1.0-2+deb12u1", "librte-mempool-ring23"]
    assert apt_targets(PACKAGES, "") == list(PACKAGES)
    assert apt_targets(("librte-mempool-ring23",), "3.1.0") == ["librte-mempool-ring23"]


def test_this_kernel_creates_sealable_memfds() -> None:
    assert probe_memfd() == (True, "memfd shared memory")


def test_host_check_json_carries_the_verdict_and_lab_probes_carry_none() -> None:
    assert caps().to_dict()["vhost_user"] is None  # lab_caps: never probed
    full = dataclasses.replace(caps(), vhost_user=READY).to_dict()
    assert full["vhost_user"] == READY.to_dict()


# ---- the plan --------------------------------------------------------------------------

READY_HOST = dataclasses.replace(caps(), daemons=dict.fromkeys(DAEMON_ORDER, True),
                                 tcg_wrapper=str(TCG_WRAPPER))  # fmt: skip


def test_without_the_opt_in_vhost_user_changes_nothing() -> None:
    assert plan_host(dataclasses.replace(READY_HOST, vhost_user=FRESH)).actions == ()


def test_the_opt_in_installs_with_the_other_packages_and_unpacks_qemu_last() -> None:
    host = dataclasses.replace(READY_HOST, vhost_user=FRESH, missing_packages=("ethtool",),
                               tcg_wrapper="")  # fmt: skip
    plan = plan_host(host, with_vhost_user=True)
    assert [(a.kind, a.target) for a in plan.actions] == [
        ("install", "ethtool"), ("install", "openvswitch-switch-dpdk"),
        ("install", "librte-mempool-ring23"), ("install-file", str(TCG_WRAPPER)),
        ("unpack", TREE)]  # fmt: skip
    assert "ovs-vswitchd stays" in plan.actions[1].reason
    assert "7.2 crashes under TCG" in plan.actions[-1].reason


def test_a_second_prepare_with_vhost_user_ready_has_nothing_to_do() -> None:
    assert plan_host(dataclasses.replace(READY_HOST, vhost_user=READY),
                     with_vhost_user=True).actions == ()  # fmt: skip


def test_no_install_with_vhost_user_packages_missing_is_a_host_error() -> None:
    host = dataclasses.replace(READY_HOST, vhost_user=FRESH)
    with pytest.raises(HostError) as err:
        plan_host(host, install=False, with_vhost_user=True)
    message = str(err.value)
    assert "openvswitch-switch-dpdk and librte-mempool-ring23 and " + TREE in message
    assert "`provision host prepare --with vhost-user`" in message
    assert "apt-get install" not in message  # unpinned, it could upgrade the host's OVS


def test_no_install_never_downloads_the_private_qemu() -> None:
    only_qemu = dataclasses.replace(FRESH, missing_packages=())
    host = dataclasses.replace(READY_HOST, vhost_user=only_qemu)
    with pytest.raises(HostError, match=f"vhost-user labs need {TREE}; run"):
        plan_host(host, install=False, with_vhost_user=True)
    assert [a.kind for a in plan_host(host, with_vhost_user=True).actions] == ["unpack"]


def test_vhost_user_cannot_be_planned_from_a_lab_probe() -> None:
    with pytest.raises(ValueError, match="full probe"):
        plan_host(READY_HOST, with_vhost_user=True)


def test_the_opt_in_is_a_repeatable_flag_with_one_choice() -> None:
    parser = build_parser()
    assert parser.parse_args(["host", "prepare"]).with_ == []
    args = parser.parse_args(["host", "prepare", "--check", "--with", "vhost-user"])
    assert args.with_ == ["vhost-user"]
    with pytest.raises(SpecError, match="--with: invalid choice: 'hugepages'"):
        parser.parse_args(["host", "prepare", "--with", "hugepages"])
