"""`provision verify` on a real lab: it passes on a healthy lab, and when one hop is broken
from outside virtio-lab (OVSDB, the guest agent, libvirt) it fails naming that hop, and
passes again once `provision up` has repaired it.

The lab: three 2-vCPU VMs with 2-queue NICs on one bridge; vm1 and vm2 on VLAN 100, vm3 on
VLAN 200, all in one subnet so that VLAN isolation is observable.
"""

from __future__ import annotations

import base64
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
import pytest
from chromium_page import FAIL_RED, Chromium, Png

from .conftest import force_cleanup, provision, run, unique_name, vsctl, write_lab

pytestmark = pytest.mark.integration

@dataclass
class VerifyLab:
    name: str
    path: Path
    bridge: str

    def target(self, vm: str) -> str:
        return f"{self.name}/{vm}/0"

    def port(self, vm: str) -> str:
        return f"{self.name}-{vm}-0"

    def domain(self, vm: str) -> str:
        return f"{self.name}-{vm}"


def lab_doc(name: str, backend: str = "auto") -> dict[str, Any]:
    def vm(n: int, vlan: int) -> dict[str, Any]:
        return {"name": f"vm{n}", "vcpus": 2, "memory_mib": 256, "nics": [
            {"bridge": f"br-{name}", "vlan": vlan, "queues": 2, "ip": f"10.88.0.{n}/24"}]}

    return {"name": name, "backend": backend, "bridges": [{"name": f"br-{name}"}],
            "vms": [vm(1, 100), vm(2, 100), vm(3, 200)]}


@pytest.fixture(scope="module")
def lab(conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory,
        ) -> Iterator[VerifyLab]:
    name = unique_name()
    path = write_lab(tmp_path_factory.mktemp("verify") / f"{name}.yml", lab_doc(name))
    try:
        provision("up", str(path))
        yield VerifyLab(name, path, f"br-{name}")
    finally:
        force_cleanup(conn, name, path)
        run("ip", "link", "del", f"{name}-vm3-0", check=False)


def verify(path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = provision("verify", str(path), "--json", "-", *extra, check=False)
    assert proc.returncode in (0, 1), f"exit {proc.returncode}: {proc.stdout}\n{proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


def statuses(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(c["name"], c["target"]): c["status"] for c in report["checks"]}


def failing(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(c["name"], c["target"]): c["detail"] for c in report["checks"]
            if c["status"] == "fail"}


def assert_healthy(code: int, report: dict[str, Any]) -> None:
    assert not failing(report), json.dumps(report, indent=1)[:4000]
    assert report["passed"] is True
    assert code == 0


def assert_fails_at(code: int, report: dict[str, Any], check: str, target: str,
                    words: str) -> None:
    assert code == 1 and report["passed"] is False
    fails = failing(report)
    assert (check, target) in fails, f"{check} {target} did not fail: {fails}"
    assert words in fails[(check, target)], fails[(check, target)]


def guest_exec(dom: libvirt.virDomain, *argv: str) -> None:
    def cmd(execute: str, arguments: dict[str, Any]) -> Any:
        msg = json.dumps({"execute": execute, "arguments": arguments})
        return json.loads(libvirt_qemu.qemuAgentCommand(dom, msg, 10, 0))["return"]

    pid = cmd("guest-exec", {"path": argv[0], "arg": list(argv[1:]), "capture-output": True})
    for _ in range(200):
        status = cmd("guest-exec-status", {"pid": pid["pid"]})
        if status["exited"]:
            err = base64.b64decode(status.get("err-data", "")).decode()
            assert status["exitcode"] == 0, err
            return
        time.sleep(0.05)
    raise AssertionError(f"{argv} did not finish")


def repair_and_reverify(lab: VerifyLab) -> None:
    provision("up", str(lab.path))
    assert_healthy(*verify(lab.path))


FirstVerify = tuple[int, dict[str, Any], Path, Path]


@pytest.fixture(scope="module")
def first_verify(lab: VerifyLab, tmp_path_factory: pytest.TempPathFactory) -> FirstVerify:
    """One verify of the fresh lab, with --perf, --junit and --html, shared by the tests that
    read it."""
    out = tmp_path_factory.mktemp("first-verify")
    junit, html = out / "verify.xml", out / "report.html"
    code, report = verify(lab.path, "--junit", str(junit), "--html", str(html), "--perf")
    return code, report, junit, html


def html_report(chromium: Chromium, html: Path, report: dict[str, Any]) -> Png:
    """The page ``verify --html`` wrote, as Chromium renders it: one row per check of the
    JSON report with its status, the failing ones linked from the summary. Its screenshot."""
    (html.parent / "report.json").write_text(json.dumps(report, indent=2))  # to look at later
    dom = chromium.dump_dom(html)
    assert [s for _id, s in dom.rows] == [c["status"] for c in report["checks"]]
    fails = [row_id for row_id, status in dom.rows if status == "fail"]
    assert dom.failing_links == [f"#{i}" for i in fails]
    assert dom.active == 0 and dom.topology == "svg"  # the lab's picture, from provision graph
    page = html.read_text()
    picture = page[page.index("<svg", page.index('class="topology')):]
    assert all(f"{report['lab']}-{vm}" in picture for vm in ("vm1", "vm2", "vm3")), picture[:2000]
    height = 1200 + 60 * len(report["checks"]) + 400 * len(fails)  # the whole page
    return chromium.screenshot(html, html.with_suffix(".png"), (1200, height))


def test_verify_passes_on_a_fresh_lab(lab: VerifyLab, first_verify: FirstVerify) -> None:
    code, report, junit, _html = first_verify
    assert_healthy(code, report)
    expected = "vhost-net" if Path("/dev/vhost-net").exists() else "userspace"
    assert report["lab"] == lab.name and report["backend"] == expected
    seen = statuses(report)
    t1, t2, t3 = (lab.target(v) for v in ("vm1", "vm2", "vm3"))
    assert seen[("reach", f"{t1}->{t2}")] == "pass"
    assert seen[("isolation", f"{t1}->{t3}")] == "pass"
    assert seen[("isolation", f"{t2}->{t3}")] == "pass"
    assert seen[("queues", t1)] == seen[("queues", t2)] == "pass"
    assert seen[("queues", t3)] == "skip"  # alone on VLAN 200: nothing to exchange with
    for hop in ("domain.nic", "qemu.netdev", "tap", "ovs.port", "guest.nic"):
        assert {seen[(hop, t)] for t in (t1, t2, t3)} == {"pass"}, hop
    assert all(c["status"] != "fail" for c in report["checks"] if c["name"].startswith("perf"))
    queues = next(c for c in report["checks"] if c["name"] == "queues" and c["target"] == t1)
    assert all(queues["evidence"]["rx_packets"]) and all(queues["evidence"]["tx_packets"])
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and int(suite.get("tests", 0)) == len(report["checks"])


def test_tcp_crosses_the_data_path(lab: VerifyLab, first_verify: FirstVerify) -> None:
    report = first_verify[1]
    target = f"{lab.target('vm1')}->{lab.target('vm2')}"
    assert statuses(report)[("l4.tcp", target)] == "pass", failing(report)


def test_the_html_report_of_a_healthy_lab(lab: VerifyLab, first_verify: FirstVerify,
                                          chromium: Chromium) -> None:
    code, report, _junit, html = first_verify
    assert_healthy(code, report)
    shot = html_report(chromium, html, report)
    assert shot.count_near(FAIL_RED) == 0
    charts = chromium.dump_dom(html).charts  # vm1 and vm2; vm3 is alone on its VLAN
    assert len(charts) == 2 and all(len(bars) == 4 for bars in charts)  # 2 RX + 2 TX queues
    assert all("idle" not in css and height > 0 for bars in charts for css, height in bars)


def test_wrong_vlan_tag_fails_the_ovs_port_and_reachability(
    lab: VerifyLab, chromium: Chromium, tmp_path: Path
) -> None:
    vsctl("set", "Port", lab.port("vm1"), "tag=300")
    html = tmp_path / "report.html"
    code, report = verify(lab.path, "--html", str(html))
    assert_fails_at(code, report, "ovs.port", lab.target("vm1"), "tag is 300, want 100")
    assert ("reach", f"{lab.target('vm1')}->{lab.target('vm2')}") in failing(report)
    shot = html_report(chromium, html, report)  # written although verify failed
    red = shot.bands(FAIL_RED)
    assert len(red) >= 2 and red[0][0] < 100, red  # the summary, then the failing rows
    repair_and_reverify(lab)


def test_a_vlan_leak_fails_isolation_within_its_window(lab: VerifyLab) -> None:
    """vm3's port moved onto VLAN 100: vm1 and vm2 reach it although the lab says they must
    not. The isolation pings listen for the window the reach round trips ground (less than
    the 2 s deadline on a quiet lab), and a leak, whose ARP and echo cross the same path as
    a reach ping's echo, answers within it."""
    vsctl("set", "Port", lab.port("vm3"), "tag=100")
    code, report = verify(lab.path)
    for vm in ("vm1", "vm2"):
        assert_fails_at(code, report, "isolation", f"{lab.target(vm)}->{lab.target('vm3')}",
                        "VLANs leak")
    leak = next(c for c in report["checks"] if c["name"] == "isolation")
    assert leak["evidence"]["received"] > 0 and leak["evidence"]["window_s"] <= 2
    repair_and_reverify(lab)


def test_removed_port_fails_the_ovs_port(lab: VerifyLab) -> None:
    vsctl("del-port", lab.bridge, lab.port("vm2"))
    code, report = verify(lab.path)
    assert_fails_at(code, report, "ovs.port", lab.target("vm2"), "not in OVSDB")
    repair_and_reverify(lab)


def test_lowered_guest_channels_fail_the_guest_nic(lab: VerifyLab,
                                                   conn: libvirt.virConnect) -> None:
    guest_exec(conn.lookupByName(lab.domain("vm1")), "ethtool", "-L", "eth0", "combined", "1")
    code, report = verify(lab.path)
    assert_fails_at(code, report, "guest.nic", lab.target("vm1"),
                    "current combined is 1, want 2")
    assert ("queues", lab.target("vm1")) in failing(report)
    repair_and_reverify(lab)


def test_guest_link_down_fails_the_guest_nic_and_reachability(
    lab: VerifyLab, conn: libvirt.virConnect
) -> None:
    guest_exec(conn.lookupByName(lab.domain("vm2")), "ip", "link", "set", "eth0", "down")
    code, report = verify(lab.path)
    assert_fails_at(code, report, "guest.nic", lab.target("vm2"), "eth0 is down")
    assert ("reach", f"{lab.target('vm1')}->{lab.target('vm2')}") in failing(report)
    repair_and_reverify(lab)


def test_destroyed_vm_fails_the_domain(lab: VerifyLab, conn: libvirt.virConnect) -> None:
    conn.lookupByName(lab.domain("vm3")).destroy()
    code, report = verify(lab.path)
    assert_fails_at(code, report, "domain.running", f"{lab.name}/vm3", "shut off")
    assert ("tap", lab.target("vm3")) in failing(report)  # no queue attached any more
    repair_and_reverify(lab)


@pytest.mark.skipif(Path("/dev/vhost-net").exists(), reason="needs a host without vhost-net")
def test_vhost_net_lab_reports_the_userspace_fallback(lab: VerifyLab, tmp_path: Path) -> None:
    strict = write_lab(tmp_path / f"{lab.name}.yml", lab_doc(lab.name, backend="vhost-net"))
    code, report = verify(strict)
    assert report["backend"] == "userspace" and report["spec_backend"] == "vhost-net"
    assert_fails_at(code, report, "qemu.backend", f"{lab.name}/vm1", "fell back")


def test_a_lab_that_is_not_up_exits_4(tmp_path: Path) -> None:
    path = write_lab(tmp_path / "absent.yml", lab_doc(unique_name()))
    proc = provision("verify", str(path), check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "is not on this host" in proc.stderr and "provision up" in proc.stderr
