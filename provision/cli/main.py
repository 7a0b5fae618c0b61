"""The ``provision`` command: parses arguments (``parser``), calls the command, and turns
typed exceptions into design.md's exit codes. The only place that exits.

Importing this module stays cheap (the standard library and ``provision.errors``): a command
imports what it uses when it runs (``provision.cli.commands``, ``provision.cli.hosts``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from provision.cli.parser import build_parser
from provision.errors import ProvisionError

EXIT_OK, EXIT_FAIL, EXIT_PENDING, EXIT_INPUT, EXIT_HOST = 0, 1, 2, 3, 4
# An error line longer than this is cut: a 100 kB argument must not flood the terminal.
MAX_LINE = 1000
MAX_LINES = 200

_WARNINGS: list[str] = []


def _warn(message: Warning | str, category: type[Warning], *_args: Any, **_kw: Any) -> None:
    """Library warnings (a deprecated lab key), kept for the end of the command."""
    _WARNINGS.append(f"provision: warning: {printable(str(message))}")


def _flush_warnings(show: bool) -> None:
    """One line each on stderr after a command that ran; none after a failed one, whose
    error is then the one line on stderr (the warning comes back once it runs)."""
    if show:
        for line in dict.fromkeys(_WARNINGS):
            print(line, file=sys.stderr)
    _WARNINGS.clear()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (None: this process's arguments); its exit code.

    With ``argv`` None this process is the `provision` command and exits next: the heap is
    frozen first (``gc.freeze``), which spares the interpreter's final collections over
    every object left, pydantic's models among them (~0.1 s, a third of a no-op `up`).
    atexit handlers still run. A caller that passes ``argv`` (tests) keeps its collector."""
    code = _main(argv)
    if argv is None:
        gc.freeze()
    return code


def _main(argv: Sequence[str] | None) -> int:
    warnings.showwarning = _warn
    # The lab uses no pydantic plugin: without this, pydantic's first model scans every
    # installed distribution's entry points for one (~5 ms a command). importlib.metadata
    # is imported all the same (pydantic.plugin._loader does so at its top).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    words = list(sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(words)
        func: Callable[[Any], int] = args.func
        code = func(args)
        _flush_warnings(True)
        return code
    except ProvisionError as exc:
        _flush_warnings(False)
        # Only an operation's failure (one line per object, as ReadBackError does) or a
        # record's differences may span lines; anything else is one line whatever the
        # arguments held.
        _fail(str(exc), exc.exit_code, _json_to_stdout(args, words),
              keep_newlines=exc.multiline)
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (`| head`); nothing left to say
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_FAIL, _json_to_stdout(args, words))
        return EXIT_FAIL


def _json_to_stdout(args: argparse.Namespace | None, words: Sequence[str]) -> bool:
    """Whether the command was asked for JSON on stdout: then its error is JSON there too.
    `--json` for every command but verify, whose `--json FILE` means stdout only as `-`."""
    if args is not None:
        return getattr(args, "json", None) in (True, "-")
    verify = bool(words) and words[0] == "verify"  # the arguments did not parse: read them
    for i, word in enumerate(words):
        if word == "--":
            break
        if word == "--json" and (not verify or list(words[i + 1 : i + 2]) == ["-"]):
            return True
        if word == "--json=-" and verify:
            return True
    return False


def _fail(message: str, code: int, as_json: bool, keep_newlines: bool = False) -> None:
    """The error on stderr, and as JSON on stdout when JSON was asked for there."""
    message = printable(message, keep_newlines)
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}))
    print(f"provision: error: {message}", file=sys.stderr)


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal and a log: control and format characters (escape
    sequences, carriage returns, bidi overrides, undecodable bytes of an argument) shown
    escaped as Python writes them (``\\x1b``); lines cut at MAX_LINE characters, at most
    MAX_LINES lines. ``keep_newlines`` keeps the line breaks of a multi-line message."""
    lines = text.split("\n") if keep_newlines else [text]
    out = [_escape_line(line) for line in lines[:MAX_LINES]]
    if len(lines) > MAX_LINES:
        out.append(f"... and {len(lines) - MAX_LINES} more line(s)")
    return "\n".join(out)


def _escape_line(line: str) -> str:
    out: list[str] = []
    length = 0
    for i, ch in enumerate(line):
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            ch = ascii(ch)[1:-1]
        if length + len(ch) > MAX_LINE:
            out.append(f"... ({len(line) - i} more character(s))")
            break
        out.append(ch)
        length += len(ch)
    return "".join(out)


if __name__ == "__main__":
    sys.exit(main())
