"""Whether the host's daemons answer, and whether libvirtd can run a lab-like domain.

The last step of `provision host prepare`: ``wait_for_daemons()`` waits until ovsdb-server
serves the Open_vSwitch database, ovs-vswitchd answers on its control socket and has applied
the database, virtlogd listens and libvirtd accepts a connection; ``check_domain_start()``
starts and destroys a transient QEMU domain whose 4-queue NIC opens a pre-created multi_queue
tap. Both speak to the daemons through the clients the labs use (ovsdbapp, python-ovs's unixctl
client, libvirt-python, pyroute2), never through a command-line tool.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import libvirt

from provision.backends import ovsdb_rpc, taps, virt
from provision.backends.ovs import Ovs
from provision.core.desired import DesiredTap
from provision.core.owner import Owner
from provision.errors import HostError, OperationError
from provision.host.daemonstate import (
    LIBVIRT_SOCK,
    OVS_RUNDIR,
    OVSDB_SOCK,
    VIRTLOGD_SOCK,
    daemon_pid,
    systemd_running,
)
from provision.host.plan import DAEMON_ORDER, SYSTEMD_UNITS

T = TypeVar("T")

OVS_LOGDIR = Path(os.environ.get("OVS_LOGDIR", "/var/log/openvswitch"))
DAEMON_LOGS = {
    "ovsdb-server": OVS_LOGDIR / "ovsdb-server.log",
    "ovs-vswitchd": OVS_LOGDIR / "ovs-vswitchd.log",
    "virtlogd": Path("/var/log/libvirt/virtlogd.log"),
    "libvirtd": Path("/var/log/libvirt/libvirtd.log"),
}

PROBE_DOMAIN = "virtio-lab-hostprobe"
PROBE_TAP = "vlhostprobe0"
PROBE_QUEUES = 4
# Longer than any lab name may be (12 characters): no lab can ever own the probe's tap.
PROBE_OWNER = Owner("virtio-lab-hostprobe")
# No disk, no display, one 4-queue virtio NIC on a pre-created multi_queue tap, the way labs
# plug their NICs; `_probe_xml` adds the <emulator> when one is given.
PROBE_DOMAIN_XML = """<domain type='qemu'>
  <name>virtio-lab-hostprobe</name>
  <memory unit='MiB'>64</memory>
  <vcpu>4</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <interface type='ethernet'>
      <target dev='vlhostprobe0' managed='no'/>
      <model type='virtio'/>
      <driver name='qemu' queues='4'/>
    </interface>
  </devices>
</domain>
"""


def how_to_fix(name: str) -> str:
    """Where to look when daemon `name` misbehaves, and what to run then."""
    if systemd_running():
        return f"check `systemctl status {SYSTEMD_UNITS[name]}`, then `provision host prepare`"
    return f"check {DAEMON_LOGS[name]}, then run `provision host prepare`"


def call_with_timeout(fn: Callable[[], T], timeout: float) -> T:
    """``fn()`` in a daemon thread, given up after `timeout` seconds (TimeoutError).

    python-ovs's unixctl client and libvirt.open block without a timeout of their own; a
    daemon that accepts but never answers must not hang `host prepare`.
    """
    box: dict[str, T] = {}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"no answer in {timeout:.1f}s")
    if failure:
        raise failure[0]
    return box["value"]


def unixctl_version(ctl: Path) -> str:
    """ovs-appctl's `version` over python-ovs's unixctl client; OSError when unreachable."""
    from ovs.unixctl.client import UnixctlClient

    error, client = UnixctlClient.create(str(ctl))
    if error:
        raise OSError(error, os.strerror(error))
    try:
        error, reply_error, result = client.transact("version", [])
    finally:
        client.close()
    if error:
        raise OSError(error, os.strerror(error))
    if reply_error:
        raise OSError(f"`version` failed: {reply_error.strip()}")
    return str(result).strip()


def _without_hint(exc: HostError) -> str:
    """The backend's message without its own fix: wait_for_daemons appends a better one."""
    return str(exc).removesuffix("; run `provision host prepare`")


class _Readiness:
    """One check per daemon, each returning None when it answers, else what is wrong. The
    OVSDB connection made for ovsdb-server serves the ovs-vswitchd check too."""

    def __init__(self, ovs: Ovs | None = None) -> None:
        self.ovs = ovs
        self._own_ovs = ovs is None  # ovsdbapp shares one connection per process: a borrowed
        # Ovs stays open, or its owner's next transaction would find the connection gone

    def close(self) -> None:
        if self.ovs is not None and self._own_ovs:
            self.ovs.close()

    def problem(self, name: str, remaining: float) -> str | None:
        check = {
            "ovsdb-server": self.ovsdb_server,
            "ovs-vswitchd": self.ovs_vswitchd,
            "virtlogd": self.virtlogd,
            "libvirtd": self.libvirtd,
        }[name]
        return check(min(remaining, 2.0))

    def ovsdb_server(self, timeout: float) -> str | None:
        if self.ovs is None:
            try:  # fetches the Open_vSwitch schema: fails unless that database is served
                ovs = Ovs(f"unix:{OVSDB_SOCK}", timeout=max(timeout, 1.0))
                ovsdb_rpc.schema(ovs.endpoint, timeout=max(timeout, 1.0))
            except HostError as exc:
                return _without_hint(exc)
            self.ovs = ovs
        return None

    def ovs_vswitchd(self, timeout: float) -> str | None:
        pid = daemon_pid("ovs-vswitchd")
        if pid is None:
            return "no ovs-vswitchd process"
        ctl = OVS_RUNDIR / f"ovs-vswitchd.{pid}.ctl"
        try:
            call_with_timeout(lambda: unixctl_version(ctl), timeout)
        except (OSError, TimeoutError) as exc:
            return f"no answer on {ctl} ({exc})"
        cfg = self.ovs.cfg() if self.ovs is not None else None
        if cfg is None:
            return "the Open_vSwitch table has no row (database not initialised)"
        if cfg[0] != cfg[1]:
            return f"Open_vSwitch cur_cfg {cfg[0]} has not reached next_cfg {cfg[1]}"
        return None

    def virtlogd(self, timeout: float) -> str | None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(str(VIRTLOGD_SOCK))
            except OSError as exc:
                return f"no listener on {VIRTLOGD_SOCK} ({exc.strerror or exc})"
        return None

    def libvirtd(self, timeout: float) -> str | None:
        if not LIBVIRT_SOCK.exists():
            return f"{LIBVIRT_SOCK} does not exist"
        # The first connection after a start probes QEMU's capabilities: seconds, not ms.
        try:
            conn = call_with_timeout(virt.connect, max(timeout, 5.0))
        except TimeoutError as exc:
            return f"libvirtd at {virt.libvirt_uri()} gave {exc}"
        except HostError as exc:
            return _without_hint(exc)
        conn.close()
        return None


def wait_for_daemons(timeout: float = 30.0, names: tuple[str, ...] = DAEMON_ORDER,
                     ovs: Ovs | None = None) -> None:
    """Wait until ``names`` (by default ovsdb-server, ovs-vswitchd, virtlogd and libvirtd)
    answer; else HostError naming the first that does not. ``ovs``: a connection already
    open in this process, to check through instead of a new one."""
    deadline = time.monotonic() + timeout
    checks = _Readiness(ovs)
    try:
        for name in names:
            while (problem := checks.problem(name, max(deadline - time.monotonic(), 0.5))):
                if time.monotonic() >= deadline:
                    raise HostError(f"{name} is not answering: {problem}; {how_to_fix(name)}")
                time.sleep(0.2)
    finally:
        checks.close()


# ---- proving libvirt can run a lab-like domain ---------------------------------------------


def _remove_probe_leftovers(conn: libvirt.virConnect) -> None:
    dom = virt.lookup(conn, PROBE_DOMAIN)
    if dom is not None:
        virt.stop(dom)  # transient: destroying it removes it
    taps.delete_tap(PROBE_TAP)


def check_domain_start(emulator: str = "") -> None:
    """Start and destroy a transient TCG domain with a 4-queue NIC on a multi_queue tap,
    run by `emulator` when given (the TCG wrapper lab domains use), else libvirt's default.

    Raises HostError with libvirt's message when libvirtd cannot start it. Removes the
    domain and the tap in every case.
    """
    conn = virt.connect()
    try:
        _remove_probe_leftovers(conn)
        try:
            taps.ensure_tap(DesiredTap(PROBE_TAP, PROBE_OWNER, PROBE_QUEUES))
        except OperationError as exc:
            raise HostError(f"cannot create test tap {PROBE_TAP}: {exc}; is /dev/net/tun "
                            "there?") from None
        _start_probe_domain(conn, emulator)
    finally:
        try:
            _remove_probe_leftovers(conn)
        finally:
            conn.close()


def _start_probe_domain(conn: libvirt.virConnect, emulator: str) -> None:
    log = f"/var/log/libvirt/qemu/{PROBE_DOMAIN}.log"
    try:
        dom = conn.createXML(_probe_xml(emulator), 0)
    except libvirt.libvirtError as exc:
        raise HostError(
            f"libvirtd cannot start a QEMU domain: {exc.get_error_message()}; see {log} and "
            f"{DAEMON_LOGS['libvirtd']}"
        ) from None
    try:
        state = dom.state()[0]
    except libvirt.libvirtError:
        state = None  # gone already
    if state != libvirt.VIR_DOMAIN_RUNNING:
        raise HostError(f"libvirtd started test domain {PROBE_DOMAIN} but it is "
                        f"{'gone' if state is None else f'in state {state}'}; see {log}")
    if emulator:
        _check_single_threaded(emulator, log)


def _probe_xml(emulator: str) -> str:
    root = ET.fromstring(PROBE_DOMAIN_XML)
    if emulator:
        element = ET.Element("emulator")
        element.text = emulator
        root.find("devices").insert(0, element)  # type: ignore[union-attr]
    return ET.tostring(root, encoding="unicode")


def _check_single_threaded(emulator: str, log: str) -> None:
    """The probe's QEMU, started through the TCG wrapper, runs `-accel tcg,thread=single`:
    HostError when libvirt passed the accelerator some other way and the wrapper did
    nothing."""
    try:
        piddir = Path(os.environ.get("VIRTIO_LAB_QEMU_PIDDIR", "/run/libvirt/qemu"))
        pid = int((piddir / f"{PROBE_DOMAIN}.pid").read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError) as exc:
        raise HostError(f"cannot read the test domain's QEMU command line ({exc}); see {log}"
                        ) from None
    if not any(a.startswith(b"tcg") and b"thread=single" in a for a in argv):
        raise HostError(f"{emulator} started the test domain without -accel tcg,thread=single "
                        f"(libvirt passed the accelerator another way); see {log}")
