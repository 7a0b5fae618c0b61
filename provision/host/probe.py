"""What this host can do: the read-only host probe behind `provision host check`.

This module owns `HostCaps` and every observation that fills it: whether KVM can really run
a guest (`provision.host.kvm` boots one to decide), whether /dev/vhost-net opens, whether
the OVS kernel datapath exists, which Debian packages are missing, which daemons run, and
the component versions. It changes nothing on the host; preparing the host is
`provision.host.prepare`. It talks to ovsdb-server through the lab's own OVSDB client
(`provision.backends.ovs`) and to libvirtd through libvirt-python.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from provision.errors import HostError
from provision.host.daemonstate import OVSDB_SOCK, daemon_status, systemd_running
from provision.host.domcaps import DomainCaps, parse_domain_caps
from provision.host.kvm import kvm_probe_cached
from provision.host.tcg import installed_wrapper

if TYPE_CHECKING:
    import libvirt

    from provision.host.vhost_user import VhostUserCaps

REQUIRED_PACKAGES: tuple[str, ...] = (
    "qemu-system-x86", "qemu-utils", "libvirt-daemon-system", "libvirt-clients", "libvirt-dev",
    "pkg-config", "openvswitch-switch", "linux-image-amd64", "busybox-static",
    "qemu-guest-agent", "ethtool", "iperf3", "iproute2", "libxml2-utils",
    "openssh-server",  # sshd of the namespace hypervisors (`provision hosts`)
    "mmdebstrap", "debian-archive-keyring", "e2fsprogs", "grub-pc-bin",  # image build debian
    "graphviz",  # dot, which lays out `provision graph`
)  # fmt: skip

# Kernel modules `host prepare` loads when the kernel has them but has not loaded them.
KERNEL_MODULES: tuple[str, ...] = ("openvswitch", "vhost_net")



@dataclass(frozen=True)
class HostCaps:
    """The capabilities of this host, as probed: the input for choosing the virtio backend
    and the OVS datapath."""

    kvm_usable: bool  # a test guest ran to completion under -accel kvm in time
    kvm_reason: str
    vhost_net: bool  # /dev/vhost-net exists and opens read-write
    vhost_reason: str
    ovs_kernel_datapath: bool  # OVS datapath_type "system" can work (module loaded or loadable)
    ovs_reason: str
    ovs_datapath_types: tuple[str, ...]  # Open_vSwitch.datapath_types, () if OVSDB unreachable
    emulator: str  # <emulator> of lab domains: libvirt's domain capabilities <path>, "" unknown
    machine: str  # <type machine=...> of lab domains, from those capabilities, "" unknown
    versions: dict[str, str] = field(default_factory=dict)  # libvirt, qemu, ovs, kernel, ...
    missing_packages: tuple[str, ...] = ()  # REQUIRED_PACKAGES not installed
    daemons: dict[str, bool] = field(default_factory=dict)  # daemon name -> running
    systemd: bool = False  # PID 1 is systemd
    loadable_modules: tuple[str, ...] = ()  # KERNEL_MODULES not loaded that modprobe can load
    tcg_wrapper: str = ""  # provision/host/tcg.py's wrapper when installed for `emulator`
    # (on every host: `host prepare` cannot know a fresh host's KVM before QEMU is there;
    # only TCG domains run through it)
    vhost_user: VhostUserCaps | None = None  # vhost-user labs' needs; full probes only

    @property
    def vhost_net_usable(self) -> bool:
        """Whether lab NICs can get vhost-net: libvirt opens /dev/vhost-net for KVM domains
        only (qemuInterfaceOpenVhostNet), so a TCG domain runs userspace virtio whatever its
        XML asks; the device alone is not enough."""
        return self.vhost_net and self.kvm_usable

    @property
    def best_backend(self) -> str:
        """The virtio-net backend `backend: auto` picks."""
        return "vhost-net" if self.vhost_net_usable else "userspace"

    @property
    def backend_reason(self) -> str:
        """Why `best_backend` is what it is, in one line."""
        if not self.vhost_net:
            also = "" if self.kvm_usable else "; vhost-net would also need KVM, not usable here"
            return self.vhost_reason + also
        if not self.kvm_usable:
            return (
                "vhost-net needs a KVM domain (libvirt opens /dev/vhost-net for KVM domains "
                f"only) and KVM is not usable: {self.kvm_reason}"
            )
        return f"{self.vhost_reason} and KVM is usable"

    @property
    def best_ovs_datapath_type(self) -> str:
        """The OVS bridge datapath_type `auto` picks."""
        return "system" if self.ovs_kernel_datapath else "netdev"

    @property
    def domain_type(self) -> str:
        """The libvirt <domain type=...> to render."""
        return "kvm" if self.kvm_usable else "qemu"

    @property
    def domain_emulator(self) -> str:
        """The <emulator> of lab domains: for TCG domains the single-threaded wrapper when it
        is installed (provision/host/tcg.py), else libvirt's QEMU."""
        wrapped = self.domain_type == "qemu" and self.tcg_wrapper
        return self.tcg_wrapper if wrapped else self.emulator

    @property
    def accel(self) -> str:
        """How lab domains execute, for reports: kvm, or TCG with its thread mode."""
        if self.domain_type == "kvm":
            return "kvm"
        return "tcg single-threaded" if self.tcg_wrapper else "tcg multi-threaded"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the derived choices included."""
        data = asdict(self)
        for key in ("ovs_datapath_types", "missing_packages", "loadable_modules"):
            data[key] = list(data[key])
        data["vhost_net_usable"] = self.vhost_net_usable
        data["best_backend"] = self.best_backend
        data["backend_reason"] = self.backend_reason
        data["best_ovs_datapath_type"] = self.best_ovs_datapath_type
        data["domain_type"] = self.domain_type
        data["domain_emulator"] = self.domain_emulator
        data["accel"] = self.accel
        data["vhost_user"] = self.vhost_user.to_dict() if self.vhost_user else None
        return data


def probe_host(kvm_probe_timeout: float = 3.0, refresh: bool = True) -> HostCaps:
    """Observe this host; a kvm_probe_timeout of 0 skips the KVM boot probe (kvm_usable False).

    Runs the KVM probe afresh and records its answer for ``lab_caps()``; ``refresh=False``
    reuses the recorded answer, as lab commands do. Never fails for a daemon that is down: it
    reports it (libvirtd down leaves emulator and machine "").
    """
    if kvm_probe_timeout > 0:
        kvm_usable, kvm_reason = kvm_probe_cached(kvm_probe_timeout, refresh=refresh)
    else:
        kvm_usable, kvm_reason = False, "KVM probe skipped"
    try:
        dcaps: DomainCaps | None = domain_caps("kvm" if kvm_usable else "qemu")
    except HostError:
        dcaps = None
    return _caps(kvm_usable, kvm_reason, dcaps, full=True)


def lab_caps(kvm_probe_timeout: float = 3.0, conn: libvirt.virConnect | None = None) -> HostCaps:
    """What lab commands need (accelerator, vhost-net, OVS datapath, emulator and machine),
    fast enough for a no-op `up`: the KVM probe's answer is reused while the boot, /dev/kvm
    and QEMU are unchanged; versions, packages and daemons are left out.

    `conn` is an open libvirt connection to ask; None opens one. HostError (exit 4) when
    libvirtd does not answer or has no QEMU for the domain type.
    """
    kvm_usable, kvm_reason = kvm_probe_cached(kvm_probe_timeout)
    dcaps = domain_caps("kvm" if kvm_usable else "qemu", conn)
    return _caps(kvm_usable, kvm_reason, dcaps, full=False)


def _caps(kvm_usable: bool, kvm_reason: str, dcaps: DomainCaps | None, full: bool) -> HostCaps:
    vhost, vhost_reason = probe_vhost_net()
    ovs_kernel, ovs_reason = probe_ovs_kernel_datapath()
    return HostCaps(
        kvm_usable=kvm_usable,
        kvm_reason=kvm_reason,
        vhost_net=vhost,
        vhost_reason=vhost_reason,
        ovs_kernel_datapath=ovs_kernel,
        ovs_reason=ovs_reason,
        ovs_datapath_types=ovs_datapath_types(),
        emulator=dcaps.emulator if dcaps else "",
        machine=dcaps.machine if dcaps else "",
        versions=component_versions() if full else {},
        missing_packages=missing_packages() if full else (),
        daemons=daemon_status() if full else {},
        systemd=systemd_running(),
        loadable_modules=loadable_modules() if full else (),
        tcg_wrapper=installed_wrapper(dcaps.emulator) if dcaps else "",
        vhost_user=_vhost_user() if full else None,
    )


def _vhost_user() -> VhostUserCaps:
    from provision.host import vhost_user  # host check and prepare only, never lab commands

    return vhost_user.probe_vhost_user(missing_packages(vhost_user.PACKAGES))


def domain_caps(virttype: str, conn: libvirt.virConnect | None = None) -> DomainCaps:
    """libvirt's domain capabilities for x86_64 guests of `virttype` (kvm | qemu): the
    emulator and machine lab domains get. HostError naming libvirtd when it cannot say."""
    import libvirt

    from provision.backends import virt  # imports core modules that import this one

    own = conn is None
    conn = virt.connect() if conn is None else conn  # HostError names libvirtd and the fix
    try:
        xml = conn.getDomainCapabilities(None, "x86_64", None, virttype)
    except libvirt.libvirtError as exc:
        raise HostError(
            f"libvirtd has no x86_64 QEMU for domain type {virttype} "
            f"({exc.get_error_message()}); run `provision host prepare` (package qemu-system-x86)"
        ) from None
    finally:
        if own:
            conn.close()
    try:
        return parse_domain_caps(xml)
    except (ValueError, ET.ParseError) as exc:
        raise HostError(
            f"libvirtd's domain capabilities for {virttype} are unusable ({exc}); "
            "run `provision host prepare` (package qemu-system-x86)"
        ) from None


# ---- vhost-net and the OVS kernel datapath ---------------------------------------------


def probe_vhost_net() -> tuple[bool, str]:
    """Whether /dev/vhost-net exists and opens read-write (what QEMU needs for vhost=on)."""
    path = "/dev/vhost-net"
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except FileNotFoundError:
        loadable = module_loadable("vhost_net")
        hint = "run `modprobe vhost_net`" if loadable else "this kernel has no vhost_net module"
        return False, f"{path} does not exist ({hint}); QEMU's userspace virtio backend is used"
    except OSError as exc:
        return False, f"{path} cannot be opened read-write: {exc.strerror}"
    return True, f"{path} opens read-write"


def probe_ovs_kernel_datapath() -> tuple[bool, str]:
    """Whether OVS bridges with datapath_type 'system' can work on this kernel."""
    if genl_family_exists("ovs_datapath"):
        return True, "openvswitch kernel module loaded (genetlink family ovs_datapath present)"
    if module_loadable("openvswitch"):
        return True, "openvswitch kernel module loadable; `provision host prepare` loads it"
    return False, (
        "this kernel has no openvswitch module (no genetlink family ovs_datapath): "
        "bridges use the userspace datapath_type netdev"
    )


def module_loaded(name: str) -> bool:
    """Whether a kernel module is loaded (or built in with parameters: /sys/module/NAME)."""
    return Path(f"/sys/module/{name}").exists()


def loadable_modules(names: tuple[str, ...] = KERNEL_MODULES) -> tuple[str, ...]:
    """The modules among `names` that are not loaded but `modprobe` could load."""
    return tuple(n for n in names if not module_loaded(n) and module_loadable(n))


def module_loadable(name: str) -> bool:
    """Whether `modprobe name` would succeed (False on kernels without loadable modules)."""
    if not Path("/proc/modules").exists() or shutil.which("modprobe") is None:
        return False
    result = subprocess.run(
        ["modprobe", "--dry-run", "--quiet", name], capture_output=True, check=False
    )
    return result.returncode == 0


def genl_family_exists(name: str) -> bool:
    """Ask the kernel (generic netlink CTRL_CMD_GETFAMILY) whether a family is registered."""
    netlink_generic, genl_id_ctrl, ctrl_cmd_getfamily, ctrl_attr_family_name = 16, 0x10, 3, 2
    nlm_f_request, nlmsg_error = 1, 2
    value = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(value), ctrl_attr_family_name) + value
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", ctrl_cmd_getfamily, 1, 0) + attr
    message = struct.pack("=IHHII", 16 + len(body), genl_id_ctrl, nlm_f_request, 1, 0) + body
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink_generic) as sock:
            sock.settimeout(2.0)
            sock.send(message)
            reply = sock.recv(65536)
    except OSError:
        return False
    _, msg_type = struct.unpack_from("=IH", reply)
    if msg_type == nlmsg_error:
        return struct.unpack_from("=i", reply, 16)[0] == 0
    return msg_type == genl_id_ctrl


# ---- OVSDB ------------------------------------------------------------------------------


def ovs_datapath_types() -> tuple[str, ...]:
    """Open_vSwitch.datapath_types as ovs-vswitchd reports it, () if OVSDB is unreachable."""
    from provision.backends import ovsdb_rpc
    from provision.errors import HostError

    try:
        rows = ovsdb_rpc.select_column(f"unix:{OVSDB_SOCK}", "Open_vSwitch",
                                       "datapath_types", timeout=2.0)
    except HostError:
        return ()
    return tuple(sorted(ovsdb_rpc.as_set(rows[0]))) if rows else ()


# ---- packages, daemons, versions -------------------------------------------------------


def missing_packages(packages: tuple[str, ...] = REQUIRED_PACKAGES) -> tuple[str, ...]:
    """The packages dpkg does not report as 'install ok installed'."""
    if shutil.which("dpkg-query") is None:
        return packages
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *packages],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    installed = set()
    for line in result.stdout.splitlines():
        name, _, status = line.partition(" ")
        if status.strip() == "install ok installed":
            installed.add(name.split(":")[0])
    return tuple(p for p in packages if p not in installed)


def _first_line(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=20)
    out = (result.stdout or result.stderr).strip()
    return out.splitlines()[0] if out else ""


def component_versions() -> dict[str, str]:
    """Versions of libvirt, QEMU, OVS, the running kernel and the guest kernel in /boot."""
    versions = {"kernel": os.uname().release}
    libvirt = _first_line(["libvirtd", "--version"])  # "libvirtd (libvirt) 9.0.0"
    if libvirt:
        versions["libvirt"] = libvirt.split()[-1]
    else:
        with contextlib.suppress(Exception):  # ImportError, or libvirt.libvirtError
            import libvirt as libvirt_module  # optional: only when libvirtd is not on PATH

            v = libvirt_module.getVersion()
            versions["libvirt"] = f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"
    qemu = re.search(r"version (\S+)", _first_line(["qemu-system-x86_64", "--version"]))
    if qemu:
        versions["qemu"] = qemu.group(1)
    ovs = _first_line(["ovs-vswitchd", "--version"])  # "ovs-vswitchd (Open vSwitch) 3.1.0"
    if ovs:
        versions["ovs"] = ovs.split()[-1]
    guest = guest_kernel()
    if guest is not None:
        versions["guest_kernel"] = guest.name.removeprefix("vmlinuz-")
    return versions


def _version_key(path: Path) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", path.name)]


def guest_kernel() -> Path | None:
    """The newest /boot/vmlinuz-* (from linux-image-amd64), the embedded guest's kernel."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"), key=_version_key)
    return kernels[-1] if kernels else None
