"""The ``provision`` command: parses arguments, calls the library, prints (rich or --json),
and turns typed exceptions into design.md's exit codes. The only place that exits.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
import warnings
from collections.abc import Callable, Collection, Sequence
from typing import Any, NoReturn

from provision.errors import ProvisionError, SpecError

EXIT_OK, EXIT_FAIL, EXIT_PENDING, EXIT_INPUT, EXIT_HOST = 0, 1, 2, 3, 4
# --timeout's upper bound: a day is more than any guest needs, and far larger values overflow
# the C timeouts of the waits below (threading, sockets).
MAX_TIMEOUT = 86400.0
# An error line longer than this is cut: a 100 kB argument must not flood the terminal.
MAX_LINE = 1000
MAX_LINES = 200
# argparse treats these words as values, not options (`--timeout -5` reaches the type check).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


class _Parser(argparse.ArgumentParser):
    """argparse, with every bad argument a SpecError (exit 3: argparse's own exit 2 means
    "changes pending" here) naming the (sub)command and the unknown option."""

    _words: Sequence[str] = ()  # what this parser was given, to name an unknown option
    commands: Collection[str] = ()  # its subcommands, if it has any

    def add_commands(self, dest: str) -> Any:
        """The subcommands of this parser: one of them is required."""
        sub = self.add_subparsers(dest=dest, metavar="COMMAND", required=True,
                                  parser_class=_Parser)
        self.commands = sub.choices  # filled as add_parser() is called
        return sub

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._words = list(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:  # said here, by the subcommand's parser, so the message names it
            self.error(self._unexpected(extras))
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        unknown = self._unknown_options()
        if unknown and message.startswith("the following arguments are required"):
            message = self._unexpected(unknown)  # the missing argument is likely that one
        elif message.endswith("required: COMMAND"):
            message = f"`{self.prog}` needs a command: one of {', '.join(self.commands)}"
        raise SpecError("arguments", f"{message} (see `{self.prog} --help`)")

    def _unexpected(self, words: list[str]) -> str:
        options = [w for w in words if _is_option(w)]
        others = [w for w in words if not _is_option(w)]
        parts = []
        if options:
            known = [o for a in self._actions for o in a.option_strings
                     if o.startswith("--") and o != "--help"]
            takes = (f"it takes {', '.join(known)}" if known
                     else "options go after the command")
            parts.append(f"`{self.prog}` has no option {', '.join(options)}; {takes}")
        if others:
            parts.append(f"`{self.prog}` takes no argument {', '.join(map(repr, others))}")
        return "; ".join(parts)

    def _unknown_options(self) -> list[str]:
        """The words of this parser's arguments that look like options it does not have."""
        known = self._option_string_actions  # argparse's own table of this parser's options
        nested = self._subparsers is not None  # words after the command are the command's
        found = []
        for word in self._words:
            if word == "--":
                break
            if not _is_option(word):
                if nested:
                    break
                continue
            name = word.split("=", 1)[0]
            abbreviates = name.startswith("--") and any(o.startswith(name) for o in known)
            if name not in known and not abbreviates:
                found.append(word)
        return found


def _is_option(word: str) -> bool:
    return word.startswith("-") and word != "-" and not _NEGATIVE_NUMBER.match(word)


def _lab_file(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("is blank; name a lab file, e.g. inventory/demo.yml")
    return text


def _record_file(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("is blank; name a record file, e.g. one written by "
                                         "`provision record LAB --json > demo.json`")
    return text


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= MAX_TIMEOUT:  # also false for nan
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds more than 0 and at most {MAX_TIMEOUT:g} "
            "(a day); e.g. --timeout 300"
        )
    return seconds


def _add_lab(p: argparse.ArgumentParser) -> None:
    p.add_argument("lab", metavar="LAB", type=_lab_file,
                   help="lab file, e.g. inventory/demo.yml")


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def build_parser() -> argparse.ArgumentParser:
    from provision.cli import hosts
    parser = _Parser(
        prog="provision",
        description="virtio-lab: stand up multiqueue virtio-net labs on Open vSwitch and "
        "libvirt from one file, and prove the data path works.",
    )
    sub = parser.add_commands("command")
    _add_host_commands(sub)
    _add_lab_commands(sub)
    hosts.add_parser(sub)
    return parser


def _add_placement(p: argparse.ArgumentParser, host_help: str) -> None:
    p.add_argument("--host", metavar="NAME", help=host_help)
    p.add_argument("-i", "--inventory", metavar="FILE", action="append", default=[],
                   help="another Ansible inventory with hosts and host variables, e.g. the "
                   "hosts.yml of `provision hosts up` (repeatable)")


def _add_host_commands(sub: Any) -> None:
    """`host check|prepare` and `image build`: this machine and the guest images."""
    from provision.cli import commands as c
    from provision.image.cache import IMAGE_NAMES
    hsub = sub.add_parser("host", help="what this host can do; prepare it"
                          ).add_commands("host_command")
    p = hsub.add_parser("check", help="probe KVM, vhost-net, OVS datapaths, daemons, packages")
    _add_json(p)
    p.set_defaults(func=c.host_check)
    p = hsub.add_parser("prepare", help="install missing packages, start the daemons")
    p.add_argument("--no-install", action="store_true", help="only start daemons")
    p.add_argument("--check", action="store_true",
                   help="print what would be installed, loaded and started; change nothing "
                   "(exit 0 nothing to do, 2 actions pending)")
    p.add_argument("--underlay", metavar="NIC=ADDRESS/PREFIX",
                   help="on the userspace datapath, put NIC and the tunnel address on the OVS "
                   "bridge vlab-underlay (changes NIC: only when asked), e.g. "
                   "eth1=192.168.251.1/24")
    _add_json(p)
    p.set_defaults(func=c.host_prepare)
    isub = sub.add_parser("image", help="the guest images").add_commands("image_command")
    p = isub.add_parser("build", help="build a guest image: the embedded default guest "
                        "(tiny), or the Debian 12 disk image (debian)")
    p.add_argument("name", nargs="?", default="tiny", choices=IMAGE_NAMES, metavar="NAME",
                   help=f"one of {', '.join(IMAGE_NAMES)} (default tiny)")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    p.add_argument("--mirror", metavar="URL",
                   help="the Debian mirror debian is built from "
                   "(default http://deb.debian.org/debian)")
    _add_json(p)
    p.set_defaults(func=c.image_build)


def _add_lab_commands(sub: Any) -> None:
    """The commands that take a lab file."""
    from provision.cli import commands as c
    for name, func, text in (
        ("render", c.render, "print the domain XML and OVS rows; touches nothing"),
        ("plan", c.plan_cmd, "print changes; exit 0 in sync, 2 changes pending"),
        ("up", c.up, "converge the host to the lab"),
        ("status", c.status, "what the lab has on this host now"),
        ("down", c.down, "remove everything the lab owns, nothing else"),
    ):
        p = sub.add_parser(name, help=text)
        _add_lab(p)
        _add_json(p)
        if name in ("plan", "up"):
            _add_placement(p, "place only the VMs whose `host:` is NAME, and the tunnels to "
                           "the other hosts of their bridges (default: all VMs, no tunnels)")
        if name == "up":
            p.add_argument("--timeout", type=_timeout, default=300.0, metavar="SECONDS",
                           help="seconds to wait for each guest agent, more than 0 and at "
                           f"most {MAX_TIMEOUT:g} (default 300)")
            p.add_argument("--expect", type=_record_file, metavar="RECORD",
                           help="a record (`provision record LAB --json`): change nothing "
                           "and exit 4 unless this host would build the same lab")
        p.set_defaults(func=func)
    p = sub.add_parser("record", help="what the lab resolved to when last brought up here")
    _add_lab(p)
    _add_json(p)
    _add_placement(p, "the record of the VMs whose `host:` is NAME (as `up --host NAME` "
                   "placed them)")
    p.set_defaults(func=c.record_cmd)
    p = sub.add_parser("verify", help="prove the data path hop by hop; exit 0 pass, 1 fail")
    _add_lab(p)
    p.add_argument("--json", metavar="FILE", help="write the report as JSON ('-': stdout)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML, one testcase per check")
    p.add_argument("--perf", action="store_true", help="also measure iperf3 throughput")
    _add_placement(p, "verify the VMs whose `host:` is NAME, their tunnels, and their pairs "
                   "with VMs on other hosts (default: every VM, here)")
    p.set_defaults(func=c.verify)


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
    warnings.showwarning = _warn
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
