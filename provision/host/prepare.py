"""Preparing this host for labs: the changes behind `provision host prepare`.

This module owns everything that changes the host outside a lab: installing the missing
Debian packages, loading the openvswitch and vhost_net kernel modules when the kernel has
them, and starting ovsdb-server, ovs-vswitchd, virtlogd and libvirtd when they are not
running (through systemd when it is PID 1, directly otherwise). It never restarts a running
daemon, so a second run reports no actions. It ends by proving that libvirtd can start a
QEMU domain whose multiqueue virtio-net NIC opens a pre-created multi_queue tap.

Observation (what is installed, what runs) lives in `provision.host.probe`; waiting until the
daemons answer and the libvirt smoke test in `provision.host.ready`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from provision.errors import HostError, OperationError
from provision.host.probe import (
    DAEMON_PIDFILES,
    OVS_RUNDIR,
    OVSDB_SOCK,
    HostCaps,
    daemon_status,
    missing_packages,
    module_loadable,
    probe_ovs_kernel_datapath,
    systemd_running,
)
from provision.host.ready import (
    DAEMON_LOGS,
    DAEMON_ORDER,
    OVS_LOGDIR,
    SYSTEMD_UNITS,
    check_domain_start,
    wait_for_daemons,
)

__all__ = ["PrepareResult", "check_domain_start", "daemon_status", "prepare_host",
           "wait_for_daemons"]  # fmt: skip

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
KERNEL_MODULES = ("openvswitch", "vhost_net")


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
