"""Careless and hostile command lines: one line on stderr naming the flag, key or object, the
right exit code, and nothing done. Every case here fails before a daemon is needed: the
daemons' addresses point nowhere, so a check made too late would say exit 4 instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provision.cli.main import MAX_LINE, _fail, build_parser, main, printable
from provision.engine.lab import lab_lock, lock_path, placement_note
from provision.errors import HostError, OperationError

from .helpers import lab, lab_data

SUBCOMMANDS = ("host check", "host prepare", "image build", "render", "plan", "up", "status",
               "down", "verify", "record", "schema")
LAB_COMMANDS = ("render", "plan", "up", "status", "down", "verify", "record")


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


@pytest.mark.parametrize(("lab_arg", "says"), [("", "argument LAB: is blank"),
                                              (" ", "argument LAB: is blank"),
                                              ("a\0b", "a\\x00b: is not a usable file name")])
@pytest.mark.parametrize("command", LAB_COMMANDS)
def test_blank_lab_argument_is_exit_3(
    capsys: pytest.CaptureFixture[str], command: str, lab_arg: str, says: str
) -> None:
    code, _, err = run(capsys, command, lab_arg)
    assert code == 3 and says in one_line(err)


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


@pytest.mark.parametrize("command", ["status", "down", "plan", "render", "up", "verify"])
@pytest.mark.parametrize("path", ["/", "/dev/null"])
def test_a_directory_or_device_is_not_a_lab_file(
    capsys: pytest.CaptureFixture[str], command: str, path: str
) -> None:
    code, _, err = run(capsys, command, path)
    line = one_line(err)
    assert code == 3 and path in line
    assert "is a directory" in line if path == "/" else "is a character device" in line
    assert "a lab file must be a regular file" in line


# -- JSON on stdout -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "{lab}", "--json=-"],
        ["verify", "{lab}", "--json", "-"],
        ["verify", "--json", "-", "{lab}"],
        ["plan", "{lab}", "--json"],
        ["status", "{lab}", "--json"],
        ["down", "--json", "{lab}"],
        ["render", "{lab}", "--json"],
        ["up", "{lab}", "--json"],
        ["plan", "{lab}", "--json", "--bogus"],  # the arguments do not parse
        ["verify", "{lab}", "--json=-", "--bogus"],
    ],
)
def test_an_error_is_json_on_stdout_when_json_was_asked_for(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    missing = str(tmp_path / "missing.yml")
    code, out, err = run(capsys, *(missing if a == "{lab}" else a for a in argv))
    line = one_line(err)
    assert code == 3
    data = json.loads(out)
    assert data == {"error": line.removeprefix("provision: error: "), "exit_code": 3}


def test_no_json_error_on_stdout_when_json_goes_to_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "verify", str(tmp_path / "missing.yml"), "--json",
                         str(tmp_path / "r.json"))
    assert code == 3 and out == "" and "missing.yml" in one_line(err)


# -- verify's output files, checked before the run ----------------------------------------
@pytest.mark.parametrize("flag", ["--json", "--junit", "--html"])
@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/nonexistent/dir/r.out", "directory /nonexistent/dir does not exist"),
        ("{tmp}", "is a directory"),
        ("", "empty"),
        ("r\0.json", "NUL"),
    ],
)
def test_verify_output_paths_are_checked_before_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str, path: str, says: str
) -> None:
    path = path.replace("{tmp}", str(tmp_path))
    code, _, err = run(capsys, "verify", str(lab_file(tmp_path)), flag, path)
    line = one_line(err)  # a good lab, unreachable daemons: checked before, or exit 4
    assert code == 3 and f"{flag}: " in line and says in line, line


# -- the run directory and the lab lock ------------------------------------------------------
def test_a_run_directory_that_is_a_file_is_exit_4(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rundir = tmp_path / "run"
    rundir.write_text("")
    code, _, err = run(capsys, "down", str(lab_file(tmp_path)))
    line = one_line(err)
    assert code == 4 and str(rundir) in line and "VIRTIO_LAB_RUNDIR" in line
    monkeypatch.setenv("VIRTIO_LAB_RUNDIR", str(rundir / "sub"))
    with pytest.raises(HostError, match="run/sub"):
        lab_lock("ut").__enter__()


def test_two_holders_of_a_lab_lock_conflict_and_the_file_goes_away(tmp_path: Path) -> None:
    path = lock_path("ut")
    with lab_lock("ut"):
        assert path.is_file()
        with pytest.raises(OperationError) as exc, lab_lock("ut"):
            pass
        message = str(exc.value)
        assert "lab ut" in message and str(path) in message and "is running" in message
        with lab_lock("other"):  # another lab is another lock
            pass
    assert not path.exists() and not lock_path("other").exists()
    with lab_lock("ut"):  # and the lock can be taken again
        pass
    assert not path.exists()


def test_a_lab_lock_in_another_process_conflicts(tmp_path: Path) -> None:
    code = ("import sys, time\nfrom provision.engine.lab import lab_lock\n"
            "with lab_lock('ut'):\n    print('held', flush=True)\n    sys.stdin.read()\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(OperationError, match=rf"pid {holder.pid}\)"), lab_lock("ut"):
            pass
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0 and not lock_path("ut").exists()


def test_a_stale_lock_file_is_taken_and_removed(tmp_path: Path) -> None:
    path = lock_path("ut")
    path.parent.mkdir(parents=True)
    path.write_text("")  # left by an older version, which never removed it
    with lab_lock("ut"):
        pass
    assert not path.exists()


def test_a_lock_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    path = lock_path("ut")
    path.parent.mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    path.symlink_to(target)
    with pytest.raises(HostError, match=str(path)), lab_lock("ut"):
        pass
    assert target.read_text() == "keep"


# -- placement without --host -------------------------------------------------------------
def test_placement_note_names_vms_by_host() -> None:
    base = lab()
    vms = list(base.vms)
    third = vms[1].model_copy(update={"name": "vm3", "host": "hv2"})
    spread = base.model_copy(update={"vms": (*vms, third)})
    assert placement_note(spread, {"localhost"}) == (
        "placing every VM on this host (--host not given): vm1 and vm2 (host localhost), "
        "vm3 (host hv2); use --host NAME to place one host's VMs")
    assert placement_note(base, {"localhost"}) is None  # all here: nothing to say
    assert placement_note(base, {"hv9"}) == (
        "placing every VM on this host (--host not given): vm1 and vm2 (host localhost); "
        "use --host NAME to place one host's VMs")
    assert placement_note(base.model_copy(update={"vms": ()}), set()) is None


# -- messages safe for a terminal ---------------------------------------------------------
def test_printable_escapes_control_characters_and_caps_lines() -> None:
    assert printable("a\x1b[31mb\rc\u202ed\udcff") == "a\\x1b[31mb\\rc\\u202ed\\udcff"
    assert printable("one\ntwo") == "one\\ntwo"
    assert printable("one\ntwo\x07", keep_newlines=True) == "one\ntwo\\x07"
    long = printable("x" * 5000)
    assert len(long) < MAX_LINE + 40 and long.endswith("(4000 more character(s))")
    many = printable("\n".join(["l"] * 1000), keep_newlines=True).splitlines()
    assert len(many) == 201 and many[-1] == "... and 800 more line(s)"


def test_arguments_with_control_characters_are_escaped_in_the_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "plan", str(tmp_path / "a\x1b[2Jb\nc.yml"))
    line = one_line(err)
    assert code == 3 and "\x1b" not in line and "a\\x1b[2Jb\\nc.yml" in line
    code, _, err = run(capsys, "plan", "x" * 100_000)
    assert code == 3 and len(one_line(err)) < MAX_LINE + 100


def test_a_held_lock_fails_fast_naming_lab_and_lock(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with lab_lock("ut"):
        code, _, err = run(capsys, "down", str(lab_file(tmp_path)))
    line = one_line(err)
    assert code == 1 and "lab ut: another `provision up` or `down`" in line
    assert str(lock_path("ut")) in line


def test_only_an_operation_error_spans_lines(capsys: pytest.CaptureFixture[str]) -> None:
    _fail("lab ut: after up, 2 object(s):\n  tap a\x1b\n  port b", 1, False, keep_newlines=True)
    assert capsys.readouterr().err == (
        "provision: error: lab ut: after up, 2 object(s):\n  tap a\\x1b\n  port b\n")
    _fail("lab.name: 'a\nb'", 3, True)
    captured = capsys.readouterr()
    assert captured.err == "provision: error: lab.name: 'a\\nb'\n"
    assert json.loads(captured.out) == {"error": "lab.name: 'a\\nb'", "exit_code": 3}


# -- a broken installation ----------------------------------------------------------------
def test_missing_templates_are_exit_4_naming_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provision.core.render import render_template

    missing = tmp_path / "no-templates"
    monkeypatch.setenv("VIRTIO_LAB_TEMPLATES", str(missing))
    with pytest.raises(HostError, match=rf"not found in {missing}: .* broken; reinstall") as exc:
        render_template("domain.xml.j2")
    assert exc.value.exit_code == 4
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "domain.xml.j2").write_text("<domain>\n{% if %}\n")
    monkeypatch.setenv("VIRTIO_LAB_TEMPLATES", str(broken))
    with pytest.raises(HostError, match=r"domain\.xml\.j2 line 2 is broken"):
        render_template("domain.xml.j2")
