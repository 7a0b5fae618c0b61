"""Whether this host can run vhost-user labs (issue 13), and what makes it so.

This module owns the vhost-user line of `provision host check` (``probe_vhost_user``,
``VhostUserCaps``) and names what `provision host prepare --with vhost-user` adds: the
packages of OVS built with DPDK (``PACKAGES``, from bookworm) and the private QEMU of
`provision.host.qemu_private`.  A vhost-user lab needs three things from the host:

* a QEMU that survives a guest enabling a vhost-user vring under TCG: Debian 12's 7.2
  crashes, the private 10.0.2 (run through its wrapper) does not;
* OVS built with DPDK, whose ``ovs-vswitchd-dpdk`` a lab will run in a namespace of its own,
  never in place of the host's ovs-vswitchd (the package's alternative has priority 50, the
  host's plain build 100, so installing it leaves ``/usr/sbin/ovs-vswitchd`` alone), with
  DPDK's ring mempool driver, the default mempool handler, which is a plugin that ``dpdk``
  only recommends;
* guest memory the switch can map: ``memfd`` (sealable, as QEMU's memory-backend-memfd
  makes it), shared with ``<access mode='shared'/>``; no hugepages.

Only `host check` and `host prepare` probe this (``probe.probe_host``); lab commands
(``probe.lab_caps``) never import it.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.host import qemu_private

# Installed with apt from bookworm, without Recommends: those would add every DPDK NIC
# driver and, through the mlx5 ones, rdma-core, whose postinst starts services and triggers
# udev on every network device.  The ring mempool driver is one of dpdk's Recommends.
PACKAGES: tuple[str, ...] = ("openvswitch-switch-dpdk", "librte-mempool-ring23")
DPDK_VSWITCHD = Path("/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk")
MEMPOOL_RING = Path("/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_mempool_ring.so.23")
PREPARE = "run `provision host prepare --with vhost-user`"


@dataclass(frozen=True)
class VhostUserCaps:
    """What vhost-user labs need of this host, as probed: the evidence and the verdict."""

    qemu_tree: str  # the private QEMU's tree (qemu_private.tree_path())
    qemu_pinned: bool  # the tree holds exactly qemu_private.PACKAGES, its wrapper current
    qemu_wrapper: str  # the wrapper domains would name as <emulator>, "" unless pinned
    qemu_version: str  # what the wrapper's --version reports, "" when it did not say
    dpdk_vswitchd: str  # DPDK_VSWITCHD when present, else ""
    dpdk_version: str  # the DPDK release its --version names, "" when none
    mempool_ring: str  # MEMPOOL_RING when present, else ""
    memfd: bool  # a sealable memfd can be created (guest RAM the switch maps)
    memfd_reason: str
    missing_packages: tuple[str, ...] = ()  # PACKAGES that dpkg does not list as installed

    @property
    def want_qemu(self) -> str:
        """The QEMU release vhost-user labs run (the private tree's pin)."""
        return qemu_private.upstream_version(qemu_private.QEMU_VERSION)

    @property
    def problems(self) -> tuple[str, ...]:
        """Each reason vhost-user labs cannot run here, in one line each; () when they can."""
        found = []
        if not self.qemu_pinned:
            found.append(f"no QEMU {self.want_qemu} at {self.qemu_tree} matching its pinned "
                         "packages (Debian 12's QEMU 7.2 crashes on vhost-user under TCG)")
        elif self.qemu_version != self.want_qemu:
            found.append(f"{self.qemu_wrapper} --version reports "
                         f"{self.qemu_version or 'no version'}, not {self.want_qemu}")
        if not self.dpdk_vswitchd:
            found.append(f"no OVS built with DPDK ({DPDK_VSWITCHD}, package {PACKAGES[0]})")
        elif not self.dpdk_version:
            found.append(f"{self.dpdk_vswitchd} --version names no DPDK release")
        if not self.mempool_ring:
            found.append(f"no DPDK ring mempool driver ({MEMPOOL_RING}, package {PACKAGES[1]})")
        if not self.memfd:
            found.append(self.memfd_reason)
        return tuple(found)

    @property
    def ready(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        """Why `ready` is what it is, in one line."""
        if self.ready:
            return (f"QEMU {self.qemu_version} at {self.qemu_wrapper}, OVS with DPDK "
                    f"{self.dpdk_version}, {self.memfd_reason}")
        fixable = len(self.problems) > (0 if self.memfd else 1)  # prepare cannot add memfd
        return "; ".join(self.problems) + (f"; {PREPARE}" if fixable else "")

    def to_dict(self) -> dict[str, Any]:
        """`host check --json`'s ``vhost_user``: the verdict, its reason and the evidence."""
        evidence = {
            "qemu_tree": self.qemu_tree, "qemu_pinned": self.qemu_pinned,
            "qemu_wrapper": self.qemu_wrapper, "qemu_version": self.qemu_version,
            "dpdk_vswitchd": self.dpdk_vswitchd, "dpdk_version": self.dpdk_version,
            "mempool_ring": self.mempool_ring, "memfd": self.memfd,
            "missing_packages": list(self.missing_packages),
        }  # fmt: skip
        return {"ready": self.ready, "reason": self.reason, "evidence": evidence}


def apt_targets(packages: tuple[str, ...], ovs_version: str) -> list[str]:
    """`apt-get install` arguments for `packages`: the DPDK build pinned to the installed
    openvswitch-switch's version (`ovs_version`, "" when none is installed).  It depends on
    exactly that version, so unpinned, a newer candidate would upgrade the host's OVS, and
    the upgrade restarts its ovs-vswitchd; pinned, apt refuses instead."""
    return [f"{p}={ovs_version}" if p == PACKAGES[0] and ovs_version else p for p in packages]


def parse_dpdk_version(text: str) -> str:
    """'ovs-vswitchd (Open vSwitch) 3.1.0\\nDPDK 22.11.11' -> '22.11.11' ('' when absent)."""
    m = re.search(r"^DPDK ([0-9]+(?:\.[0-9]+)+)", text, re.MULTILINE)
    return m.group(1) if m else ""


def _output(argv: list[str]) -> str:
    """A command's stdout; "" when it cannot run, fails or takes over 10 s."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def probe_memfd() -> tuple[bool, str]:
    """Whether a sealable memfd can be created, as QEMU's memory-backend-memfd creates one."""
    try:
        os.close(os.memfd_create("virtio-lab-probe", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING))
    except (OSError, AttributeError) as exc:
        return False, f"memfd_create fails ({exc}): guest memory cannot be shared by memfd"
    return True, "memfd shared memory"


def probe_vhost_user(missing: tuple[str, ...]) -> VhostUserCaps:
    """Observe what vhost-user labs need; `missing` is the PACKAGES dpkg lacks (the caller
    asks dpkg once for all packages).  Runs two `--version`s, about 50 ms; changes nothing."""
    tree = qemu_private.tree_path()
    pinned = qemu_private.matches_pins(tree)
    wrapper = str(tree / qemu_private.WRAPPER) if pinned else ""
    dpdk = str(DPDK_VSWITCHD) if os.access(DPDK_VSWITCHD, os.X_OK) else ""
    memfd, memfd_reason = probe_memfd()
    return VhostUserCaps(
        qemu_tree=str(tree), qemu_pinned=pinned, qemu_wrapper=wrapper,
        qemu_version=qemu_private.parse_qemu_version(_output([wrapper, "--version"]))
        if wrapper else "",
        dpdk_vswitchd=dpdk,
        dpdk_version=parse_dpdk_version(_output([dpdk, "--version"])) if dpdk else "",
        mempool_ring=str(MEMPOOL_RING) if MEMPOOL_RING.is_file() else "",
        memfd=memfd, memfd_reason=memfd_reason, missing_packages=missing,
    )  # fmt: skip
