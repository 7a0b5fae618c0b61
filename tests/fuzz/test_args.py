"""The CLI's argument parser on generated command lines: a SpecError (exit 3) or arguments
whose values the commands can use. Parses only; runs nothing."""

from __future__ import annotations

from hypothesis import example, given, settings

from provision.cli.main import build_parser
from provision.errors import SpecError

from . import cli_inputs
from .conftest import budget
from .oracle import check_spec_error, finite_positive


@settings(max_examples=budget(300))
@given(argv=cli_inputs.command_lines())
@example(argv=["up", "@valid", "--timeout", "nan"])
@example(argv=["render", "@valid", "--json", "\x1b[2J"])
def test_parser(argv: list[str]) -> None:
    try:
        args = build_parser().parse_args(argv)
    except SpecError as exc:
        check_spec_error(exc)
        return
    except SystemExit as exc:  # --help printed usage; anything else escaped argparse
        assert exc.code == 0, f"argparse exited {exc.code} on {argv!r}"
        return
    if args.command == "up":
        assert finite_positive(args.timeout), (
            f"`up --timeout {args.timeout!r}` parsed: a wait that is not a finite, positive "
            f"number of seconds must be exit 3 ({argv!r})")
