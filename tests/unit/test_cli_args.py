"""Careless and hostile command lines: one line on stderr naming the flag, key or object, the
right exit code, and nothing done. Every case here fails before a daemon is needed: the
daemons' addresses point nowhere, so a check made too late would say exit 4 instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provision.cli.main import main

from .helpers import lab_data

SUBCOMMANDS = ("host check", "host prepare", "image build", "render", "plan", "up", "status",
               "down", "verify")
LAB_COMMANDS = ("render", "plan", "up", "status", "down", "verify")


@pytest.fixture(autouse=True)
def _nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No daemon answers and lab locks go to a temporary directory."""
    monkeypatch.setenv("VIRTIO_LAB_LIBVIRT_URI", "qemu+unix:///system?socket=/nonexistent/sock")
    monkeypatch.setenv("VIRTIO_LAB_OVSDB", "unix:/nonexistent/db.sock")
    monkeypatch.setenv("VIRTIO_LAB_RUNDIR", str(tmp_path / "run"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("provision: error: "), err
    assert "Traceback" not in err
    return lines[0]


def lab_file(tmp_path: Path, **changes: object) -> Path:
    doc = {"all": {"hosts": {"localhost": {}}, "vars": {"lab": lab_data(**changes)}}}
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


# -- the order: the file first, then the daemons -----------------------------------------
def test_status_validates_the_file_before_connecting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = lab_file(tmp_path, bridges=[])
    code, _, err = run(capsys, "status", str(bad))
    assert code == 3 and "lab.bridges" in one_line(err)
    code, _, err = run(capsys, "status", str(lab_file(tmp_path)))  # a good file gets that far
    assert code == 4 and "libvirtd" in one_line(err)
