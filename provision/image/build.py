"""The embedded default guest ("image: tiny"): built from the host's Debian packages, cached.

This module builds the guest image: the kernel (the host's or Debian's cloud kernel,
``GUEST_KERNEL``; ``provision/image/kernels.py``) and the virtio modules it needs,
busybox-static, qemu-ga, ethtool and iperf3 (with the libraries ``ldd`` lists); packing
them with ``provision/image/init`` into a reproducible newc initramfs; and the kernel
command line the guest boots with (``guest_cmdline``).

A build is keyed by its *input key* (builder version, the kernel's flavour, and for a
packaged kernel its package, version and sha256, kernel version, path/size/mtime of every
host file that goes in, the init script, the base command line): a second
``build_image`` with the same inputs does nothing (the cache, its layout and how a new build
is put in place: ``provision/image/cache.py``).  The output is byte-for-byte reproducible
(sorted entries, fixed owners and mtimes), so ``content_hash`` names exactly what the guest is.

The kernel is stored as the uncompressed ELF ``vmlinux`` taken out of the packaged bzImage:
QEMU boots it through its PVH entry (``<kernel>`` accepts it as is), which saves the guest
decompressing itself, about 3 s under TCG.  The initramfs is stored uncompressed for the
same reason.

"Ready" contract: the guest's init loads the modules, sets the hostname, configures every
``vlab.nic`` (channel count, address, link up) and only then starts qemu-ga.  So the first
successful ``guest-ping`` (after ``guest-sync``) means the guest's network is configured.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from provision.errors import HostError
from provision.image import bootfiles, kernels
from provision.image.cache import (
    MANIFEST,
    GuestImage,
    check_name,
    default_cache_dir,
    image_from_manifest,
    load_image,
    locked,
    make_cache_dir,
    point,
    prune,
    publish,
    read_manifest,
    write,
)

BUILDER_VERSION = 2

# Which kernel the guest boots (kernels.KERNEL_FLAVOURS), recorded in the input key and the
# manifest: "cloud" is Debian's linux-image-cloud-amd64, fetched into the cache, "host" the
# host's installed kernel.  Measured with benchmarks/bench_guest_boot.py --kernel cloud|host
# (README, "Measured", issue 11): the cloud kernel runs fewer initcalls, but its boot to the
# agent was not measurably faster (medians 4.56-5.88 s against 4.51-5.90 s for the host's
# on a noisy day, 4.27 against 4.13 s with acpi=noirq), so the host's stays the default.
GUEST_KERNEL = "host"

# The guest's kernel command line before lpj= (see _kernel_cmdline) and the vlab.* tokens.
# Measured under TCG, q35, 4 vCPUs, kernel-only boot (QEMU start -> init runs: about 2.05 s
# with "console=ttyS0 quiet", about 1.4 s with this line and lpj=):
#   quiet              -0.12 s  no boot chatter through the emulated UART
#   tsc=reliable       -0.12 s  TCG's TSCs run off the host clock: no sync check, no
#                               clocksource watchdog, TSC stays the clocksource (not HPET)
#   cryptomgr.notests  -0.15..0.4 s  no crypto self-tests at boot
#   rodata=off         -0.10 s  no read-only remapping nor W+X scan of the kernel image
#   init_on_alloc=0    -0.08 s  pages are not zeroed on every allocation
# Tried, no gain measured: mitigations=off, nokaslr, audit=0, acpi=off (and no ACPI
# power button), initcall_blacklist=init_kprobe_trace / load_system_certificate_list,
# cgroup_disable=memory, 8250.nr_uarts=1, rcupdate.rcu_expedited=1.  noapictimer saves the
# 0.1 s APIC timer calibration but costs each idle guest ~9% of a host core and a third
# of its iperf3 throughput (no high-resolution timers): rejected.
#   no_timer_check     not for speed: the kernel's check that the 8254 timer ticks through
#                      the IO-APIC busy-waits a few jiffies by the CPU's own loop count,
#                      which a TCG vCPU starved of host CPU outruns; then it panics ("IO-APIC
#                      + timer doesn't work!"). Seen in 3 of 16 guests booted together on
#                      two loaded cores; the guest console log showed it. VM kernels (cloud
#                      images) boot with it for this reason.
# Where the rest goes (initcall_debug, cloud kernel, TCG, 4 vCPUs): acpi_init ~0.24 s,
# crypto_kdf108_init ~0.19 s (a self-test cryptomgr.notests does not cover; no command-line
# switch), bringing up 4 vCPUs ~0.1 s; in init each insmod costs 25-70 ms besides the
# module's own initcall.  Modules with their signatures cut off load ~0.04 s faster in all
# (no sha256 + RSA check) but taint the kernel: not done.  About 1 s passes between QEMU's
# start and the guest kernel's clock starting (QEMU, SeaBIOS, loading the 66 MB vmlinux and
# the 14 MB initramfs), and ~0.3 s between qemu-ga's start and its first answer.
BASE_CMDLINE = ("console=ttyS0 quiet tsc=reliable cryptomgr.notests rodata=off init_on_alloc=0"
                " no_timer_check")
# tiny's own, on top (the debian image shares BASE_CMDLINE and keeps it as it is):
#   acpi=noirq         PCI INTx routing from the BIOS's $PIR table instead of ACPI's link
#                      devices.  Seen with initcall_debug: under TCG each virtio-pci probe
#                      spent ~0.35 s evaluating \_SB_.LNKx ("ACPI: \_SB_.LNKB: Enabled at
#                      IRQ 10"), 0.72 s of virtio_pci's insmod for the NIC and the serial
#                      port; with it, loading all the modules took 0.30 s instead of 1.23 s.
#                      The virtio devices use MSI-X; ACPI stays on: a `poweroff -f` in the
#                      guest still powers QEMU off.
#                      Withdrawn once after a CI run had a tiny guest hang before init (empty
#                      console) and a QEMU segfault in a TCG vCPU thread; both were QEMU 7.2's
#                      multi-threaded TCG (provision/host/tcg.py), not this flag. Under
#                      thread=single: 28 rounds of 5 guests (1-4 vCPUs) started together, 140
#                      boots, no hang; one 4-vCPU guest to its agent, bench_guest_boot.py, 5
#                      boots, medians 4.39 and 3.90 s against 6.49 and 5.48 s without it
#                      (interleaved, beside other jobs).
TINY_CMDLINE = BASE_CMDLINE + " acpi=noirq"

# Loaded in this order (each after its dependencies from modules.dep).
GUEST_MODULES = ("virtio_pci", "virtio_console", "virtio_net")
# For the VLAN sub-interfaces of trunk NICs: in the image, listed in /etc/vlab/modules-vlan
# and loaded only by a guest that has some (vlab.vlan tokens, or agent.configure_vlan).
# 8021q pulls in llc, mrp, stp and garp: five insmods, 0.1-0.2 s of boot under TCG that
# guests without VLANs do not pay.
VLAN_MODULES = ("8021q",)
BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
TOOL_DIRS = (Path("/usr/sbin"), Path("/usr/bin"), Path("/sbin"), Path("/bin"))
# (program, Debian package, directory inside the guest)
GUEST_TOOLS = (
    ("qemu-ga", "qemu-guest-agent", "usr/sbin"),
    ("ethtool", "ethtool", "usr/sbin"),
    ("iperf3", "iperf3", "usr/bin"),
)


@dataclass(frozen=True)
class _Inputs:
    """Everything a build reads from the host."""

    kernel_version: str
    kernel: Path
    kernel_package: dict[str, str]  # flavour; package, version and sha256 of a packaged one
    cmdline: str  # TINY_CMDLINE plus lpj= for this host
    modules: tuple[Path, ...]  # host .ko files, in load order
    vlan_modules: tuple[Path, ...]  # loaded after `modules`, only when VLANs are used
    files: dict[str, Path]  # guest path -> host file (busybox, tools, libraries, loader)
    applets: tuple[str, ...]  # busybox applet paths, e.g. "usr/bin/awk"
    init_script: bytes


def build_image(
    name: str = "tiny",
    cache_dir: Path | None = None,
    force: bool = False,
    kernel: str = GUEST_KERNEL,
) -> tuple[GuestImage, bool]:
    """Build `name` unless the cache holds a build of the same inputs; True if built now.
    A packaged kernel not yet in the cache is downloaded first (``kernels.package_kernel``)."""
    check_name(name, "kernel")
    cache = cache_dir or default_cache_dir()
    make_cache_dir(cache)
    with locked(cache):
        inputs = _gather_inputs(cache, kernel, fetch=True)
        assert inputs is not None
        key = _input_key(inputs)
        current = read_manifest(cache / name)
        if current and current.get("input_key") == key and not force:
            return image_from_manifest(name, cache / name, current), False
        _build_into(name, cache, inputs, key, force)
        return load_image(name, cache), True


def image_current(
    name: str = "tiny", cache_dir: Path | None = None, kernel: str = GUEST_KERNEL
) -> bool:
    """True when ``build_image`` would do nothing: the cache holds a build of this host's
    current inputs. Reads only (check mode: a packaged kernel not in the cache yet means
    False, nothing downloaded); HostError when an input is missing on the host."""
    check_name(name, "kernel")
    cache = cache_dir or default_cache_dir()
    manifest = read_manifest(cache / name)
    if manifest is None:
        return False
    inputs = _gather_inputs(cache, kernel, fetch=False)
    return inputs is not None and manifest.get("input_key") == _input_key(inputs)


# --- what goes in ------------------------------------------------------------------------


def _gather_inputs(cache: Path, flavour: str, fetch: bool) -> _Inputs | None:
    """None when the kernel is a package not in the cache yet and `fetch` is False."""
    if flavour not in kernels.KERNEL_FLAVOURS:
        choices = ", ".join(sorted(kernels.KERNEL_FLAVOURS))
        raise HostError(f"unknown guest kernel {flavour!r}: one of {choices}")
    if kernels.KERNEL_FLAVOURS[flavour] is None:
        kernel = kernels.host_kernel()
    else:
        found = kernels.package_kernel(flavour, cache, GUEST_MODULES + VLAN_MODULES, fetch)
        if found is None:
            return None
        kernel = found
    module_dir = kernel.module_dir
    modules = resolve_modules(module_dir, GUEST_MODULES)
    vlan_modules = [
        m for m in resolve_modules(module_dir, GUEST_MODULES + VLAN_MODULES) if m not in modules
    ]
    busybox = next((p for p in BUSYBOX_PATHS if p.is_file()), None)
    if busybox is None:
        raise HostError(
            "busybox not found (/bin/busybox): install busybox-static (`provision host prepare`)"
        )
    files = {"bin/busybox": busybox}
    for program, package, guest_dir in GUEST_TOOLS:
        binary = _find_program(program, package)
        files[f"{guest_dir}/{program}"] = binary
        for library in _shared_libraries(binary):
            files.setdefault(str(library).lstrip("/"), library)
    init_script = resources.files("provision.image").joinpath("init").read_bytes()
    applets = _busybox_applets(busybox)
    cmdline = _kernel_cmdline(kernel.config)
    return _Inputs(
        kernel.version,
        kernel.bzimage,
        kernel.package,
        cmdline,
        tuple(modules),
        tuple(vlan_modules),
        files,
        applets,
        init_script,
    )


def _kernel_cmdline(kernel_config: Path) -> str:
    """TINY_CMDLINE plus `lpj=`: the guest's TSC ticks per jiffy, preset so that no CPU
    calibrates its delay loop (0.23 s at boot under TCG).  Guests see the host's TSC rate
    (KVM and TCG alike), and x86 reports bogomips as twice the TSC rate in MHz."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        config = kernel_config.read_text()
    except OSError:
        return TINY_CMDLINE
    bogomips = re.search(r"^bogomips\s*:\s*([\d.]+)", cpuinfo, re.MULTILINE)
    hz = re.search(r"^CONFIG_HZ=(\d+)$", config, re.MULTILINE)
    if not bogomips or not hz:
        return TINY_CMDLINE
    return f"{TINY_CMDLINE} lpj={round(float(bogomips.group(1)) * 500_000 / int(hz.group(1)))}"


def find_kernel() -> tuple[str, Path]:
    """The host's newest kernel with modules: (version, /boot/vmlinuz-VERSION)."""
    found = kernels.host_kernel()
    return found.version, found.bzimage


resolve_modules = kernels.resolve_modules


def _find_program(program: str, package: str) -> Path:
    for directory in TOOL_DIRS:
        if (directory / program).is_file():
            return directory / program
    raise HostError(
        f"{program} not found in {', '.join(map(str, TOOL_DIRS))}: "
        f"install {package} (`provision host prepare`)"
    )


def _shared_libraries(binary: Path) -> list[Path]:
    """The libraries and dynamic loader that ldd lists for `binary` (vdso excluded)."""
    result = _run(["ldd", str(binary)])
    found = []
    for line in result.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            found.append(Path(match.group(1)))
        elif "not found" in line:
            raise HostError(f"{binary} needs a library the host lacks: {line.strip()}")
    return found


def _busybox_applets(busybox: Path) -> tuple[str, ...]:
    return tuple(sorted(_run([str(busybox), "--list-full"]).split()))


def _run(argv: list[str]) -> str:
    return bootfiles.run_bytes(argv).decode()


def _input_key(inputs: _Inputs) -> str:
    def fingerprint(path: Path) -> list[object]:
        info = path.stat()
        return [str(path), info.st_size, info.st_mtime_ns]

    material = {
        "builder": BUILDER_VERSION,
        "cmdline": inputs.cmdline,
        "kernel_version": inputs.kernel_version,
        "kernel_package": inputs.kernel_package,
        "kernel": fingerprint(inputs.kernel),
        "modules": [fingerprint(m) for m in inputs.modules],
        "vlan_modules": [fingerprint(m) for m in inputs.vlan_modules],
        "files": {guest: fingerprint(host) for guest, host in sorted(inputs.files.items())},
        "init": hashlib.sha256(inputs.init_script).hexdigest(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


# --- packing -----------------------------------------------------------------------------


def _initramfs(inputs: _Inputs) -> bytes:
    archive = bootfiles.Cpio()
    for directory in ("dev", "proc", "sys", "run", "tmp", "root", "etc/vlab", "lib/modules"):
        archive.directory(directory)
    archive.char_device("dev/console", 5, 1)
    archive.char_device("dev/null", 1, 3, 0o666)
    archive.symlink("var/run", "../run")
    for applet in inputs.applets:
        if applet not in inputs.files:
            archive.symlink(applet, "/bin/busybox")
    for guest, host in inputs.files.items():
        archive.file(guest, host.read_bytes(), 0o755)
    for module in inputs.modules + inputs.vlan_modules:
        name = module.name.split(".ko")[0]
        archive.file(f"lib/modules/{name}.ko", bootfiles.module_bytes(module))
    for listing, modules in (("modules", inputs.modules), ("modules-vlan", inputs.vlan_modules)):
        load_order = "".join(f"{m.name.split('.ko')[0]}.ko\n" for m in modules)
        archive.file(f"etc/vlab/{listing}", load_order.encode())
    archive.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    archive.file("etc/group", b"root:x:0:\n")
    archive.file("init", inputs.init_script, 0o755)
    return archive.pack()


# --- building into the cache -------------------------------------------------------------


def _build_into(name: str, cache: Path, inputs: _Inputs, key: str, force: bool) -> None:
    kernel = bootfiles.kernel_bytes(inputs.kernel)
    initrd = _initramfs(inputs)
    digest = hashlib.sha256(kernel)
    digest.update(initrd)
    content_hash = digest.hexdigest()
    manifest = {
        "name": name,
        "input_key": key,
        "content_hash": content_hash,
        "kernel_version": inputs.kernel_version,
        "kernel_package": inputs.kernel_package,
        "kernel": "kernel",
        "initrd": "initrd",
        "cmdline": inputs.cmdline,
        "builder_version": BUILDER_VERSION,
        "packages": _package_versions(inputs),
    }
    final = cache / f"{name}-{content_hash[:16]}"
    if final.is_dir() and read_manifest(final) and not force:
        # Same bytes already there (inputs touched, content unchanged): refresh the manifest.
        write(final / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    else:
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-build-", dir=cache))
        try:
            write(staging / "kernel", kernel)
            write(staging / "initrd", initrd)
            write(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
            publish(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    point(cache / name, final.name)
    prune(cache, name, keep=final.name)
    if "package" in inputs.kernel_package:
        kernels.prune_kernels(cache, keep=inputs.kernel.parents[1])


def _package_versions(inputs: _Inputs) -> dict[str, str]:
    """Versions of the packages the guest's files come from (the host's, and a packaged
    kernel's as fetched)."""
    fetched = inputs.kernel_package
    versions = {fetched["package"]: fetched["version"]} if "package" in fetched else {}
    packages = [] if versions else [f"linux-image-{inputs.kernel_version}"]
    packages.append("busybox-static")
    packages += [package for _, package, _ in GUEST_TOOLS]
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package}\t${Version}\n", *packages],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        return versions
    found = (line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)
    return {**versions, **dict(found)}
