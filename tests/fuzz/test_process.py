"""`python -m provision.cli` as a process, under a 20 s timeout and a 1 GiB address-space cap:
what a user sees, including what in-process capture cannot (bytes on the real stdout and
stderr, encodings, crashes of C code, runaway memory). Fewer examples: each costs a start of
the interpreter (about 1 s here). The same safety rules as test_cli: `up` and `down` only of
files the loader rejects."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from . import cli_inputs
from . import strategies as s
from .conftest import LabPaths, budget, out_files
from .oracle import LAB_COMMANDS, check, parse, rejected, run_process, safe_to_run

pytestmark = pytest.mark.integration

BIG_FILE_MIB = 64  # far beyond any real lab; must be refused (or read) within the timeout


@pytest.fixture(scope="module")
def lab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-process") / "lab.yml"


def test_the_cli_runs_under_the_caps(lab_paths: LabPaths) -> None:
    """The harness itself: a valid lab renders as a process under the time and memory caps."""
    o = run_process(["render", str(lab_paths.valid)])
    assert o.code == 0, str(o)


@settings(max_examples=budget(5), deadline=None)
@given(data=s.lab_files, command=st.sampled_from(LAB_COMMANDS), as_json=st.booleans())
def test_lab_files(lab_file: Path, data: bytes, command: str, as_json: bool) -> None:
    lab_file.write_bytes(data)
    spec_bad = rejected(lab_file)
    if not spec_bad and command not in ("render", "plan"):
        command = "render"  # the others are only read-only (or safe) for rejected files
    argv = [command, str(lab_file), *(["--json"] if as_json and command != "verify" else [])]
    o = run_process(argv)
    check(o, parse(argv))
    if spec_bad:
        assert o.code == 3, f"the loader rejects the file, {command} does not\n{o}"


def _special_path(kind: str, root: Path) -> str:
    if kind == "dev-zero":
        return "/dev/zero"
    if kind == "big-file":
        path = root / "big.yml"
        if not path.exists():
            line = b"# " + b"x" * 1021 + b"\n"
            with path.open("wb") as fh:
                fh.write(s.dump(s.inventory({"name": "fzbig", "bridges": [{"name": "fzbr"}]})))
                for _ in range(BIG_FILE_MIB):
                    fh.write(line * 1024)
        return str(path)
    return LabPaths(root=root, valid=root / "valid.yml", invalid=root / "invalid.yml").resolve(
        kind)


@pytest.mark.parametrize(("kind", "command"), [
    ("@missing", "plan"), ("@dir", "render"), ("@devnull", "plan"), ("@empty", "render"),
    ("@nonutf8", "plan"), ("@bytes-name", "render"), ("dev-zero", "render"),
    ("big-file", "plan"),
])
def test_lab_paths(lab_paths: LabPaths, kind: str, command: str) -> None:
    o = run_process([command, _special_path(kind, lab_paths.root)])
    check(o, parse([command, "x"]))


@settings(max_examples=budget(6), deadline=None)
@given(template=cli_inputs.command_lines())
def test_command_lines(lab_paths: LabPaths, template: list[str]) -> None:
    argv = [lab_paths.resolve(t) for t in template]
    args = parse(argv)
    # host check probes KVM afresh in every process (3 s here): in-process covers it.
    assume(safe_to_run(args) and (args is None or args.func.__name__ != "host_check"))
    o = run_process(argv)
    check(o, args)
    assert not out_files(lab_paths.root), f"a report of a lab that is not here\n{o}"
