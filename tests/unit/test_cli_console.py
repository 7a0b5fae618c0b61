"""The CLI's lazy consoles: a short plain line is printed as rich would print it, without
making a rich console; anything else goes through rich as before."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from provision.cli.console import PIPED_WIDTH, LazyConsole


def rich_prints(text: str, width: int) -> str:
    buf = io.StringIO()
    Console(file=buf, highlight=False, width=width).print(text, markup=False)
    return buf.getvalue()


def test_a_short_plain_line_needs_no_rich(capsys: pytest.CaptureFixture[str]) -> None:
    out = LazyConsole()
    text = "no changes made; virtio backend userspace, domain type qemu (tcg; 0.21 s)"
    out.line(text)
    assert capsys.readouterr().out == text + "\n" == rich_prints(text, PIPED_WIDTH)
    assert out._console is None


@pytest.mark.parametrize("text", [
    " ".join(["word"] * 60),  # wider than a pipe's 160 columns: rich wraps it
    "lab caf\u00e9: in sync, nothing to change",  # not ASCII: rich measures its cells
])
def test_other_lines_go_through_rich(capsys: pytest.CaptureFixture[str], text: str) -> None:
    out = LazyConsole()
    out.line(text)
    assert capsys.readouterr().out == rich_prints(text, PIPED_WIDTH)
    assert out._console is not None


def test_stderr_lines_wrap_at_rich_s_default(capsys: pytest.CaptureFixture[str]) -> None:
    err = LazyConsole(stderr=True)
    err.line("x" * 80)
    assert capsys.readouterr().err == "x" * 80 + "\n"
    assert err._console is None
