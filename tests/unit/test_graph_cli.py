"""`provision graph` refuses bad input before it asks any daemon: one line naming the file
and what is wrong, exit 3, JSON on stdout with --json, and no picture written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def graph(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "provision.cli", "graph", *args],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.fixture
def lab_file(tmp_path: Path) -> Path:
    doc = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}, "vars": {"lab": {
        "name": "gcli", "bridges": [{"name": "br-gcli"}],
        "vms": [{"name": "vm1", "nics": [{"bridge": "br-gcli", "ip": "10.77.0.1/24"}]}]}}}}
    path = tmp_path / "gcli.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def report_file(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "report.json"
    path.write_text(content)
    return path


def refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("provision: error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("content", "words"), [
    (None, ("cannot read the report: No such file or directory",)),
    ("{not json", ("is not JSON (line 1 column 2",)),
    ('{"lab": "gcli"}', (": checks: is missing or not a list",)),
    ('{"lab": "gcli", "checks": [{"name": "tap", "target": "gcli/vm1/0", "status": "ok"}]}',
     (": checks[0].status: is 'ok'; one of pass, fail, skip",)),
    ('{"lab": "other", "checks": []}', ("is the report of lab 'other', not of lab gcli",)),
])
def test_a_bad_report_is_one_line_naming_the_file_and_no_picture(
        tmp_path: Path, lab_file: Path, content: str | None, words: tuple[str, ...]) -> None:
    report = tmp_path / "missing.json" if content is None else report_file(tmp_path, content)
    svg = tmp_path / "lab.svg"
    refused(graph(str(lab_file), "--svg", str(svg), "--verify", str(report)),
            f"--verify {report}", *words)
    assert not svg.exists()


def test_with_json_the_error_is_also_json_on_stdout(tmp_path: Path, lab_file: Path) -> None:
    proc = graph(str(lab_file), "--json", "--verify", str(tmp_path / "none.json"))
    refused(proc, "none.json")
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 3 and "none.json: cannot read the report" in data["error"]


def test_a_directory_as_report_or_svg_is_refused(tmp_path: Path, lab_file: Path) -> None:
    refused(graph(str(lab_file), "--verify", str(tmp_path)), "is not a regular file")
    refused(graph(str(lab_file), "--svg", str(tmp_path)), "--svg", "is a directory")
    refused(graph(str(lab_file), "--svg", str(tmp_path / "no" / "lab.svg")),
            "does not exist")


def test_svg_and_dot_are_one_or_the_other(lab_file: Path, tmp_path: Path) -> None:
    refused(graph(str(lab_file), "--svg", str(tmp_path / "a.svg"), "--dot"),
            "not allowed with argument")
