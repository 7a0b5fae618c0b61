"""The host plan (`provision host prepare --check`): decided from HostCaps values alone."""

from __future__ import annotations

import dataclasses

import pytest

from provision.errors import HostError
from provision.host.plan import DAEMON_ORDER, HostAction, plan_host
from provision.host.tcg import WRAPPER as TCG_WRAPPER

from .helpers import caps

ALL_RUNNING = dict.fromkeys(DAEMON_ORDER, True)


def test_a_ready_host_has_nothing_to_do() -> None:
    ready = dataclasses.replace(caps(), daemons=ALL_RUNNING, tcg_wrapper=str(TCG_WRAPPER))
    plan = plan_host(ready)
    assert plan.actions == () and plan.changed is False
    assert plan.to_dict() == {"actions": [], "changed": False, "check": True}


def test_a_tcg_host_without_the_wrapper_installs_it_last() -> None:
    fresh = dataclasses.replace(caps(), daemons={**ALL_RUNNING, "libvirtd": False})
    plan = plan_host(fresh)
    assert [(a.kind, a.target) for a in plan.actions] == [
        ("start-daemon", "libvirtd"), ("install-file", str(TCG_WRAPPER))]
    assert "single-threaded" in plan.actions[-1].reason


def test_a_kvm_host_gets_the_tcg_wrapper_too() -> None:
    """`host prepare` probes no KVM (QEMU may not be installed yet), so `--check` plans the
    wrapper whatever the accelerator, as the real run installs it; KVM domains ignore it."""
    kvm = dataclasses.replace(caps(kvm=True), daemons=ALL_RUNNING)
    assert [a.kind for a in plan_host(kvm).actions] == ["install-file"]
    ready = dataclasses.replace(kvm, tcg_wrapper=str(TCG_WRAPPER))
    assert plan_host(ready).actions == () and ready.domain_emulator == ready.emulator


def test_a_fresh_host_installs_then_loads_then_starts_in_daemon_order() -> None:
    fresh = dataclasses.replace(
        caps(), missing_packages=("qemu-utils", "openvswitch-switch"),
        loadable_modules=("vhost_net",), daemons=dict.fromkeys(DAEMON_ORDER, False),
        tcg_wrapper=str(TCG_WRAPPER),
    )  # fmt: skip
    plan = plan_host(fresh)
    assert [(a.kind, a.target) for a in plan.actions] == [
        ("install", "qemu-utils"), ("install", "openvswitch-switch"),
        ("load-module", "vhost_net"),
        ("start-daemon", "ovsdb-server"), ("start-daemon", "ovs-vswitchd"),
        ("start-daemon", "virtlogd"), ("start-daemon", "libvirtd"),
    ]  # fmt: skip
    assert plan.changed and "/dev/vhost-net" in plan.actions[2].reason
    assert plan.to_dict()["actions"][0] == {
        "kind": "install", "target": "qemu-utils", "reason": "not installed (dpkg)"}


def test_daemon_reasons_say_how_they_would_start() -> None:
    stopped = {**ALL_RUNNING, "libvirtd": False}
    under_systemd = plan_host(dataclasses.replace(caps(), daemons=stopped, systemd=True,
                                                  tcg_wrapper=str(TCG_WRAPPER)))
    assert under_systemd.actions == (
        HostAction("start-daemon", "libvirtd", "not running; `systemctl start libvirtd.service`"),
    )
    direct = plan_host(dataclasses.replace(caps(), daemons=stopped, systemd=False))
    assert "PID 1 is not systemd" in direct.actions[0].reason


def test_missing_packages_without_install_are_a_host_error() -> None:
    missing = dataclasses.replace(caps(), daemons=ALL_RUNNING, missing_packages=("ethtool",))
    with pytest.raises(HostError, match=r"missing Debian packages: ethtool; run `apt-get"):
        plan_host(missing, install=False)
