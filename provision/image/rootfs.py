"""The `debian` image's root tree: mmdebstrap into a directory, then virtio-lab's files and
units, then the clean-up that leaves a tree whose bytes depend only on the build's inputs.

mmdebstrap runs in root mode (plain chroot, as the build runs as root) with
SOURCE_DATE_EPOCH set, which makes dpkg, the maintainer scripts that honour it
(initramfs-tools, shadow) and mmdebstrap's own clean-up reproducible. The .deb files of the
last build are kept in the cache's ``debs/`` and put back into the tree's apt archive
before the next one, so a rebuild from the same mirror state downloads nothing.

What differs between two builds of the same inputs anyway (host keys, logs, backups,
caches, the build host's times) is removed or settled here (``scrub``, ``settle_mtimes``).
A build tree is removed only when nothing is mounted in it (``remove_tree``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from provision.errors import HostError, OperationError

ARCHIVES = "var/cache/apt/archives"
# The debootstrap way to a merged /usr: installs usr-is-merged, not usrmerge and its perl.
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
# Kept out of the image by dpkg, for this build and any later install in the guest:
# manuals, documentation (but its copyright files), translations, locale sources.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/i18n/*",
    "path-exclude=/usr/share/lintian/*",
)
# Paths (globs, relative to the root) that differ on every build and that a fresh guest
# does not need: host keys (cloud-init makes them at first boot), the apt lists and
# archive (the debs go to the cache), logs, the backups dpkg, debconf and shadow keep.
UNREPRODUCIBLE = (
    "etc/ssh/ssh_host_*", "var/lib/apt/lists/*", f"{ARCHIVES}/*.deb",
    "var/cache/apt/*.bin", "var/log/**/*.log", "var/log/journal/*", "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old", "etc/*-", "var/lib/dbus/machine-id", "var/lib/systemd/random-seed",
    "var/cache/ldconfig/aux-cache",
)  # fmt: skip

Log = Callable[[str], None]


def mmdebstrap_argv(suite: str, mirror: str, packages: tuple[str, ...], root: Path,
                    overlay: Path) -> list[str]:
    """The mmdebstrap command line: Essential packages, apt and `packages` from `mirror`
    into the directory `root`, with `overlay` copied in before anything is installed."""
    argv = ["mmdebstrap", "--mode=root", "--format=directory", "--variant=apt",
            f"--include={','.join(packages)}", f"--hook-dir={MERGED_USR_HOOKS}",
            f"--setup-hook=sync-in {shlex.quote(str(overlay))} /",
            # keep the archive (the debs go to the cache) and the lists (to check them)
            "--skip=essential/unlink,cleanup/apt/cache,cleanup/apt/lists"]
    argv += [f"--dpkgopt={option}" for option in DPKG_OPTIONS]
    return [*argv, suite, str(root), mirror]


def bootstrap(argv: list[str], root: Path, overlay: Path, debs: Path, epoch: int,
              log_file: Path) -> None:
    """Run mmdebstrap (``mmdebstrap_argv``) with the cached debs in its archive, then move
    what it downloaded into `debs`. Its output goes to `log_file`, named on failure."""
    archive = overlay / ARCHIVES
    archive.mkdir(parents=True, exist_ok=True)
    for deb in debs.glob("*.deb"):
        os.link(deb, archive / deb.name)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8"}
    env.pop("TMPDIR", None)
    with open(log_file, "w") as log:
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, env=env, check=False)
        except FileNotFoundError:
            raise HostError("mmdebstrap not found: install it (`provision host prepare`)"
                            ) from None
    if done.returncode != 0:
        raise OperationError(f"mmdebstrap exited {done.returncode}: {_last_error(log_file)}; "
                             f"the whole log is {log_file}")
    debs.mkdir(mode=0o755, exist_ok=True)
    for deb in (root / ARCHIVES).glob("*.deb"):
        shutil.move(deb, debs / deb.name)


def _last_error(log_file: Path) -> str:
    lines = log_file.read_text(errors="replace").splitlines()
    errors = [line for line in lines if line.startswith("E:")]
    return (errors or lines or ["no output"])[-1]


def write_files(root: Path, files: dict[str, str]) -> None:
    """Write guest files (mode 0644, root's), replacing symlinks and files in their way."""
    for name, text in sorted(files.items()):
        path = root / name
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_text(text)
        path.chmod(0o644)


def set_units(root: Path, enabled: tuple[str, ...], masked: tuple[str, ...]) -> None:
    """Enable and mask systemd units with the guest's own systemctl (offline in a chroot)."""
    for verb, units in (("enable", enabled), ("mask", masked)):
        if units:
            _run_in(root, ["systemctl", "--quiet", verb, *units])


def _run_in(root: Path, argv: list[str]) -> None:
    done = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        last = (done.stderr.strip() or "no output").splitlines()[-1]
        raise OperationError(f"`{' '.join(argv)}` in the guest tree exited "
                             f"{done.returncode}: {last}")


def check_release(root: Path, release: bytes) -> None:
    """OperationError unless apt's copy of the suite's InRelease is `release`: the mirror
    changed between resolving and downloading, and the input key would be wrong."""
    lists = list((root / "var/lib/apt/lists").glob("*_InRelease"))
    if not any(path.read_bytes() == release for path in lists):
        raise OperationError("the mirror's InRelease changed during the build (a mirror "
                             "update?): run the build again")


def scrub(root: Path) -> None:
    """Remove what differs between builds of the same inputs (``UNREPRODUCIBLE``)."""
    for pattern in UNREPRODUCIBLE:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def settle_mtimes(root: Path, epoch: int, started: float) -> None:
    """Every mtime that the build made (at or after `started`) or that is later than
    `epoch` becomes `epoch`, and so does every directory's (whether apt downloaded
    through var/cache/apt/archives/partial or found every deb cached changes its mtime);
    the packages' own file mtimes, which Python's byte-code caches record, stay. Access
    times become `epoch` too (``mke2fs -d`` copies them)."""
    paths = [str(root)]
    for directory, dirs, files in os.walk(root):  # symlinks to directories are not entered
        paths += [os.path.join(directory, name) for name in (*dirs, *files)]
    for path in paths:
        info = os.lstat(path)
        mtime = info.st_mtime_ns // 1_000_000_000
        if stat.S_ISDIR(info.st_mode) or info.st_mtime >= started or mtime > epoch:
            mtime = epoch
        os.utime(path, ns=(epoch * 1_000_000_000, mtime * 1_000_000_000),
                 follow_symlinks=False)


def remove_tree(path: Path) -> None:
    """rmtree, but never into a mount: a build killed inside mmdebstrap can leave /proc,
    /sys or /dev mounted in its tree, and removing through those would hit the host."""
    path = path.absolute()
    real = path.resolve()
    inside = [m for m in _mount_points() if real == m or real in m.parents]
    if inside:
        raise HostError(f"{inside[0]} is still mounted (a build was killed?): "
                        f"`umount -R {inside[0]}`, then build again")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _mount_points() -> list[Path]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    # Fields are separated by spaces; a space, tab, newline or backslash in a path is
    # written as an octal escape (\040).
    return [Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[1]))
            for line in lines if len(line.split()) > 1]


def installed_packages(status: str) -> dict[str, str]:
    """Package -> version of every package dpkg's status file says is installed."""
    found: dict[str, str] = {}
    for stanza in status.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines()
            if ": " in line and not line.startswith(" ")
        )
        if fields.get("Status") == "install ok installed" and "Package" in fields:
            found[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(found.items()))


def deb_file_name(package: str, version: str, arch: str) -> str:
    """apt's name for a downloaded package (the epoch's colon written %3a)."""
    return f"{package}_{version.replace(':', '%3a')}_{arch}.deb"


def prune_debs(debs: Path, packages: dict[str, str]) -> None:
    """Remove the cached debs of versions the last build did not install."""
    keep = {deb_file_name(p, v, a) for p, v in packages.items() for a in ("amd64", "all")}
    for deb in debs.glob("*.deb"):
        if deb.name not in keep:
            deb.unlink()
