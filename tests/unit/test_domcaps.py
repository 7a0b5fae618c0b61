"""Emulator and machine from libvirt's domain capabilities, over captured XML: Debian 12's
as `virsh domcapabilities` printed it here, and a RHEL 9 layout (hand-written, see its
first comment)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from provision.core import domxml
from provision.core.desired import desired_state
from provision.host.domcaps import choose_machine, parse_domain_caps

from .helpers import IMAGE, caps, lab

DATA = Path(__file__).parent / "data"


def test_debian_runs_qemu_system_x86_64_on_i440fx() -> None:
    dc = parse_domain_caps((DATA / "domcaps-debian12-qemu.xml").read_text())
    assert dc.emulator == "/usr/bin/qemu-system-x86_64"
    assert (dc.domain, dc.arch) == ("qemu", "x86_64")
    assert dc.machines == ("pc-i440fx-7.2",)  # the canonical name of the `pc` alias
    assert dc.machine == "pc-i440fx-7.2"


def test_rhel_runs_qemu_kvm_on_its_first_listed_q35_machine() -> None:
    dc = parse_domain_caps((DATA / "domcaps-rhel9-kvm.xml").read_text())
    assert dc.emulator == "/usr/libexec/qemu-kvm"
    assert dc.domain == "kvm"
    assert dc.machine == "pc-q35-rhel9.4.0"


def test_machine_prefers_the_pc_alias_then_i440fx_then_the_first() -> None:
    assert choose_machine(["pc-q35-7.2", "pc", "pc-i440fx-7.2"]) == "pc"
    assert choose_machine(["pc-q35-7.2", "pc-i440fx-7.2"]) == "pc-i440fx-7.2"
    assert choose_machine(["pc-q35-rhel9.4.0", "pc-q35-rhel9.2.0"]) == "pc-q35-rhel9.4.0"


@pytest.mark.parametrize("xml", [
    "<domainCapabilities><machine>pc</machine></domainCapabilities>",
    "<domainCapabilities><path>/usr/bin/qemu</path></domainCapabilities>",
    "<capabilities/>",
])  # fmt: skip
def test_capabilities_without_emulator_or_machine_are_refused(xml: str) -> None:
    with pytest.raises(ValueError):
        parse_domain_caps(xml)


def test_the_rendered_domain_uses_the_hosts_emulator_and_machine() -> None:
    dc = parse_domain_caps((DATA / "domcaps-rhel9-kvm.xml").read_text())
    host = dataclasses.replace(caps(kvm=True), emulator=dc.emulator, machine=dc.machine)
    xml = desired_state(lab(), host, IMAGE).domains[0].xml
    assert "<emulator>/usr/libexec/qemu-kvm</emulator>" in xml
    assert "machine='pc-q35-rhel9.4.0'" in xml
    assert domxml.domain_facts(xml)["type"] == "kvm"
