"""The `debian` disk image (``provision image build debian``): Debian 12 (bookworm) from a
Debian mirror, booted by GRUB from its own disk (SeaBIOS, no direct kernel boot), set up at
first boot by cloud-init from a NoCloud seed.

A build is keyed by its *input key*: the suite, the mirror, the package list, the builder
version, the kernel command line, the sha256 of the mirror's InRelease for the suite, and
the versions of the build host's tools whose output lands on the disk. The InRelease pins,
through the hashes of the Packages indices it signs, the version of every package apt
resolves, so the key names the exact package versions without downloading them: a build
with a current key does nothing but fetch that one file (150 kB). The InRelease's Date is
the build's SOURCE_DATE_EPOCH.

The same key gives the same bytes: the tree is made reproducible (``image.rootfs``), the
disk is assembled with fixed identifiers and times (``image.disk``), and the qcow2 is
uncompressed. ``content_hash`` is the sha256 of the qcow2 file.

The pieces: ``guestconf`` (what virtio-lab writes into the guest), ``rootfs`` (mmdebstrap
and the tree), ``disk`` (partition table, GRUB, ext4, qcow2), the cache (``image.cache``).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.errors import HostError, SpecError
from provision.image import disk, guestconf, rootfs
from provision.image.build import BASE_CMDLINE
from provision.image.cache import (
    MANIFEST,
    DiskImage,
    default_cache_dir,
    disk_from_manifest,
    load_disk_image,
    locked,
    make_cache_dir,
    point,
    prune,
    read_manifest,
    write,
)

NAME = "debian"
BUILDER_VERSION = 1
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# On top of the Essential set and apt. systemd-sysv makes systemd PID 1; netplan.io renders
# cloud-init's network config for systemd-networkd (see guestconf); usr-is-merged keeps
# usrmerge (and perl) out; dbus for hostnamectl and networkctl.
GUEST_PACKAGES = (
    "systemd-sysv", "udev", "dbus", "usr-is-merged", "linux-image-cloud-amd64",
    "cloud-init", "netplan.io", "qemu-guest-agent", "openssh-server", "sudo", "e2fsprogs",
    "iproute2", "iputils-ping", "ethtool", "iperf3", "procps", "util-linux",
)  # fmt: skip
# Build host packages whose output lands on the disk: their versions are inputs.
BUILD_TOOLS = ("mmdebstrap", "apt", "dpkg", "e2fsprogs", "grub-pc-bin", "qemu-utils")
LAYOUT = disk.DiskLayout(
    size=2 << 30,  # 2 GiB as the guest sees it; the qcow2 holds only what is used
    fs_uuid="1a57623e-daab-4061-865b-960e8706a896",
    hash_seed="85b545f1-720f-4e62-bbdb-afba070fa340",
    disk_id=0x766C6162,  # "blav", any fixed number
    label="debian-root",
    epoch=0,  # the InRelease's Date, set per build
)
CMDLINE = guestconf.kernel_cmdline(LAYOUT.fs_uuid, BASE_CMDLINE)
FETCH_TIMEOUT_S = 60.0

Stage = Callable[[str], None]


@dataclass(frozen=True)
class DebianInputs:
    """What a build of the debian image depends on."""

    suite: str  # e.g. "bookworm"
    mirror: str  # the Debian mirror's URL
    packages: tuple[str, ...]  # what --include asks for, on top of Essential and apt
    release: bytes  # the mirror's dists/<suite>/InRelease
    tools: dict[str, str]  # build host package -> version (BUILD_TOOLS)

    @property
    def epoch(self) -> int:
        """SOURCE_DATE_EPOCH: the InRelease's Date."""
        return release_epoch(self.release.decode(errors="replace"))


def input_key(inputs: DebianInputs) -> str:
    """sha256 over everything a build depends on (see the module's docstring)."""
    material = {
        "builder": BUILDER_VERSION,
        "suite": inputs.suite,
        "mirror": inputs.mirror,
        "packages": sorted(inputs.packages),
        "release": hashlib.sha256(inputs.release).hexdigest(),
        "tools": dict(sorted(inputs.tools.items())),
        "cmdline": CMDLINE,
        "guest_files": guestconf.guest_files(LAYOUT.fs_uuid, CMDLINE),
        "preinstall_files": guestconf.preinstall_files(),
        "units": [guestconf.ENABLED_UNITS, guestconf.MASKED_UNITS],
        "dpkg": rootfs.DPKG_OPTIONS,
        "layout": [LAYOUT.size, LAYOUT.fs_uuid, LAYOUT.hash_seed, LAYOUT.disk_id, LAYOUT.label],
        "grub": [disk.GRUB_MODULES, disk.GRUB_PREFIX],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def release_epoch(release: str) -> int:
    """The Date of an InRelease (or Release) file, in seconds since 1970."""
    for line in release.splitlines():
        if line.startswith("Date:"):
            try:
                return int(email.utils.parsedate_to_datetime(line[5:].strip()).timestamp())
            except (TypeError, ValueError):
                break
    raise HostError("the mirror's InRelease has no valid Date: line; is it a Debian mirror?")


def check_mirror(mirror: str) -> str:
    """The mirror URL without a trailing slash; SpecError unless it is http(s)."""
    if not mirror.startswith(("http://", "https://")) or any(c.isspace() for c in mirror):
        raise SpecError("--mirror", f"{mirror!r} is not the http(s):// URL of a Debian "
                        "mirror, e.g. http://deb.debian.org/debian")
    return mirror.rstrip("/")


def fetch_release(mirror: str, suite: str) -> bytes:
    """The suite's InRelease from the mirror; HostError naming the URL when it fails."""
    url = f"{mirror}/dists/{suite}/InRelease"
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise HostError(f"{url} answered {exc.code} {exc.reason}: check --mirror") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise HostError(f"cannot fetch {url}: {reason}; check the network or --mirror"
                        ) from None


def tool_versions(packages: tuple[str, ...] = BUILD_TOOLS) -> dict[str, str]:
    """Installed version of each build host package; HostError naming the missing ones."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${db:Status-Status}\t${Version}\n", *packages],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = {}
    for line in result.stdout.splitlines():
        package, status, version = [*line.split("\t"), "", ""][:3]
        if status == "installed":
            found[package] = version
    missing = [p for p in packages if p not in found]
    if missing:
        raise HostError(f"building the debian image needs {' '.join(missing)}: run "
                        "`provision host prepare`")
    return found


def gather_inputs(mirror: str = DEFAULT_MIRROR, suite: str = SUITE) -> DebianInputs:
    mirror = check_mirror(mirror)
    tools = tool_versions()
    return DebianInputs(suite, mirror, GUEST_PACKAGES, fetch_release(mirror, suite), tools)


def build_debian(cache_dir: Path | None = None, force: bool = False,
                 mirror: str = DEFAULT_MIRROR, stage: Stage = lambda s: None,
                 ) -> tuple[DiskImage, bool]:
    """Build the debian image unless the cache holds a build of the same input key; True if
    built now. `stage` is told what the build is doing (it takes minutes)."""
    mirror = check_mirror(mirror)
    if os.geteuid() != 0:
        raise HostError("building the debian image takes root (mmdebstrap --mode=root, "
                        "chroot): run `provision image build debian` as root")
    cache = cache_dir or default_cache_dir()
    stage(f"resolving {SUITE} from {mirror}")
    inputs = gather_inputs(mirror)
    key = input_key(inputs)
    make_cache_dir(cache)
    with locked(cache):
        current = read_manifest(cache / NAME)
        if current and current.get("kind") == "disk" and current.get("input_key") == key \
                and not force:
            return disk_from_manifest(NAME, cache / NAME, current), False
        _build_into(cache, inputs, key, stage)
        return load_disk_image(NAME, cache), True


def _build_into(cache: Path, inputs: DebianInputs, key: str, stage: Stage) -> None:
    for stale in cache.glob(f".{NAME}-build-*"):
        rootfs.remove_tree(stale)
    staging = Path(tempfile.mkdtemp(prefix=f".{NAME}-build-", dir=cache))
    try:
        manifest = _build_disk(staging, cache, inputs, key, stage)
        stage("writing the cache entry")
        final = cache / f"{NAME}-{manifest['content_hash'][:16]}"
        text = json.dumps(manifest, indent=2, sort_keys=True).encode()
        there = read_manifest(final) if final.is_dir() else None
        if there and there.get("content_hash") == manifest["content_hash"]:
            # The same bytes are there (--force, or new inputs that changed nothing): keep
            # the file that running guests' overlays back onto, refresh its manifest.
            write(final / MANIFEST, text)
        else:
            write(staging / MANIFEST, text)
            staging.chmod(0o755)
            if final.exists():
                rootfs.remove_tree(final)
            staging.rename(final)
    finally:
        if staging.exists():
            rootfs.remove_tree(staging)
    point(cache / NAME, final.name)
    prune(cache, NAME, keep=final.name)
    rootfs.prune_debs(cache / "debs", manifest["packages"])


def _build_disk(work: Path, cache: Path, inputs: DebianInputs, key: str, stage: Stage,
                ) -> dict[str, Any]:
    """Tree, raw disk, qcow2 in `work`; only disk.qcow2 is left. Returns the manifest."""
    started = time.time()
    epoch = inputs.epoch
    root, overlay, debs = work / "root", work / "overlay", cache / "debs"
    root.mkdir()
    rootfs.write_files(overlay, guestconf.preinstall_files())
    cached = len(list(debs.glob("*.deb"))) if debs.is_dir() else 0
    stage(f"mmdebstrap: {len(inputs.packages)} packages and dependencies ({cached} debs cached)")
    argv = rootfs.mmdebstrap_argv(inputs.suite, inputs.mirror, inputs.packages, root, overlay)
    rootfs.bootstrap(argv, root, overlay, debs, epoch, cache / f"{NAME}.log")
    rootfs.remove_tree(overlay)
    stage("configuring the guest tree")
    rootfs.check_release(root, inputs.release)
    packages = rootfs.installed_packages((root / "var/lib/dpkg/status").read_text())
    rootfs.write_files(root, guestconf.guest_files(LAYOUT.fs_uuid, CMDLINE))
    rootfs.set_units(root, guestconf.ENABLED_UNITS, guestconf.MASKED_UNITS)
    rootfs.scrub(root)
    rootfs.settle_mtimes(root, epoch, started)
    layout = _with_epoch(epoch)
    raw = work / "disk.raw"
    with open(raw, "wb") as fh:
        fh.truncate(layout.size)
    stage("making the ext4 filesystem (mke2fs -d)")
    disk.make_filesystem(raw, root, layout)
    rootfs.remove_tree(root)
    stage("writing the partition table and GRUB")
    disk.write_boot_sectors(raw, layout)
    stage("converting to qcow2")
    disk.to_qcow2(raw, work / "disk.qcow2")
    (work / "disk.qcow2").chmod(0o444)  # the base of every overlay: no one writes it
    raw.unlink()
    stage("hashing")
    return _manifest(inputs, key, packages, _sha256(work / "disk.qcow2"))


def _with_epoch(epoch: int) -> disk.DiskLayout:
    return disk.DiskLayout(LAYOUT.size, LAYOUT.fs_uuid, LAYOUT.hash_seed, LAYOUT.disk_id,
                           LAYOUT.label, epoch)


def _manifest(inputs: DebianInputs, key: str, packages: dict[str, str],
              content_hash: str) -> dict[str, Any]:
    kernels = sorted(p[len("linux-image-"):] for p in packages
                     if p.startswith("linux-image-") and p[len("linux-image-"):][:1].isdigit())
    return {
        "name": NAME,
        "kind": "disk",
        "format": "qcow2",
        "disk": "disk.qcow2",
        "content_hash": content_hash,
        "virtual_size": LAYOUT.size,
        "input_key": key,
        "builder_version": BUILDER_VERSION,
        "suite": inputs.suite,
        "mirror": inputs.mirror,
        "release_sha256": hashlib.sha256(inputs.release).hexdigest(),
        "source_date_epoch": inputs.epoch,
        "requested_packages": list(inputs.packages),
        "packages": packages,
        "build_tools": inputs.tools,
        "kernel_version": kernels[-1] if kernels else "",
        "cmdline": CMDLINE,
        "root_uuid": LAYOUT.fs_uuid,
        "network_renderer": "netplan (systemd-networkd)",
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
