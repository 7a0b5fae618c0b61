"""Preparing this host for labs: the changes behind `provision host prepare`.

This module owns everything that changes the host outside a lab: installing the missing
Debian packages, loading the openvswitch and vhost_net kernel modules when the kernel has
them, and starting ovsdb-server, ovs-vswitchd, virtlogd and libvirtd when they are not
running (through systemd when it is PID 1, directly otherwise). It never restarts a running
daemon, so a second run reports no actions. It ends by proving that libvirtd can start a
QEMU domain whose multiqueue virtio-net NIC opens a pre-created multi_queue tap. Asked
``with_vhost_user``, it also installs OVS built with DPDK and unpacks the private QEMU
(`provision.host.vhost_user`, `provision.host.qemu_private`), then proves vhost-user ready.

What to do is decided in `provision.host.plan` (``plan_host``, pure) and only carried out
here. Observation (what is installed, what runs) lives in `provision.host.probe`; waiting
until the daemons answer and the libvirt smoke test in `provision.host.ready`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.errors import HostError, OperationError
from provision.host import qemu_private, vhost_user
from provision.host.daemonstate import DAEMON_PIDFILES, OVS_RUNDIR, OVSDB_SOCK, daemon_running
from provision.host.plan import SYSTEMD_UNITS, HostAction, HostPlan, plan_host
from provision.host.probe import (
    HostCaps,
    domain_caps,
    missing_packages,
    module_loaded,
    probe_host,
    probe_ovs_kernel_datapath,
)
from provision.host.ready import (
    DAEMON_LOGS,
    OVS_LOGDIR,
    check_domain_start,
    wait_for_daemons,
)
from provision.host.tcg import install_wrapper

__all__ = ["PrepareResult", "apply_host_plan", "check_domain_start", "prepare_host",
           "wait_for_daemons"]  # fmt: skip

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


@dataclass
class PrepareResult:
    """What `prepare_host` did: the plan it applied, and the actions it carried out."""

    plan: HostPlan
    # The plan's actions, less a start found unnecessary (a package's install started it).
    actions: list[HostAction] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def to_dict(self) -> dict[str, Any]:
        """`provision host prepare --json`: the check's shape, with what was done."""
        return {**HostPlan(tuple(self.actions)).to_dict(), "check": False}


def prepare_host(
    caps: HostCaps | None = None,
    log: Callable[[str], None] = lambda s: None,
    install: bool = True,
    smoke_test: bool = True,
    with_vhost_user: bool = False,
) -> PrepareResult:
    """Plan (``plan_host``), apply the plan, wait until the daemons answer, and prove libvirtd
    can start a lab-like domain; ``with_vhost_user``, also that vhost-user labs can run.

    `caps` is a full probe (``probe_host()``) made just before; None probes now. With
    `install=False` missing packages are a HostError instead of an apt-get run.
    """
    caps = caps if caps is not None else probe_host(kvm_probe_timeout=0)
    host_plan = plan_host(caps, install, with_vhost_user)
    result = PrepareResult(host_plan, apply_host_plan(host_plan, caps.systemd, log))
    wait_for_daemons()
    emulator = _install_tcg_wrapper(host_plan, result, log) or caps.tcg_wrapper
    _unpack_private_qemu(host_plan, result, log)
    if with_vhost_user:
        _check_vhost_user()
    if smoke_test:
        check_domain_start(emulator)
        log("libvirtd started and destroyed a test domain with a 4-queue tap NIC"
            + (f" run by {emulator}" if emulator else ""))
    return result


def _install_tcg_wrapper(host_plan: HostPlan, result: PrepareResult,
                         log: Callable[[str], None]) -> str:
    """Carry out the plan's install-file of the TCG wrapper now that libvirtd names its QEMU;
    return the wrapper's path ("" when the plan has none)."""
    action = next((a for a in host_plan.actions if a.kind == "install-file"), None)
    if action is None:
        return ""
    emulator = domain_caps("qemu").emulator
    if install_wrapper(emulator):
        result.actions.append(action)
        log(f"installed {action.target} for {emulator}")
    return action.target


def _unpack_private_qemu(host_plan: HostPlan, result: PrepareResult,
                         log: Callable[[str], None]) -> None:
    """Carry out the plan's unpack of the private QEMU (qemu_private.ensure_private_qemu)."""
    action = next((a for a in host_plan.actions if a.kind == "unpack"), None)
    if action is None:
        return
    wrapper, changed = qemu_private.ensure_private_qemu(log=log)
    if changed:
        result.actions.append(action)
    else:
        log(f"{wrapper} is current already")


def _check_vhost_user() -> None:
    """HostError naming what is still missing unless vhost-user labs can run now."""
    caps = vhost_user.probe_vhost_user(missing_packages(vhost_user.PACKAGES))
    if not caps.ready:
        raise HostError(f"vhost-user labs cannot run on this host: {caps.reason}")


def apply_host_plan(
    host_plan: HostPlan, use_systemd: bool, log: Callable[[str], None] = lambda s: None
) -> list[HostAction]:
    """Carry out a host plan in order; return the actions taken. Raises HostError naming the
    daemon and its log when one does not start, OperationError when apt-get or modprobe fail."""
    done: list[HostAction] = []
    installs = [a for a in host_plan.actions if a.kind == "install"]
    if installs:
        _install_packages(tuple(a.target for a in installs), log)
    done += installs
    for action in host_plan.actions:
        if action.kind == "load-module" and not module_loaded(action.target):
            _run(["modprobe", action.target], timeout=60)
            done.append(action)
            log(f"loaded kernel module {action.target}")
        elif action.kind == "start-daemon":
            if daemon_running(action.target):  # e.g. the package's install started it
                log(f"{action.target} is running already")
                continue
            how = _start_daemon(action.target, use_systemd)
            done.append(action)
            log(f"started {action.target} ({how})")
    return done


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
    # The required set with the Recommends, as it was first installed and measured on the
    # development machines: a fresh CI host then gets exactly the tested package set.
    # vhost-user's without them (see vhost_user.PACKAGES), in a run of their own.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]  # wait for another apt run instead of failing
    log("apt-get update")
    _run(["apt-get", *lock, "update"], timeout=900, env=env)
    lean = tuple(p for p in packages if p in vhost_user.PACKAGES)
    for group in (tuple(p for p in packages if p not in lean), lean):
        if not group:
            continue
        argv = ["apt-get", *lock, "install", "-y"]
        if group is lean:  # after the required set: openvswitch-switch is there by now
            argv += ["--no-install-recommends",
                     *vhost_user.apt_targets(group, installed_version("openvswitch-switch"))]
        else:
            argv += group
        log(" ".join(argv))
        _run(argv, timeout=3600, env=env)
        log(f"installed packages: {' '.join(group)}")


def installed_version(package: str) -> str:
    """The version dpkg has installed of `package`, "" when none."""
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Version}", package],
                          capture_output=True, text=True, check=False)  # fmt: skip
    status, _, version = proc.stdout.partition(" ")
    return version.strip() if proc.returncode == 0 and status.startswith("ii") else ""


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
