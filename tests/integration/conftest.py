"""Integration fixtures: a throwaway lab on the real daemons, foreign objects beside it, and
cleanup that runs even when a test fails.

These tests need ovsdb-server, ovs-vswitchd, libvirtd and the embedded guest: `make test`
prepares them through `provision host prepare` and `provision image build`. Observations
here go straight to libvirt, OVSDB (ovs-vsctl) and iproute2, never through virtio-lab's code.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
import pytest
import yaml

PROVISION = str(Path(sys.executable).with_name("provision"))


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def provision(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(PROVISION, *args, check=check)


def provision_json(*args: str, expect: int = 0) -> dict[str, Any]:
    proc = provision(*args, "--json", check=False)
    assert proc.returncode == expect, f"exit {proc.returncode}: {proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def vsctl(*args: str, check: bool = True) -> str:
    return run("ovs-vsctl", "--timeout=10", *args, check=check).stdout.strip()


def ovs_row(table: str, name: str) -> dict[str, Any]:
    """One OVSDB row as plain Python, read with ovs-vsctl's JSON output."""
    data = json.loads(vsctl("--format=json", "list", table, name))
    row = dict(zip(data["headings"], data["data"][0], strict=True))
    return {k: _ovs_value(v) for k, v in row.items()}


def _ovs_value(v: Any) -> Any:
    if isinstance(v, list) and v and v[0] == "set":
        return [_ovs_value(x) for x in v[1]]
    if isinstance(v, list) and v and v[0] == "map":
        return {k: _ovs_value(x) for k, x in v[1]}
    if isinstance(v, list) and v and v[0] in ("uuid", "named-uuid"):
        return v[1]
    return v


def link(name: str) -> dict[str, Any] | None:
    proc = run("ip", "-d", "-j", "link", "show", "dev", name, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def write_lab(path: Path, lab: dict[str, Any]) -> Path:
    doc = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}, "vars": {"lab": lab}}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class Foreign:
    """Objects a user made before the test; the lab must never touch them."""

    bridge: str  # a bridge the lab does not name
    lab_bridge: str  # a bridge the user made and the lab names
    port: str  # a port on lab_bridge
    domain: str  # a domain whose name looks like the lab's
    tap: str  # a tap whose name looks like the lab's


def unique_name() -> str:
    return "vlt" + secrets.token_hex(2)


@pytest.fixture(scope="module")  # per module: test_faults restarts libvirtd
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open("qemu:///system")
    yield c
    c.close()


FOREIGN_DOMAIN_XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os></domain>"""


def make_foreign(conn: libvirt.virConnect, name: str) -> Foreign:
    f = Foreign(bridge=f"br-{name}f", lab_bridge=f"br-{name}u", port=f"{name}-usr",
                domain=f"{name}-other", tap=f"{name}-x-0")
    vsctl("add-br", f.bridge, "--", "set", "Bridge", f.bridge, "datapath_type=netdev")
    vsctl("add-br", f.lab_bridge, "--", "set", "Bridge", f.lab_bridge, "datapath_type=netdev")
    vsctl("add-port", f.lab_bridge, f.port, "--", "set", "Interface", f.port, "type=internal")
    conn.defineXML(FOREIGN_DOMAIN_XML.format(name=f.domain))
    run("ip", "tuntap", "add", "dev", f.tap, "mode", "tap", "multi_queue")
    return f


def remove_foreign(conn: libvirt.virConnect, f: Foreign) -> None:
    vsctl("--if-exists", "del-br", f.bridge, check=False)
    vsctl("--if-exists", "del-br", f.lab_bridge, check=False)
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(f.domain).undefine()
    run("ip", "link", "del", f.tap, check=False)


def assert_foreign_untouched(conn: libvirt.virConnect, f: Foreign) -> None:
    assert {f.bridge, f.lab_bridge} <= set(vsctl("list-br").split())
    assert vsctl("port-to-br", f.port) == f.lab_bridge
    assert f.port in vsctl("list-ports", f.lab_bridge).split()
    assert conn.lookupByName(f.domain).name() == f.domain
    assert link(f.tap) is not None


def force_cleanup(conn: libvirt.virConnect, lab: str, lab_file: Path) -> None:
    """Last resort after a failed test: `provision down`, then anything left by name."""
    provision("down", str(lab_file), check=False)
    for dom in conn.listAllDomains():
        if dom.name().startswith(f"{lab}-vm"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    for br in vsctl("list-br", check=False).split():
        if br == f"br-{lab}":
            vsctl("--if-exists", "del-br", br, check=False)
    with contextlib.suppress(libvirt.libvirtError):  # the pool of a lab with disk VMs
        pool = conn.storagePoolLookupByName(f"virtio-lab-{lab}")
        for vol in pool.listAllVolumes() if pool.isActive() else []:
            vol.delete()
        if pool.isActive():
            pool.destroy()
        pool.undefine()
    run("rm", "-rf", f"/var/lib/virtio-lab/pools/{lab}", check=False)
    for line in run("ip", "-o", "link", "show", "type", "tun", check=False).stdout.splitlines():
        name = line.split(": ")[1].split("@")[0] if ": " in line else ""
        if name.startswith(f"{lab}-"):  # the test's random lab name: nobody else's
            run("ip", "link", "del", name, check=False)


def guest_exec(dom: libvirt.virDomain, path: str, *args: str) -> str:
    """Run a program in the guest through the agent (libvirt's API, not virtio-lab's)."""

    def cmd(execute: str, arguments: dict[str, Any]) -> Any:
        msg = json.dumps({"execute": execute, "arguments": arguments})
        return json.loads(libvirt_qemu.qemuAgentCommand(dom, msg, 10, 0))["return"]

    pid = cmd("guest-exec", {"path": path, "arg": list(args), "capture-output": True})["pid"]
    for _ in range(400):
        status = cmd("guest-exec-status", {"pid": pid})
        if status["exited"]:
            assert status["exitcode"] == 0, status
            return base64.b64decode(status.get("out-data", "")).decode()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not finish")
