"""Shared fixtures: the regenerate switch for golden files, the collection as Galaxy ships
it (built and installed with ansible-galaxy) for the unit and integration tests of it, and
headless Chromium for the HTML report (tests/chromium_page.py, importable because pytest puts
this directory, which is no package, on sys.path for this conftest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chromium_page import Chromium, find_chromium

REPO = Path(__file__).resolve().parents[1]
COLLECTION = REPO / "playbooks/collections/ansible_collections/virtio_lab/lab"
BIN = Path(sys.executable).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden", action="store_true",
        help="rewrite tests/unit/golden/* from the current renderer instead of comparing",
    )


@pytest.fixture
def regen_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--regen-golden"))


@dataclass
class Galaxy:
    """The virtio_lab.lab tarball, installed in a collections path that nothing else names."""

    tarball: Path
    collections: Path
    env: dict[str, str]  # ansible-* see only `collections`; results as JSON on one line

    def run(self, *argv: str | Path, cwd: Path) -> str:
        """An ansible-* command of this venv, run in ``cwd``; its stdout, or a failed test."""
        cmd = [str(BIN / str(argv[0])), *map(str, argv[1:])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=cwd,
                              timeout=120, check=False)  # fmt: skip
        assert proc.returncode == 0, (
            f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def play(self, play: list[dict[str, Any]], cwd: Path) -> dict[str, Any]:
        """Run ``play`` (written to ``cwd``/play.yml) on localhost with ``-v``; the ``msg`` of
        its last debug task, from the JSON result line."""
        (cwd / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
        out = self.run("ansible-playbook", "-v", "-i", "localhost,", "-c", "local", "play.yml",
                       cwd=cwd)  # fmt: skip
        lines = [ln for ln in out.splitlines() if ln.startswith('ok: [localhost] => {"msg"')]
        assert lines, out
        return json.loads(lines[-1].split(" => ", 1)[1])["msg"]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def galaxy(tmp_path_factory: pytest.TempPathFactory) -> Galaxy:
    """`ansible-galaxy collection build` of the checkout's collection, then `collection install`
    of the tarball into a temporary collections path."""
    tmp = tmp_path_factory.mktemp("galaxy")
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(tmp / "collections"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
           "ANSIBLE_CALLBACK_FORMAT_PRETTY": "false", "ANSIBLE_RETRY_FILES_ENABLED": "false",
           "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}  # fmt: skip
    env.pop("ANSIBLE_CONFIG", None)
    version = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())["version"]
    built = Galaxy(tmp / f"virtio_lab-lab-{version}.tar.gz", tmp / "collections", env)
    built.run("ansible-galaxy", "collection", "build", "--output-path", tmp, COLLECTION, cwd=tmp)
    built.run("ansible-galaxy", "collection", "install", "-p", built.collections, built.tarball,
              cwd=tmp)  # fmt: skip
    return built



# `make test` sets it: there Chromium must be installed (the Makefile installs it), so its
# absence fails the browser tests instead of skipping them.
REQUIRE_CHROMIUM = "VIRTIO_LAB_REQUIRE_CHROMIUM"


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    """Headless Chromium for the HTML report's tests; skipped where it is not installed,
    unless $VIRTIO_LAB_REQUIRE_CHROMIUM is set (make test)."""
    binary = find_chromium()
    if binary is None:
        why = "chromium is not installed (apt-get install chromium; `make test` installs it)"
        if os.environ.get(REQUIRE_CHROMIUM):
            pytest.fail(f"{why}, and ${REQUIRE_CHROMIUM} says it must be")
        pytest.skip(why)
    return Chromium(binary, tmp_path_factory.mktemp("chromium-profile"))
