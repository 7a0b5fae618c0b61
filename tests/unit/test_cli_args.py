"""Careless and hostile command lines: one line on stderr naming the flag, key or object, the
right exit code, and nothing done. Every case here fails before a daemon is needed: the
daemons' addresses point nowhere, so a check made too late would say exit 4 instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provision.cli.main import build_parser, main

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


# -- unknown options, missing arguments ------------------------------------------------------
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_an_unknown_option_is_named_with_its_command(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    words = command.split()
    args = [*words, "--frobnicate", "x.yml"] if words[0] in LAB_COMMANDS else [*words,
                                                                                "--frobnicate"]
    code, out, err = run(capsys, *args)
    line = one_line(err)
    assert code == 3 and out == ""
    assert "--frobnicate" in line and f"`provision {command}`" in line, line
    # before the required LAB too: the option is the likelier mistake
    if words[0] in LAB_COMMANDS:
        code, _, err = run(capsys, *words, "--frobnicate")
        assert code == 3 and "--frobnicate" in one_line(err)


@pytest.mark.parametrize("command", ["", "host", "image", *LAB_COMMANDS])
def test_a_missing_argument_is_named(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, _, err = run(capsys, *command.split())
    line = one_line(err)
    assert code == 3
    expected = "LAB" if command in LAB_COMMANDS else "needs a command: one of"
    assert expected in line and f"`provision {command}".strip() in line, line


def test_top_level_unknown_option_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--frobnicate"], ["--frobnicate", "up", "x.yml"]):
        code, _, err = run(capsys, *argv)
        line = one_line(err)
        assert code == 3 and "--frobnicate" in line and "after the command" in line


def test_extra_arguments_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "render", "a.yml", "b.yml")
    assert code == 3 and "'b.yml'" in one_line(err)


@pytest.mark.parametrize("lab_arg", ["", " "])
@pytest.mark.parametrize("command", LAB_COMMANDS)
def test_blank_lab_argument_is_exit_3(
    capsys: pytest.CaptureFixture[str], command: str, lab_arg: str
) -> None:
    code, _, err = run(capsys, command, lab_arg)
    assert code == 3 and "LAB" in one_line(err)


# -- --timeout ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-1", "-0.5", "nan", "inf", "-inf", "1e400", "86401",
                                   "abc", ""])
def test_timeout_outside_its_range_is_exit_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str
) -> None:
    code, _, err = run(capsys, "up", str(lab_file(tmp_path)), f"--timeout={value}")
    line = one_line(err)
    assert code == 3 and "--timeout" in line and "more than 0 and at most 86400" in line


def test_timeout_in_range_parses() -> None:
    for value, seconds in (("0.5", 0.5), ("300", 300.0), ("86400", 86400.0)):
        assert build_parser().parse_args(["up", "x.yml", "--timeout", value]).timeout == seconds


# -- the order: the file first, then the daemons -----------------------------------------
def test_status_validates_the_file_before_connecting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = lab_file(tmp_path, bridges=[])
    code, _, err = run(capsys, "status", str(bad))
    assert code == 3 and "lab.bridges" in one_line(err)
    code, _, err = run(capsys, "status", str(lab_file(tmp_path)))  # a good file gets that far
    assert code == 4 and "libvirtd" in one_line(err)
