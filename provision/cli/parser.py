"""The command line's grammar: every command of ``provision``, its arguments and their checks.

Building the parser imports none of the libraries the commands use (pydantic, rich, libvirt,
ovsdbapp, pyroute2, jinja2): each command is a ``Command``, imported when it runs, so
``--help`` and a mistyped argument answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, NoReturn

from provision.errors import SpecError
from provision.image.cache import IMAGE_NAMES  # cache imports the standard library only

# --timeout's upper bound: a day is more than any guest needs, and far larger values overflow
# the C timeouts of `up`'s waits (threading, sockets).
MAX_TIMEOUT = 86400.0
# argparse treats these words as values, not options (`--timeout -5` reaches the type check).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


class Command:
    """A command's function, named by module and attribute and imported when the command runs.

    ``args.func(args)`` runs it; ``args.func.__name__`` is the function's name, as it would be
    for the function itself.
    """

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.__name__ = name

    def __call__(self, args: argparse.Namespace) -> int:
        func = getattr(importlib.import_module(self.module), self.__name__)
        code: int = func(args)
        return code

    def __repr__(self) -> str:
        return f"Command({self.module!r}, {self.__name__!r})"


def _commands(name: str) -> Command:
    return Command("provision.cli.commands", name)


def _host(name: str) -> Command:
    return Command("provision.cli.host", name)


def _hosts(name: str) -> Command:
    return Command("provision.cli.hosts", name)


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
    """The parser of the whole command line; ``args.func(args)`` runs the command parsed."""
    parser = _Parser(
        prog="provision",
        description="virtio-lab: stand up multiqueue virtio-net labs on Open vSwitch and "
        "libvirt from one file, and prove the data path works.",
    )
    sub = parser.add_commands("command")
    _add_host_commands(sub)
    _add_lab_commands(sub)
    _add_hosts_commands(sub)
    p = sub.add_parser("schema", help="print the lab file's JSON Schema, for editors")
    p.add_argument("--output", metavar="FILE",
                   help="write it to FILE instead, e.g. schema/lab.schema.json")
    p.add_argument("--json", action="store_true", help="accepted: the output is JSON anyway")
    p.set_defaults(func=_commands("schema"))
    return parser


def _add_placement(p: argparse.ArgumentParser, host_help: str) -> None:
    p.add_argument("--host", metavar="NAME", help=host_help)
    p.add_argument("-i", "--inventory", metavar="FILE", action="append", default=[],
                   help="another Ansible inventory with hosts and host variables, e.g. the "
                   "hosts.yml of `provision hosts up` (repeatable)")


def _add_host_commands(sub: Any) -> None:
    """`host check|prepare` and `image build`: this machine and the guest images."""
    hsub = sub.add_parser("host", help="what this host can do; prepare it"
                          ).add_commands("host_command")
    p = hsub.add_parser("check", help="probe KVM, vhost-net, OVS datapaths, daemons, packages")
    _add_json(p)
    p.set_defaults(func=_host("host_check"))
    p = hsub.add_parser("prepare", help="install missing packages, start the daemons")
    p.add_argument("--no-install", action="store_true", help="only start daemons")
    p.add_argument("--with", dest="with_", metavar="FEATURE", action="append", default=[],
                   choices=["vhost-user"],
                   help="also prepare for vhost-user labs: OVS built with DPDK (apt, from "
                   "bookworm; the host's ovs-vswitchd stays the one that runs) and QEMU "
                   "10.0.2 from bookworm-backports unpacked under /opt/virtio-lab")
    p.add_argument("--check", action="store_true",
                   help="print what would be installed, loaded and started; change nothing "
                   "(exit 0 nothing to do, 2 actions pending)")
    p.add_argument("--underlay", metavar="NIC=ADDRESS/PREFIX",
                   help="on the userspace datapath, put NIC and the tunnel address on the OVS "
                   "bridge vlab-underlay (changes NIC: only when asked), e.g. "
                   "eth1=192.168.251.1/24")
    _add_json(p)
    p.set_defaults(func=_host("host_prepare"))
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
    p.set_defaults(func=_commands("image_build"))


def _add_lab_commands(sub: Any) -> None:
    """The commands that take a lab file."""
    for name, func, text in (
        ("render", "render", "print the domain XML and OVS rows; touches nothing"),
        ("plan", "plan_cmd", "print changes; exit 0 in sync, 2 changes pending"),
        ("up", "up", "converge the host to the lab"),
        ("status", "status", "what the lab has on this host now"),
        ("down", "down", "remove everything the lab owns, nothing else"),
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
        p.set_defaults(func=_commands(func))
    p = sub.add_parser("record", help="what the lab resolved to when last brought up here")
    _add_lab(p)
    _add_json(p)
    _add_placement(p, "the record of the VMs whose `host:` is NAME (as `up --host NAME` "
                   "placed them)")
    p.set_defaults(func=_commands("record_cmd"))
    p = sub.add_parser("verify", help="prove the data path hop by hop; exit 0 pass, 1 fail")
    _add_lab(p)
    p.add_argument("--json", metavar="FILE", help="write the report as JSON ('-': stdout)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML, one testcase per check")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML page: summary, "
                   "topology, packets per queue, checks by hop")
    p.add_argument("--perf", action="store_true", help="also measure iperf3 throughput")
    _add_placement(p, "verify the VMs whose `host:` is NAME, their tunnels, and their pairs "
                   "with VMs on other hosts (default: every VM, here)")
    p.set_defaults(func=_commands("verify"))
    _add_graph(sub)


def _add_graph(sub: Any) -> None:
    """`provision graph`: the lab as a picture (``provision.cli.graph``)."""
    p = sub.add_parser("graph", help="the lab as a picture: DOT, or SVG with --svg; coloured "
                       "by a verify report with --verify")
    _add_lab(p)
    form = p.add_mutually_exclusive_group()
    form.add_argument("--svg", metavar="FILE", help="write the picture as SVG to FILE")
    form.add_argument("--dot", action="store_true",
                      help="print the picture's Graphviz DOT source (the default)")
    p.add_argument("--verify", metavar="REPORT",
                   help="colour each element by the checks of REPORT, the JSON of "
                   "`provision verify LAB --json REPORT`")
    p.add_argument("--json", action="store_true",
                   help='print {"dot": TEXT}, or {"svg": FILE} with --svg')
    _add_placement(p, "this host is NAME: draw its VMs as it holds them, and the VMs of the "
                   "lab's other hosts from the lab file, one cluster per host (default: "
                   "every VM, here)")
    p.set_defaults(func=Command("provision.cli.graph", "graph"))


def _add_hosts_commands(sub: Any) -> None:
    """`provision hosts up|exec|status|down`: namespace hypervisors (``provision.cli.hosts``)."""
    hosts = sub.add_parser("hosts", help="N namespace hypervisors on this machine")
    hsub = hosts.add_subparsers(dest="hosts_command", required=True,
                                parser_class=type(hosts))  # fmt: skip
    p = hsub.add_parser("up", help="make hypervisors hv1..hvN and write their inventory")
    p.add_argument("count", metavar="N", type=int, help="how many hypervisors (1 to 8)")
    p.add_argument("--inventory", metavar="FILE", required=True, type=Path,
                   help="write the Ansible inventory of the hypervisors here")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_hosts("hosts_up"))
    p = hsub.add_parser("exec", help="run a command inside one hypervisor: exec hvK -- CMD")
    p.add_argument("--json", action="store_true",
                   help="capture the output and print it as JSON")
    p.add_argument("host", metavar="hvK", help="the hypervisor")
    p.add_argument("argv", metavar="CMD", nargs=argparse.REMAINDER,
                   help="the command and its arguments, after --")
    p.set_defaults(func=_hosts("hosts_exec"))
    for name, text in (
        ("status", "the hypervisors and whether their daemons answer"),
        ("down", "stop and remove every hypervisor, its links and its state"),
    ):
        p = hsub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(func=_hosts(f"hosts_{name}"))
