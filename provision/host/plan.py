"""The host plan: what `provision host prepare` would install, load and start, as data.

Pure: ``plan_host()`` decides from a ``HostCaps`` alone, so `provision host prepare --check`,
the real run (``prepare_host`` applies this plan) and the Ansible host module's check mode
share one set of decisions. An empty plan is a ready host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from provision.errors import HostError
from provision.host.probe import KERNEL_MODULES, HostCaps
from provision.host.tcg import WRAPPER as TCG_WRAPPER

# Start order matters: ovs-vswitchd needs ovsdb-server, libvirtd logs through virtlogd.
DAEMON_ORDER = ("ovsdb-server", "ovs-vswitchd", "virtlogd", "libvirtd")
SYSTEMD_UNITS = {
    "ovsdb-server": "ovsdb-server.service",
    "ovs-vswitchd": "ovs-vswitchd.service",
    "virtlogd": "virtlogd.service",
    "libvirtd": "libvirtd.service",
}
MODULE_USES = {
    "openvswitch": "the OVS kernel datapath (datapath_type system) needs it",
    "vhost_net": "/dev/vhost-net (the vhost-net virtio backend) needs it",
}

# install: apt-get install a Debian package; load-module: modprobe a kernel module;
# start-daemon: start one of DAEMON_ORDER; install-file: write a file of virtio-lab's own (the
# TCG wrapper of provision/host/tcg.py, once libvirtd can name its QEMU); build-image: build
# a guest image (only the Ansible host module plans this, `provision image build` is its own
# command).
HostActionKind = Literal["install", "load-module", "start-daemon", "install-file",
                         "build-image"]  # fmt: skip
TCG_WRAPPER_REASON = ("TCG domains run QEMU single-threaded through it: multi-threaded TCG in "
                      "QEMU 7.2 hangs guests that patch their own code at boot")  # fmt: skip


@dataclass(frozen=True)
class HostAction:
    """One change `host prepare` makes to the host."""

    kind: HostActionKind
    target: str  # the package, kernel module, daemon or image
    reason: str  # why, in one line

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.kind} {self.target}: {self.reason}"


@dataclass(frozen=True)
class HostPlan:
    """Every change `host prepare` would make, in the order it makes them."""

    actions: tuple[HostAction, ...]

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def to_dict(self) -> dict[str, Any]:
        """`provision host prepare --check --json`."""
        return {"actions": [a.to_dict() for a in self.actions], "changed": self.changed,
                "check": True}  # fmt: skip


def plan_host(caps: HostCaps, install: bool = True) -> HostPlan:
    """What preparing this host takes, from a full probe (``probe_host()``): missing packages,
    loadable kernel modules not loaded, daemons not running.

    With ``install=False`` missing packages are a HostError instead of install actions.
    """
    missing = caps.missing_packages
    if missing and not install:
        raise HostError(
            f"missing Debian packages: {' '.join(missing)}; run "
            f"`apt-get install {' '.join(missing)}` or `provision host prepare`"
        )
    actions = [HostAction("install", p, "not installed (dpkg)") for p in missing]
    actions += [
        HostAction("load-module", m, f"not loaded; {MODULE_USES[m]}")
        for m in KERNEL_MODULES
        if m in caps.loadable_modules
    ]
    how = "`systemctl start {}`" if caps.systemd else "started directly: PID 1 is not systemd"
    actions += [
        HostAction("start-daemon", d, f"not running; {how.format(SYSTEMD_UNITS[d])}")
        for d in DAEMON_ORDER
        if not caps.daemons.get(d, False)
    ]
    if not caps.tcg_wrapper:  # on KVM hosts too: used by TCG domains only (probe.HostCaps)
        actions.append(HostAction("install-file", str(TCG_WRAPPER), TCG_WRAPPER_REASON))
    return HostPlan(tuple(actions))
