"""Preparing this host for labs: the changes behind `provision host prepare`.

This module owns everything that changes the host outside a lab: installing the missing
Debian packages, loading the openvswitch and vhost_net kernel modules when the kernel has
them, and starting ovsdb-server, ovs-vswitchd, virtlogd and libvirtd when they are not
running (through systemd when it is PID 1, directly otherwise). It never restarts a running
daemon, so a second run reports no actions. It ends by proving that libvirtd can start a
QEMU domain whose multiqueue virtio-net NIC opens a pre-created multi_queue tap.

Observation (what is installed, what runs) lives in `provision.host.probe`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from provision.errors import HostError, OperationError
from provision.host.probe import (
    DAEMON_PIDFILES,
    LIBVIRT_SOCK,
    OVS_RUNDIR,
    OVSDB_SOCK,
    VIRTLOGD_SOCK,
    HostCaps,
    daemon_pid,
    daemon_status,
    jsonrpc_call,
    missing_packages,
    module_loadable,
    open_vswitch_row,
    probe_ovs_kernel_datapath,
    systemd_running,
)

__all__ = ["PrepareResult", "check_domain_start", "daemon_status", "prepare_host",
           "wait_for_daemons"]  # fmt: skip

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
OVS_LOGDIR = Path(os.environ.get("OVS_LOGDIR", "/var/log/openvswitch"))
LIBVIRT_URI = "qemu:///system"
KERNEL_MODULES = ("openvswitch", "vhost_net")
# Start order matters: ovs-vswitchd needs ovsdb-server, libvirtd logs through virtlogd.
DAEMON_ORDER = ("ovsdb-server", "ovs-vswitchd", "virtlogd", "libvirtd")
SYSTEMD_UNITS = {
    "ovsdb-server": "ovsdb-server.service",
    "ovs-vswitchd": "ovs-vswitchd.service",
    "virtlogd": "virtlogd.service",
    "libvirtd": "libvirtd.service",
}
DAEMON_LOGS = {
    "ovsdb-server": OVS_LOGDIR / "ovsdb-server.log",
    "ovs-vswitchd": OVS_LOGDIR / "ovs-vswitchd.log",
    "virtlogd": Path("/var/log/libvirt/virtlogd.log"),
    "libvirtd": Path("/var/log/libvirt/libvirtd.log"),
}

PROBE_DOMAIN = "virtio-lab-hostprobe"
PROBE_TAP = "vlhostprobe0"
# A constant document (nothing is interpolated): no disk, no display, one 4-queue virtio NIC
# on a pre-created multi_queue tap, the way labs plug their NICs.
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


@dataclass
class PrepareResult:
    """What `prepare_host` changed."""

    actions: list[str] = field(default_factory=list)  # human-readable; empty = nothing to do


def prepare_host(
    caps: HostCaps | None = None,
    log: Callable[[str], None] = lambda s: None,
    install: bool = True,
    smoke_test: bool = True,
) -> PrepareResult:
    """Install what is missing, start what is not running, and prove a domain can start.

    `caps` saves re-probing the packages; daemons are always observed afresh. With
    `install=False` missing packages are a HostError instead of an apt-get run.
    """
    result = PrepareResult()

    def act(message: str) -> None:
        result.actions.append(message)
        log(message)

    missing = caps.missing_packages if caps is not None else missing_packages()
    if missing:
        if not install:
            raise HostError(
                f"missing Debian packages: {' '.join(missing)}; run "
                f"`apt-get install {' '.join(missing)}` or `provision host prepare`"
            )
        _install_packages(missing, log)
        act(f"installed packages: {' '.join(missing)}")
    for module in KERNEL_MODULES:
        if _load_module(module):
            act(f"loaded kernel module {module}")
    use_systemd = systemd_running()
    running = daemon_status()
    for name in DAEMON_ORDER:
        if not running[name]:
            how = _start_daemon(name, use_systemd)
            act(f"started {name} ({how})")
    wait_for_daemons()
    if smoke_test:
        check_domain_start()
        log("libvirtd started and destroyed a test domain with a 4-queue tap NIC")
    return result


def _run(argv: list[str], timeout: float = 120.0, env: dict[str, str] | None = None) -> str:
    """Run a command; raise OperationError with its last output line when it fails.

    Output goes to a file, not a pipe: daemons that fork would hold a pipe open.
    """
    with tempfile.TemporaryFile(mode="w+") as out:
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, timeout=timeout, start_new_session=True, check=False,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise OperationError(f"`{argv[0]}` not found: {exc.strerror}") from exc
        except subprocess.TimeoutExpired as exc:
            raise OperationError(f"`{' '.join(argv)}` did not finish in {timeout:g}s") from exc
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        last = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise OperationError(f"`{' '.join(argv)}` exited {proc.returncode}: {last}")
    return text


def _install_packages(packages: tuple[str, ...], log: Callable[[str], None]) -> None:
    # With the Recommends, as this set was first installed and measured on the development
    # machines: a fresh CI host then gets exactly the tested package set.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]  # wait for another apt run instead of failing
    log("apt-get update")
    _run(["apt-get", *lock, "update"], timeout=900, env=env)
    log(f"apt-get install {' '.join(packages)}")
    _run(
        ["apt-get", *lock, "install", "-y", *packages],
        timeout=3600, env=env,
    )  # fmt: skip


def _load_module(name: str) -> bool:
    """modprobe a kernel module the kernel has but has not loaded; True if it did."""
    if Path(f"/sys/module/{name}").exists() or not module_loadable(name):
        return False
    _run(["modprobe", name], timeout=60)
    return True


# ---- starting daemons ------------------------------------------------------------------


def _start_daemon(name: str, use_systemd: bool) -> str:
    """Start one daemon; return how it was started."""
    if use_systemd:
        argv = ["systemctl", "start", SYSTEMD_UNITS[name]]
    elif name == "ovsdb-server":
        # ovs-ctl creates /etc/openvswitch/conf.db if needed, upgrades its schema, and
        # records a persistent random system-id in /etc/openvswitch/system-id.conf.
        argv = [OVS_CTL, "--no-ovs-vswitchd", "--system-id=random", "start"]
    elif name == "ovs-vswitchd":
        argv = _ovs_vswitchd_argv()
    else:  # virtlogd, libvirtd: their own --daemon mode writes /var/run/<name>.pid
        argv = [name, "--daemon"]
    try:
        _run(argv, timeout=120)
    except OperationError as exc:
        raise HostError(f"could not start {name}: {exc}; see {DAEMON_LOGS[name]}") from exc
    return " ".join(argv)


def _ovs_vswitchd_argv() -> list[str]:
    """How to start ovs-vswitchd without systemd.

    `ovs-ctl start` first loads the openvswitch module and, on a kernel with loadable modules
    where that fails, refuses to start ovs-vswitchd (after trying `rmmod bridge`). There,
    start ovs-vswitchd the way ovs-ctl would, minus the module: it then serves the userspace
    (netdev) datapath. On kernels without module support at all (like the development
    machines) ovs-ctl skips the module by itself.
    """
    kernel_datapath, _ = probe_ovs_kernel_datapath()
    if kernel_datapath or not Path("/proc/modules").exists():
        return [OVS_CTL, "--no-ovsdb-server", "--system-id=random", "start"]
    return _direct_ovs_vswitchd_argv()


def _direct_ovs_vswitchd_argv() -> list[str]:
    OVS_RUNDIR.mkdir(parents=True, exist_ok=True)
    OVS_LOGDIR.mkdir(parents=True, exist_ok=True)
    return [
        "ovs-vswitchd", f"unix:{OVSDB_SOCK}", "-vconsole:emer", "-vsyslog:err", "-vfile:info",
        "--no-chdir", f"--log-file={DAEMON_LOGS['ovs-vswitchd']}",
        f"--pidfile={DAEMON_PIDFILES['ovs-vswitchd']}", "--detach", "--monitor",
    ]  # fmt: skip


# ---- waiting until daemons answer --------------------------------------------------------


def _ovsdb_problem(remaining: float) -> str | None:
    try:
        dbs = jsonrpc_call(OVSDB_SOCK, "list_dbs", [], timeout=min(remaining, 2.0))
    except (OSError, ValueError) as exc:
        return f"no answer on {OVSDB_SOCK} ({exc})"
    return (
        None if "Open_vSwitch" in (dbs or []) else f"{OVSDB_SOCK} serves no Open_vSwitch database"
    )


def _vswitchd_problem(remaining: float) -> str | None:
    pid = daemon_pid("ovs-vswitchd")
    if pid is None:
        return "no ovs-vswitchd process"
    ctl = OVS_RUNDIR / f"ovs-vswitchd.{pid}.ctl"
    try:
        jsonrpc_call(ctl, "version", [], timeout=min(remaining, 2.0))
        row = open_vswitch_row(["cur_cfg", "next_cfg"], timeout=min(remaining, 2.0))
    except (OSError, ValueError) as exc:
        return f"no answer on {ctl} ({exc})"
    if row["cur_cfg"] != row["next_cfg"]:
        return f"Open_vSwitch cur_cfg {row['cur_cfg']} has not reached next_cfg {row['next_cfg']}"
    return None


def _virtlogd_problem(remaining: float) -> str | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(min(remaining, 2.0))
        try:
            sock.connect(str(VIRTLOGD_SOCK))
        except OSError as exc:
            return f"no listener on {VIRTLOGD_SOCK} ({exc.strerror or exc})"
    return None


def _libvirtd_problem(remaining: float) -> str | None:
    if not LIBVIRT_SOCK.exists():
        return f"{LIBVIRT_SOCK} does not exist"
    # The first connection after a start probes QEMU's capabilities: seconds, not ms.
    argv = ["virsh", "-c", LIBVIRT_URI, "version"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=remaining, check=False)
    except subprocess.TimeoutExpired:
        return f"`{' '.join(argv)}` did not answer"
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return f"`{' '.join(argv)}` failed: {lines[0] if lines else proc.returncode}"
    return None


_PROBLEM_CHECKS: dict[str, Callable[[float], str | None]] = {
    "ovsdb-server": _ovsdb_problem,
    "ovs-vswitchd": _vswitchd_problem,
    "virtlogd": _virtlogd_problem,
    "libvirtd": _libvirtd_problem,
}


def wait_for_daemons(timeout: float = 30.0) -> None:
    """Wait until ovsdb-server, ovs-vswitchd, virtlogd and libvirtd answer; else HostError."""
    deadline = time.monotonic() + timeout
    for name in DAEMON_ORDER:
        while (problem := _PROBLEM_CHECKS[name](max(deadline - time.monotonic(), 0.5))) is not None:
            if time.monotonic() >= deadline:
                raise HostError(f"{name} is not answering: {problem}; {_how_to_fix(name)}")
            time.sleep(0.2)


def _how_to_fix(name: str) -> str:
    if systemd_running():
        return f"check `systemctl status {SYSTEMD_UNITS[name]}`, then `provision host prepare`"
    return f"check {DAEMON_LOGS[name]}, then run `provision host prepare`"


# ---- proving libvirt can run a lab-like domain ---------------------------------------------


def _virsh(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    argv = ["virsh", "-c", LIBVIRT_URI, *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HostError(
            f"libvirtd did not answer `{' '.join(argv)}` in {timeout:g}s; {_how_to_fix('libvirtd')}"
        ) from exc


def _remove_probe_leftovers() -> None:
    if _virsh("domstate", PROBE_DOMAIN).returncode == 0:
        _virsh("destroy", PROBE_DOMAIN)
    if Path(f"/sys/class/net/{PROBE_TAP}").exists():
        subprocess.run(["ip", "link", "delete", PROBE_TAP], capture_output=True, check=False)


def check_domain_start() -> None:
    """Start and destroy a transient TCG domain with a 4-queue NIC on a multi_queue tap.

    Raises HostError with libvirt's message when libvirtd cannot start it. Removes the
    domain and the tap in every case.
    """
    _remove_probe_leftovers()
    try:
        _run(["ip", "tuntap", "add", "dev", PROBE_TAP, "mode", "tap", "multi_queue"])
        with tempfile.NamedTemporaryFile("w", prefix="virtio-lab-", suffix=".xml") as xml:
            xml.write(PROBE_DOMAIN_XML)
            xml.flush()
            created = _virsh("create", xml.name)
        if created.returncode != 0:
            lines = created.stderr.strip().splitlines() or [f"virsh exited {created.returncode}"]
            raise HostError(
                f"libvirtd cannot start a QEMU domain: {lines[-1].removeprefix('error: ')}; see "
                f"/var/log/libvirt/qemu/{PROBE_DOMAIN}.log and {DAEMON_LOGS['libvirtd']}"
            )
        state = _virsh("domstate", PROBE_DOMAIN).stdout.strip()
        if state != "running":
            raise HostError(
                f"libvirtd started test domain {PROBE_DOMAIN} but it is {state or 'gone'}; "
                f"see /var/log/libvirt/qemu/{PROBE_DOMAIN}.log"
            )
    except OperationError as exc:
        raise HostError(
            f"cannot create test tap {PROBE_TAP}: {exc}; is /dev/net/tun there?"
        ) from exc
    finally:
        _remove_probe_leftovers()
