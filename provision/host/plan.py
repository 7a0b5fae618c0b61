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
# command); unpack: fetch pinned packages and unpack them into a private tree (the QEMU of
# provision/host/qemu_private.py, for vhost-user labs only).
HostActionKind = Literal["install", "load-module", "start-daemon", "install-file",
                         "build-image", "unpack"]  # fmt: skip
TCG_WRAPPER_REASON = ("TCG domains run QEMU single-threaded through it: multi-threaded TCG in "
                      "QEMU 7.2 hangs guests that patch their own code at boot")  # fmt: skip
VHOST_USER_PACKAGE_REASON = ("not installed (dpkg); vhost-user labs run OVS built with DPDK in "
                             "a namespace of their own (the host's ovs-vswitchd stays)")
VHOST_USER_QEMU_REASON = ("vhost-user labs run QEMU 10.0.2 from bookworm-backports, unpacked "
                          "here only: Debian 12's 7.2 crashes under TCG on vhost-user")


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


def plan_host(caps: HostCaps, install: bool = True, with_vhost_user: bool = False) -> HostPlan:
    """What preparing this host takes, from a full probe (``probe_host()``): missing packages,
    loadable kernel modules not loaded, daemons not running; with ``with_vhost_user`` also
    what vhost-user labs need (``_vhost_user_actions``).

    With ``install=False`` missing packages are a HostError instead of install actions.
    """
    extra = _vhost_user_actions(caps) if with_vhost_user else []
    if not install:
        _refuse_downloads(caps.missing_packages, extra)
    actions = [HostAction("install", p, "not installed (dpkg)") for p in caps.missing_packages]
    actions += [a for a in extra if a.kind == "install"]
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
    actions += [a for a in extra if a.kind != "install"]
    return HostPlan(tuple(actions))


def _refuse_downloads(missing: tuple[str, ...], extra: list[HostAction]) -> None:
    """``--no-install``: what would need apt-get (packages, the private QEMU's download) is
    a HostError naming the command that does it. The vhost-user packages are named apart:
    a plain `apt-get install` of them would take a newer OVS (restarting the host's
    ovs-vswitchd) and their Recommends; `--with vhost-user` pins and leaves those out."""
    if missing:
        raise HostError(f"missing Debian packages: {' '.join(missing)}; run "
                        f"`apt-get install {' '.join(missing)}` or `provision host prepare`")
    needs = [a.target for a in extra]
    if needs:
        raise HostError(f"vhost-user labs need {' and '.join(needs)}; run `provision host "
                        "prepare --with vhost-user` (it pins OVS with DPDK to the installed "
                        "OVS and downloads the private QEMU)")


def _vhost_user_actions(caps: HostCaps) -> list[HostAction]:
    """The packages of OVS built with DPDK that dpkg lacks, and the private QEMU when its
    tree does not hold its pinned packages (`provision host prepare --with vhost-user`)."""
    if caps.vhost_user is None:
        raise ValueError("planning vhost-user needs a full probe (probe_host)")
    vu = caps.vhost_user
    actions = [HostAction("install", p, VHOST_USER_PACKAGE_REASON) for p in vu.missing_packages]
    if not vu.qemu_pinned:
        actions.append(HostAction("unpack", vu.qemu_tree, VHOST_USER_QEMU_REASON))
    return actions
