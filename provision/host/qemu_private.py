"""A QEMU newer than Debian 12's, from bookworm-backports, unpacked at a private path.

Why (issue 13): QEMU 7.2 crashes under TCG once a guest enables a vhost-user vring; QEMU
10.0.2 from bookworm-backports does not.  Installing the backport would replace the host's
QEMU for every lab (same package names; dpkg cannot keep both), so vhost-user labs get their
own copy instead: the backports' .debs are downloaded through a private apt state (its own
lists, cache and sources; the host's apt configuration and dpkg database are only read) and
`dpkg -x`-ed into ``/opt/virtio-lab/qemu-<upstream version>``.  Nothing is installed.

Debian's QEMU is not relocatable, so the tree is run through a wrapper, ``bin/qemu-system-x86_64``
in the tree, which a domain names as its ``<emulator>`` (libvirt starts QEMU with a cleared
environment, so only a wrapper can set it):

* ``QEMU_MODULE_DIR`` points at the tree's modules.  QEMU still falls back to its built-in
  module directory, which holds the host's 7.2 modules, for any module the tree lacks, and
  loading one aborts QEMU 10 ("Only modules from the same build can be loaded", then an
  assertion in module_load_dso): `-netdev help` did, and libvirt's capability probe lists
  every type.  So every module package of the release is unpacked (`PACKAGES`), not just the
  emulator.
* ``-L`` the tree's ``usr/share/qemu`` and ``usr/share/seabios`` ahead of the built-in firmware
  paths (the host's /usr/share/qemu and /usr/share/seabios hold 7.2's data; QEMU 10 needs
  SeaBIOS > 1.16.3-1).
* ``-accel tcg`` becomes ``-accel tcg,thread=single``, as in provision/host/tcg.py's wrapper.

Each download is checked against the size and SHA256 of the (signed) Packages index before it
is unpacked, and the tree appears whole or not at all: it is built beside its final path and
renamed into place, with ``virtio-lab-qemu.json`` recording exactly which packages it holds.

Proven on Debian 12 (libvirt 9.0, 2 cores, TCG; notes/issue13-spike.md of 2026-11-25): the
host's libvirtd probes the wrapper (pc-i440fx-10.0, memfd), and starts the embedded tiny guest
through it with memfd shared memory and a 2-queue vhost-user NIC on OVS-DPDK; its agent answers.
Not used by any command yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from provision.errors import OperationError
from provision.host.tcg import single_threaded_args

ROOT = Path(os.environ.get("VIRTIO_LAB_QEMU_ROOT", "/opt/virtio-lab"))
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm-backports"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MANIFEST = "virtio-lab-qemu.json"
WRAPPER = "bin/qemu-system-x86_64"
MARK = "virtio-lab: private QEMU"

QEMU_VERSION = "1:10.0.2+ds-2+deb13u1~bpo12+1"
# What the tree is made of: the emulator, its data and firmware, and every package that
# ships modules (see the module docstring for why all of them).  Pinned: the versions run
# here.  Backports keeps only its newest version, so a newer one there makes fetch fail
# naming it, rather than unpack something not tried.
PACKAGES: Mapping[str, str] = {
    "qemu-system-x86": QEMU_VERSION,
    "qemu-system-common": QEMU_VERSION,
    "qemu-system-data": QEMU_VERSION,
    "qemu-system-gui": QEMU_VERSION,
    "qemu-system-modules-opengl": QEMU_VERSION,
    "qemu-system-modules-spice": QEMU_VERSION,
    "qemu-block-extra": QEMU_VERSION,
    "seabios": "1.16.3-2~bpo12+1",
}


@dataclass(frozen=True)
class DebEntry:
    """One package version as the Packages index lists it."""

    package: str
    version: str
    filename: str  # pool/main/q/qemu/qemu-system-x86_...deb
    size: int
    sha256: str


# ---- pure parts ------------------------------------------------------------------------


def upstream_version(version: str) -> str:
    """The upstream part of a Debian version: '1:10.0.2+ds-2+deb13u1~bpo12+1' -> '10.0.2'.

    Debian's own repackaging suffixes (+ds, +dfsg) and the revision are dropped; what is left
    must look like a release number, since it names a directory."""
    body = version.split(":", 1)[1] if ":" in version else version
    upstream = re.split(r"[-+~]", body, maxsplit=1)[0]
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", upstream):
        raise ValueError(f"not a QEMU release number: {version!r}")
    return upstream


def tree_path(version: str = QEMU_VERSION, root: Path = ROOT) -> Path:
    return root / f"qemu-{upstream_version(version)}"


def apt_config(state: Path) -> str:
    """An apt.conf whose lists, cache, lock and sources all live under `state`.  The dpkg
    status stays the host's (read only: `apt-get download` installs nothing)."""
    return "".join(f'{key} "{state / sub}";\n' for key, sub in (
        ("Dir::State", "state"),
        ("Dir::Cache", "cache"),
        ("Dir::Etc::SourceList", "sources.list"),
        ("Dir::Etc::SourceParts", "sources.list.d"),
    ))  # fmt: skip


def apt_sources(mirror: str = MIRROR, suite: str = SUITE, keyring: str = KEYRING) -> str:
    """The private state's one source, in deb822 form."""
    return (f"Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n"
            f"Signed-By: {keyring}\n")  # fmt: skip


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs (a Packages index, `apt-cache show`) as dicts; continuation lines
    are joined to their field with newlines."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
        elif line[0] in " \t":
            if not key:
                raise ValueError(f"continuation line before any field: {line!r}")
            current[key] += "\n" + line.strip()
        else:
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"not a field: {line!r}")
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def index_entry(stanzas: Iterable[Mapping[str, str]], package: str, version: str) -> DebEntry:
    """The index's entry for `package` at `version`; ValueError when it lists no such version
    (naming those it has) or gives no usable size and SHA256."""
    found = [s for s in stanzas if s.get("Package") == package]
    match = [s for s in found if s.get("Version") == version]
    if not match:
        have = ", ".join(sorted({s.get("Version", "?") for s in found})) or "none"
        raise ValueError(f"{package} {version} is not in the index (it has: {have})")
    entry = match[0]
    sha256, size = entry.get("SHA256", ""), entry.get("Size", "")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not size.isdigit():
        raise ValueError(f"{package} {version}: no SHA256 or Size in the index")
    if not entry.get("Filename", "").endswith(".deb"):
        raise ValueError(f"{package} {version}: no .deb Filename in the index")
    return DebEntry(package, version, entry["Filename"], int(size), sha256)


def check_deb(path: Path, entry: DebEntry) -> None:
    """ValueError unless the file at `path` has the index's size and SHA256."""
    size = path.stat().st_size
    if size != entry.size:
        raise ValueError(f"{path.name}: {size} bytes, the index says {entry.size}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != entry.sha256:
        raise ValueError(f"{path.name}: SHA256 {digest.hexdigest()}, the index says "
                         f"{entry.sha256}")  # fmt: skip


def download_name(entry: DebEntry) -> str:
    """The file `apt-get download` writes: <package>_<version, ':' as %3a>_<arch>.deb (the
    pool's name drops the epoch instead)."""
    arch = entry.filename.rsplit("_", 1)[-1]
    return f"{entry.package}_{entry.version.replace(':', '%3a')}_{arch}"


def wrapper_script(tree: Path) -> str:
    """The wrapper for the QEMU unpacked at `tree` (see the module docstring)."""
    root = shlex.quote(str(tree))
    return f"""#!/bin/bash
# {MARK}: QEMU unpacked from Debian packages under {str(tree)!r}, which is
# not relocatable: its modules and firmware are named here.  Written by virtio-lab
# (provision/host/qemu_private.py).  TCG runs single-threaded (provision/host/tcg.py).
root={root}
export QEMU_MODULE_DIR="$root/usr/lib/x86_64-linux-gnu/qemu"
{single_threaded_args(MARK)}exec "$root/usr/bin/qemu-system-x86_64" -L "$root/usr/share/qemu" \\
  -L "$root/usr/share/seabios" "${{args[@]}}"
"""


def manifest(entries: Iterable[DebEntry]) -> dict[str, object]:
    """What `virtio-lab-qemu.json` records: the packages the tree was unpacked from."""
    return {"packages": sorted((asdict(e) for e in entries), key=lambda e: e["package"])}


def parse_qemu_version(text: str) -> str:
    """'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2...)' -> '10.0.2' ('' if absent)."""
    m = re.search(r"QEMU emulator version ([0-9]+(?:\.[0-9]+)+)", text)
    return m.group(1) if m else ""


# ---- the host --------------------------------------------------------------------------


def installed(tree: Path, entries: Iterable[DebEntry]) -> bool:
    """Whether `tree` holds exactly `entries` (its manifest) and its wrapper is current and
    executable."""
    try:
        have = json.loads((tree / MANIFEST).read_text())
        script = (tree / WRAPPER).read_text()
    except (OSError, ValueError):
        return False
    current = have == manifest(entries) and script == wrapper_script(tree)
    return current and os.access(tree / WRAPPER, os.X_OK)


def matches_pins(tree: Path, packages: Mapping[str, str] = PACKAGES) -> bool:
    """Offline: whether `tree` was unpacked from exactly `packages` at their pinned versions
    (its manifest) and its wrapper is current and executable.  No index is read."""
    try:
        have = json.loads((tree / MANIFEST).read_text())["packages"]
        pins = {e["package"]: e["version"] for e in have}
        script = (tree / WRAPPER).read_text()
    except (OSError, ValueError, KeyError, TypeError):
        return False
    current = pins == dict(packages) and script == wrapper_script(tree)
    return current and os.access(tree / WRAPPER, os.X_OK)


def _run(argv: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 600) -> str:  # fmt: skip
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env=env, cwd=cwd, timeout=timeout, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationError(f"`{' '.join(argv)}` failed: {exc}") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise OperationError(f"`{' '.join(argv)}` exited {proc.returncode}: {last}")
    return proc.stdout


class PrivateApt:
    """apt with its own state under `state` (lists, cache, sources): `update`, `entries`
    from its index, `download`.  The host's apt lists and sources are never written."""

    def __init__(self, state: Path, mirror: str = MIRROR, suite: str = SUITE) -> None:
        self.state = state
        for sub in ("state/lists/partial", "cache/archives/partial", "sources.list.d"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "sources.list").write_text("")
        (state / "sources.list.d" / "virtio-lab.sources").write_text(apt_sources(mirror, suite))
        (state / "apt.conf").write_text(apt_config(state))
        self.env = {**os.environ, "APT_CONFIG": str(state / "apt.conf"),
                    "DEBIAN_FRONTEND": "noninteractive"}  # fmt: skip

    def update(self) -> None:
        _run(["apt-get", "-q", "update"], env=self.env, timeout=900)

    def entries(self, packages: Mapping[str, str]) -> list[DebEntry]:
        """Each package's index entry at its pinned version (OperationError if missing)."""
        argv = ["apt-cache", "show", *(f"{p}={v}" for p, v in packages.items())]
        try:
            stanzas = parse_stanzas(_run(argv, env=self.env))
            return [index_entry(stanzas, p, v) for p, v in packages.items()]
        except (OperationError, ValueError) as exc:
            raise OperationError(f"{SUITE} does not offer the pinned packages: {exc}") from exc

    def download(self, entries: Iterable[DebEntry], dest: Path) -> list[Path]:
        """The .debs of `entries` in `dest`, each checked against its entry."""
        entries = list(entries)
        _run(["apt-get", "-q", "download", *(f"{e.package}={e.version}" for e in entries)],
             env=self.env, cwd=dest, timeout=1800)  # fmt: skip
        paths = [dest / download_name(e) for e in entries]
        for path, e in zip(paths, entries, strict=True):
            try:
                check_deb(path, e)
            except (OSError, ValueError) as exc:
                raise OperationError(f"{e.package} {e.version}: {exc}") from exc
        return paths


def unpack(debs: Iterable[Path], entries: Iterable[DebEntry], tree: Path) -> None:
    """`dpkg -x` every deb into a new directory beside `tree`, add the wrapper and the
    manifest, and rename it to `tree`: never a partial tree there.  An old tree is renamed
    aside first (for that moment there is none) and removed after; a QEMU running from it
    keeps its open files."""
    if not tree.parent.exists():
        tree.parent.mkdir(parents=True)
        tree.parent.chmod(0o755)  # whatever the umask: QEMU runs as libvirt-qemu
    new = Path(tempfile.mkdtemp(prefix=f".{tree.name}.new-", dir=tree.parent))
    try:
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(new)])
        (new / WRAPPER).parent.mkdir(exist_ok=True)
        (new / WRAPPER).write_text(wrapper_script(tree))
        (new / WRAPPER).chmod(0o755)
        (new / MANIFEST).write_text(json.dumps(manifest(entries), indent=1) + "\n")
        for d in ((new / WRAPPER).parent, new):  # mkdtemp makes 0700; QEMU's user reads it
            d.chmod(0o755)
        old = None
        if tree.exists():
            old = tree.with_name(f".{tree.name}.old-{os.getpid()}")
            tree.rename(old)
        try:
            new.rename(tree)
        except OSError:
            if old is not None:  # the host keeps the tree it had
                old.rename(tree)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if new.exists():
            shutil.rmtree(new, ignore_errors=True)


def ensure_private_qemu(packages: Mapping[str, str] = PACKAGES, root: Path = ROOT,
                        state: Path | None = None,
                        log: Callable[[str], None] = lambda s: None) -> tuple[Path, bool]:
    """The wrapper of the private QEMU for `packages`, fetched and unpacked when the tree
    under `root` does not hold them yet; and whether anything changed."""
    tree = tree_path(packages["qemu-system-x86"], root)
    if matches_pins(tree, packages):
        return tree / WRAPPER, False
    with tempfile.TemporaryDirectory(prefix="virtio-lab-apt-") as tmp:
        apt = PrivateApt(state or Path(tmp) / "apt")
        log(f"apt-get update ({SUITE}, private state)")
        apt.update()
        entries = apt.entries(packages)
        if installed(tree, entries):
            return tree / WRAPPER, False
        debs = Path(tmp) / "debs"
        debs.mkdir()
        log(f"downloading {len(entries)} packages from {SUITE}")
        paths = apt.download(entries, debs)
        unpack(paths, entries, tree)
    log(f"unpacked QEMU {upstream_version(packages['qemu-system-x86'])} into {tree}")
    return tree / WRAPPER, True
