"""The embedded guest's kernel: which one (an explicit input of the image key) and where its
files come from.

Two sources:

``cloud``
    Debian's ``linux-image-cloud-amd64``, the kernel Debian builds for VMs: far fewer drivers
    and initcalls than the generic one, CONFIG_PVH, the virtio and 802.1Q drivers as modules.
    apt resolves the meta-package to the versioned image package from the host's package
    lists (``resolve``: local, no download), so the key names the exact package, version and
    sha256.  ``fetch`` downloads that .deb once with ``apt-get download`` (the host's apt
    sources and keys, nothing installed), checks its sha256, unpacks it with ``dpkg-deb``,
    runs ``depmod`` on the tree and keeps only what the guest needs (the bzImage, its config,
    modules.dep/builtin and the modules asked for) under ``<cache>/kernels/PACKAGE_VERSION``.
``host`` (the default)
    The host's own newest installed kernel (``/boot/vmlinuz-*`` and ``/lib/modules``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from provision.errors import HostError, OperationError
from provision.image import bootfiles
from provision.image.cache import publish

# flavour -> Debian meta-package (None: the host's installed kernel)
KERNEL_FLAVOURS: dict[str, str | None] = {"cloud": "linux-image-cloud-amd64", "host": None}
DONE = ".complete"  # marks an unpacked kernel directory as whole


@dataclass(frozen=True)
class KernelFiles:
    """Where a kernel's files are, and what it is."""

    version: str  # uname -r, e.g. "6.1.0-56-cloud-amd64"
    bzimage: Path
    config: Path
    module_dir: Path  # holds modules.dep and modules.builtin
    package: dict[str, str]  # the key's record: flavour, and for a .deb package/version/sha256


@dataclass(frozen=True)
class KernelPackage:
    """A versioned Debian kernel image package, as apt's lists name it."""

    package: str  # e.g. linux-image-6.1.0-56-cloud-amd64
    version: str  # e.g. 6.1.192-2
    sha256: str

    @property
    def kernel_version(self) -> str:
        return self.package[len("linux-image-") :]

    @property
    def dirname(self) -> str:
        return f"{self.package}_{self.version}"


def _apt_show(spec: str) -> dict[str, str]:
    """The fields of apt's candidate record for `spec` ("pkg" or "pkg=version")."""
    try:
        result = subprocess.run(
            ["apt-cache", "show", "--no-all-versions", spec],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise HostError("apt-cache not found: the cloud guest kernel needs a Debian host") from None
    fields = dict(re.findall(r"^([\w-]+): (.*)$", result.stdout, re.MULTILINE))
    if result.returncode != 0 or "Version" not in fields:
        raise HostError(
            f"apt knows no package {spec}: run `apt-get update` (the embedded guest's kernel "
            "comes from Debian's archive through the host's apt sources)"
        )
    return fields


def resolve(meta: str) -> KernelPackage:
    """The image package apt would install for `meta` (reads the local lists only)."""
    depends = _apt_show(meta).get("Depends", "")
    match = re.search(r"(linux-image-[\w.+-]+) \(= ([^)]+)\)", depends)
    if not match:
        raise HostError(f"{meta} depends on no versioned linux-image package: {depends!r}")
    package, version = match.groups()
    fields = _apt_show(f"{package}={version}")
    if "SHA256" not in fields:
        raise HostError(f"apt lists no SHA256 for {package}={version}")
    return KernelPackage(package, version, fields["SHA256"])


def host_kernel() -> KernelFiles:
    """The newest /boot/vmlinuz-VERSION that has /lib/modules/VERSION/modules.dep."""
    found = [
        p
        for p in Path("/boot").glob("vmlinuz-*")
        if (Path("/lib/modules") / p.name[len("vmlinuz-") :] / "modules.dep").is_file()
    ]
    if not found:
        raise HostError(
            "no kernel with modules in /boot and /lib/modules: "
            "install linux-image-amd64 (`provision host prepare`)"
        )
    newest = max(found, key=lambda p: version_key(p.name[len("vmlinuz-") :]))
    version = newest.name[len("vmlinuz-") :]
    return KernelFiles(
        version,
        newest,
        Path(f"/boot/config-{version}"),
        Path("/lib/modules") / version,
        {"flavour": "host"},
    )


def package_kernel(
    flavour: str, cache: Path, modules: tuple[str, ...], fetch: bool
) -> KernelFiles | None:
    """The unpacked kernel of `flavour`'s package in `cache`; fetched and unpacked first when
    missing and `fetch`, else None (then a build has something to do)."""
    meta = KERNEL_FLAVOURS[flavour]
    assert meta is not None
    pkg = resolve(meta)
    root = cache / "kernels" / pkg.dirname
    if not (root / DONE).is_file():
        if not fetch:
            return None
        _fetch(pkg, root, modules)
    version = pkg.kernel_version
    return KernelFiles(
        version,
        root / "boot" / f"vmlinuz-{version}",
        root / "boot" / f"config-{version}",
        root / "lib" / "modules" / version,
        {"flavour": flavour, "package": pkg.package, "version": pkg.version, "sha256": pkg.sha256},
    )


def prune_kernels(cache: Path, keep: Path) -> None:
    """Remove unpacked kernels other than the one in `keep` (and interrupted fetches)."""
    for old in (cache / "kernels").glob("*"):
        if old.is_dir() and old != keep:
            shutil.rmtree(old, ignore_errors=True)


def _fetch(pkg: KernelPackage, root: Path, modules: tuple[str, ...]) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root.parent))
    try:
        # root downloading into a directory apt's _apt user cannot enter: no sandbox.
        bootfiles.run_bytes(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
             f"{pkg.package}={pkg.version}"],
            cwd=work,
        )  # fmt: skip
        debs = list(work.glob("*.deb"))
        if len(debs) != 1:
            raise OperationError(f"apt-get download {pkg.package} left {len(debs)} .deb files")
        digest = hashlib.sha256(debs[0].read_bytes()).hexdigest()
        if digest != pkg.sha256:
            raise OperationError(
                f"{debs[0].name}: sha256 {digest}, but apt's lists say {pkg.sha256}"
            )
        tree = work / "tree"
        bootfiles.run_bytes(["dpkg-deb", "-x", str(debs[0]), str(tree)])
        version = pkg.kernel_version
        bootfiles.run_bytes(["depmod", "-b", str(tree), version])
        keep = work / "keep"
        source_modules = tree / "lib" / "modules" / version
        wanted = [
            *(Path("boot") / f"{name}-{version}" for name in ("vmlinuz", "config")),
            *(
                Path("lib") / "modules" / version / name
                for name in ("modules.dep", "modules.builtin")
            ),
            *(m.relative_to(tree) for m in resolve_modules(source_modules, modules)),
        ]
        for relative in wanted:
            (keep / relative).parent.mkdir(parents=True, exist_ok=True)
            os.rename(tree / relative, keep / relative)  # keeps the package's mtimes
        (keep / DONE).write_text(f"{pkg.package} {pkg.version} {pkg.sha256}\n")
        publish(keep, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def version_key(version: str) -> list[tuple[int, str]]:
    return [
        (int(part), "") if part.isdigit() else (-1, part)
        for part in re.findall(r"\d+|[^\d.\-+~]+", version)
    ]


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def resolve_modules(module_dir: Path, names: tuple[str, ...]) -> list[Path]:
    """Module files for `names` and their dependencies, dependencies first.

    Modules that modules.builtin lists are built into the kernel and skipped.
    """
    deps: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    for line in (module_dir / "modules.dep").read_text().splitlines():
        target, _, needs = line.partition(":")
        paths[_module_name(target)] = target
        deps[_module_name(target)] = [_module_name(d) for d in needs.split()]
    builtin_file = module_dir / "modules.builtin"
    builtin = (
        {_module_name(line) for line in builtin_file.read_text().split()}
        if builtin_file.is_file()
        else set()
    )
    ordered: list[str] = []

    def visit(module: str) -> None:
        if module in ordered or module in builtin:
            return
        if module not in paths:
            raise HostError(f"kernel module {module} missing from {module_dir}/modules.dep")
        for dependency in reversed(deps[module]):
            visit(dependency)
        ordered.append(module)

    for name in names:
        visit(name.replace("-", "_"))
    return [module_dir / paths[module] for module in ordered]
