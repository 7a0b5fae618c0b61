"""The wheel works anywhere: built from this checkout, installed in a fresh venv outside it,
its `provision` renders and plans what the checkout renders and plans, and brings the demo
lab up, verifies it and tears it down (issue 12, part 1).

Integration, not unit: `render` asks libvirtd for the emulator and reads the image cache, and
`plan` reads OVSDB and libvirt. Only the last test changes the host: the demo lab (under a
name of its own) goes up and down again.

No network. pip builds with this venv's setuptools (``--no-build-isolation``; the ``test``
extra brings a setuptools that can) and installs the wheel alone (``--no-deps``). The fresh
venv sees the dependencies through a .pth naming this venv's site-packages: a .pth line only
appends a directory to sys.path and runs none of the .pth files in it, so the editable
install's finder stays asleep, and the tests check that virtio-lab is read from the new venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import libvirt
import pytest
import yaml

from .conftest import force_cleanup, unique_name

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# What a checkout holds that is no source: copying it would be slow or would leak a stale
# build/lib of an earlier in-tree build into the wheel.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".ruff_cache", "reports")
MIN_SETUPTOOLS = 77  # pyproject.toml's [build-system]: the SPDX `license` string needs it


@dataclass
class Installed:
    wheel: Path
    venv: Path
    elsewhere: Path  # a directory that is not the checkout, with a copy of the demo lab
    env: dict[str, str]  # this environment without anything that points into the checkout


def _run(argv: list[str | Path], *, expect: int = 0, **kwargs: object) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False,
                          timeout=300, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == expect, (
        f"{argv} exited {proc.returncode}, not {expect}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _check_build_backend() -> None:
    have = metadata.version("setuptools")
    if int(have.split(".")[0]) < MIN_SETUPTOOLS:
        pytest.fail(f"setuptools {have} in {sys.prefix} cannot build virtio-lab (pyproject.toml "
                    f"needs >= {MIN_SETUPTOOLS}): reinstall the venv, `make venv` or "
                    f"`pip install -e '.[test]'`")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    _check_build_backend()
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=NOT_SOURCE)  # the templates link as is
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist",
          src])
    (wheel,) = (tmp / "dist").glob("virtio_lab-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    _run([*pip, "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
          wheel])
    (site,) = (venv / "lib").glob("python*/site-packages")
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "virtio_lab_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "VIRTIO_LAB_TEMPLATES")}
    path = [p for p in env.get("PATH", "").split(os.pathsep)
            if p and Path(p) != Path(sys.executable).parent]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    yield Installed(wheel, venv, elsewhere, env)


def test_wheel_holds_the_package_and_its_data_and_nothing_else(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = whl.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in whl.infolist()}
    templates = sorted(p.name for p in (REPO / "templates").iterdir() if p.is_file())
    assert templates
    for name in templates:
        assert f"provision/templates/{name}" in names
    assert "provision/image/init" in names
    assert "provision/hypervisors/reaper.py" in names  # run by path, not imported
    assert all(n.startswith(("provision/", "virtio_lab-0.1.0.dist-info/")) for n in names), names
    assert not [n for n in names if "tests/" in n or "benchmarks/" in n or "conftest" in n]
    symlinks = [n for n, mode in modes.items() if mode & 0o170000 == 0o120000]
    assert not symlinks, f"the wheel holds links, not files: {symlinks}"


def test_installed_package_reads_nothing_from_the_checkout(installed: Installed) -> None:
    probe = ("import json, provision; from importlib import resources; "
             "from provision.core.render import templates_dir; "
             "print(json.dumps([provision.__file__, str(templates_dir()), "
             "str(resources.files('provision.image') / 'init')]))")
    found = json.loads(_run([installed.venv / "bin" / "python", "-c", probe],
                            cwd=installed.elsewhere, env=installed.env))
    package, templates, init = map(Path, found)
    assert package.is_relative_to(installed.venv), package
    assert templates.is_relative_to(installed.venv) and templates.is_dir(), templates
    assert init.is_relative_to(installed.venv), init
    assert (templates / "domain.xml.j2").read_bytes() == \
        (REPO / "templates" / "domain.xml.j2").read_bytes()
    assert init.read_bytes() == (REPO / "provision" / "image" / "init").read_bytes()


def _demo_copy(directory: Path) -> Path:
    """inventory/demo.yml under a name of its own, so that what `plan` sees does not depend
    on whether someone has the demo lab up."""
    doc = yaml.safe_load((REPO / "inventory" / "demo.yml").read_text())
    lab = doc["all"]["vars"]["lab"]
    lab["name"] = unique_name()
    for bridge in lab["bridges"]:
        bridge["name"] = f"br-{lab['name']}"
    for vm in lab["vms"]:
        for nic in vm["nics"]:
            nic["bridge"] = f"br-{lab['name']}"
    path = directory / "lab.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_installed_render_and_plan_match_the_checkout(installed: Installed) -> None:
    lab = _demo_copy(installed.elsewhere)
    checkout_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    checkout = [sys.executable, "-m", "provision.cli"]
    wheel = [installed.venv / "bin" / "provision"]
    ours: dict[str, dict] = {}
    for command, expect in (("render", 0), ("plan", 2)):  # plan: a new lab, all to create
        theirs = json.loads(_run([*checkout, command, lab, "--json"], expect=expect,
                                 cwd=REPO, env=checkout_env))
        ours[command] = json.loads(_run([*wheel, command, lab.name, "--json"], expect=expect,
                                        cwd=installed.elsewhere, env=installed.env))
        assert ours[command] == theirs, command
    assert [d["xml"].startswith("<domain type=") for d in ours["render"]["domains"]] == [True] * 3


def test_installed_provision_runs_the_demo_lab(installed: Installed,
                                               conn: libvirt.virConnect) -> None:
    """up, a no-op up, verify (every check passes) and down, all by the wheel's `provision`
    from a directory that is not the checkout."""
    lab = _demo_copy(installed.elsewhere)
    name = yaml.safe_load(lab.read_text())["all"]["vars"]["lab"]["name"]
    wheel = [installed.venv / "bin" / "provision"]

    def provision(*args: str) -> dict:
        return json.loads(_run([*wheel, *args], cwd=installed.elsewhere, env=installed.env))

    try:
        up = provision("up", lab.name, "--json")
        assert up["changed"] and len(up["agent_seconds"]) == 3, up
        assert provision("up", lab.name, "--json")["changed"] is False
        report = provision("verify", lab.name, "--json", "-")
        failed = [c for c in report["checks"] if c["status"] == "fail"]
        assert report["passed"] and not failed, failed
        assert {c["hop"] for c in report["checks"] if c["status"] == "pass"} >= {
            "domain", "qemu", "tap", "ovs", "guest", "reach", "isolation"}
        provision("down", lab.name, "--json")
        assert [d.name() for d in conn.listAllDomains() if d.name().startswith(name)] == []
    finally:
        force_cleanup(conn, name, lab)


def test_installed_package_renders_the_html_report(installed: Installed) -> None:
    """`verify --html`'s page from the wheel's own templates (report.html.j2, report.css),
    even with $VIRTIO_LAB_TEMPLATES naming a directory without them."""
    probe = ("import json; from provision.report.html import render_html; "
             "print(json.dumps(render_html({'lab': 'w', 'passed': True, 'checks': []}, None)))")
    env = {**installed.env, "VIRTIO_LAB_TEMPLATES": str(installed.elsewhere)}
    page = json.loads(_run([installed.venv / "bin" / "python", "-c", probe],
                           cwd=installed.elsewhere, env=env))
    assert "<title>verify w: PASSED</title>" in page and "svg.queue-chart" in page  # the CSS
