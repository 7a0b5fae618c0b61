"""Choosing the virtio backend from HostCaps values: vhost-net needs the device and a KVM
domain (libvirt opens /dev/vhost-net for KVM domains only)."""

from __future__ import annotations

import dataclasses

import pytest

from provision.core.desired import desired_state, resolve_backend
from provision.errors import HostError
from provision.host.probe import HostCaps

from .helpers import IMAGE, caps, lab

NO_KVM = "a test guest under kvm did not finish in 3s"
NO_DEVICE = "/dev/vhost-net does not exist (run `modprobe vhost_net`)"


def _caps(vhost: bool, kvm: bool) -> HostCaps:
    return dataclasses.replace(
        caps(vhost=vhost, kvm=kvm),
        kvm_reason="a test guest ran" if kvm else NO_KVM,
        vhost_reason="/dev/vhost-net opens read-write" if vhost else NO_DEVICE,
    )


def test_vhost_net_device_without_kvm_picks_userspace_and_says_why() -> None:
    host = _caps(vhost=True, kvm=False)
    assert host.vhost_net_usable is False and host.best_backend == "userspace"
    assert host.backend_reason.startswith("vhost-net needs a KVM domain")
    assert NO_KVM in host.backend_reason
    assert resolve_backend(lab(), host) == "userspace"
    assert host.to_dict()["backend_reason"] == host.backend_reason


def test_vhost_net_demanded_without_kvm_is_a_host_error_naming_kvm() -> None:
    with pytest.raises(HostError, match=r"^lab\.backend: vhost-net .*KVM") as err:
        resolve_backend(lab(backend="vhost-net"), _caps(vhost=True, kvm=False))
    assert NO_KVM in str(err.value) and "modprobe" not in str(err.value)
    assert err.value.exit_code == 4


def test_vhost_net_device_and_kvm_pick_vhost_net() -> None:
    host = _caps(vhost=True, kvm=True)
    assert host.vhost_net_usable and host.best_backend == "vhost-net"
    assert "KVM is usable" in host.backend_reason
    assert resolve_backend(lab(), host) == "vhost-net"
    assert resolve_backend(lab(backend="vhost-net"), host) == "vhost-net"
    assert desired_state(lab(backend="vhost-net"), host, IMAGE).domain_type == "kvm"


@pytest.mark.parametrize("kvm", [True, False])
def test_missing_device_picks_userspace_and_demanding_it_says_modprobe(kvm: bool) -> None:
    host = _caps(vhost=False, kvm=kvm)
    assert host.best_backend == "userspace" and host.backend_reason.startswith(NO_DEVICE)
    assert ("would also need KVM" in host.backend_reason) is not kvm
    with pytest.raises(HostError, match=r"^lab\.backend: vhost-net .*modprobe vhost_net"):
        resolve_backend(lab(backend="vhost-net"), host)
