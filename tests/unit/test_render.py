"""Rendering: golden domain XML (regenerate with --regen-golden), escaping, backend choice."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from provision.core import domxml
from provision.core.desired import desired_state
from provision.core.spec import parse_lab
from provision.errors import HostError, SpecError

from .helpers import IMAGE, caps, lab, lab_data

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize(
    ("case", "host"),
    [("userspace", caps()), ("vhost-kvm", caps(vhost=True, kvm=True, ovs_kernel=True))],
)
def test_domain_xml_matches_golden(case: str, host: object, regen_golden: bool) -> None:
    want = desired_state(lab(), host, IMAGE)  # type: ignore[arg-type]
    for dom in want.domains:
        path = GOLDEN / f"{case}-{dom.name}.xml"
        if regen_golden:
            path.write_text(dom.xml)
        assert dom.xml == path.read_text(), f"{path} differs; rerun with --regen-golden if meant"


@pytest.mark.skipif(shutil.which("virt-xml-validate") is None, reason="libvirt-clients absent")
def test_golden_xml_passes_libvirt_schema() -> None:
    files = sorted(GOLDEN.glob("*.xml"))
    assert files
    for path in files:
        proc = subprocess.run(["virt-xml-validate", str(path), "domain"],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr + proc.stdout


def test_backend_follows_the_probe() -> None:
    user = domxml.domain_facts(desired_state(lab(), caps(), IMAGE).domains[0].xml)
    assert user["type"] == "qemu"
    assert user["interfaces"][0]["backend"] == "qemu"
    assert user["interfaces"][0]["queues"] == 4
    fast = desired_state(lab(), caps(vhost=True, kvm=True), IMAGE)
    facts = domxml.domain_facts(fast.domains[0].xml)
    assert facts["type"] == "kvm" and facts["interfaces"][0]["backend"] == "vhost"
    assert fast.backend == "vhost-net"


def test_checksum_offload_is_off_only_on_userspace_bridges() -> None:
    netdev = domxml.domain_facts(desired_state(lab(), caps(), IMAGE).domains[0].xml)
    assert netdev["interfaces"][0]["host_csum"] == "off"
    kernel = desired_state(lab(), caps(ovs_kernel=True), IMAGE)
    assert domxml.domain_facts(kernel.domains[0].xml)["interfaces"][0]["host_csum"] is None


def test_vhost_net_demanded_on_a_host_without_it_is_a_host_error() -> None:
    with pytest.raises(HostError, match=r"lab\.backend: vhost-net is not available"):
        desired_state(lab(backend="vhost-net"), caps(), IMAGE)
    with pytest.raises(HostError, match=r"lab.bridges\[0\].datapath_type: system"):
        desired_state(lab(bridges=[{"name": "br-ut", "datapath_type": "system"}]), caps(), IMAGE)


def test_bridge_type_auto_picks_what_the_host_has() -> None:
    assert desired_state(lab(), caps(), IMAGE).bridges[0].datapath_type == "netdev"
    kernel = desired_state(lab(), caps(ovs_kernel=True), IMAGE)
    assert kernel.bridges[0].datapath_type == "system"


def test_queues_default_to_vcpus_and_reach_guest_cmdline() -> None:
    data = lab_data()
    del data["vms"][0]["nics"][0]["queues"]
    dom = desired_state(parse_lab(data), caps(), IMAGE).domains[0]
    facts = domxml.domain_facts(dom.xml)
    assert facts["interfaces"][0]["queues"] == 4
    assert dom.nics[0].queues == 4
    assert f"vlab.nic={dom.nics[0].mac},10.9.0.1/24,4" in facts["cmdline"]


def test_values_are_escaped_not_injected() -> None:
    # Names cannot carry metacharacters (the spec refuses them), so feed the renderer an
    # image path that does: autoescape must keep the XML well-formed and the value intact.
    from dataclasses import replace

    odd = replace(IMAGE, kernel=IMAGE.kernel.parent / "k'<x>&y")
    xml = desired_state(lab(), caps(), odd).domains[0].xml
    assert domxml.domain_facts(xml)["kernel"] == str(odd.kernel)


def test_a_replaced_definition_keeps_the_domain_uuid() -> None:
    from provision.backends.virt import with_uuid

    xml = desired_state(lab(), caps(), IMAGE).domains[0].xml
    kept = with_uuid(xml, "0be56fdb-6e4b-430c-956a-11c7dafd769b")
    assert "<uuid>0be56fdb-6e4b-430c-956a-11c7dafd769b</uuid>" in kept
    assert "<vlab:owner" in kept
    assert domxml.domain_facts(kept) == domxml.domain_facts(xml)


def test_a_command_line_too_long_for_the_kernel_names_the_vm() -> None:
    trunks = [{"vlan": v, "ip": f"10.{v // 250}.{v % 250}.1/24"} for v in range(2, 80)]
    data = lab_data()
    data["vms"][1]["nics"][0]["trunks"] = trunks
    with pytest.raises(SpecError, match=r"^lab\.vms\[1\]\.nics: .*kernel's 2047"):
        desired_state(parse_lab(data), caps(), IMAGE)
