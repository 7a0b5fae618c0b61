"""The ``provision`` command: parses arguments, calls the library, prints (rich or --json),
and turns typed exceptions into design.md's exit codes. The only place that exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from provision.errors import ProvisionError, SpecError

EXIT_OK, EXIT_FAIL, EXIT_PENDING, EXIT_INPUT, EXIT_HOST = 0, 1, 2, 3, 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would exit 2, which means "pending"
        raise SpecError("arguments", f"{message} (see `{self.prog} --help`)")


def _add_lab(p: argparse.ArgumentParser) -> None:
    p.add_argument("lab", help="lab file, e.g. inventory/demo.yml")


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def build_parser() -> argparse.ArgumentParser:
    from provision.cli import commands as c
    parser = _Parser(
        prog="provision",
        description="virtio-lab: stand up multiqueue virtio-net labs on Open vSwitch and "
        "libvirt from one file, and prove the data path works.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    host = sub.add_parser("host", help="what this host can do; prepare it")
    hsub = host.add_subparsers(dest="host_command", required=True, parser_class=_Parser)
    p = hsub.add_parser("check", help="probe KVM, vhost-net, OVS datapaths, daemons, packages")
    _add_json(p)
    p.set_defaults(func=c.host_check)
    p = hsub.add_parser("prepare", help="install missing packages, start the daemons")
    p.add_argument("--no-install", action="store_true", help="only start daemons")
    p.add_argument("--check", action="store_true",
                   help="print what would be installed, loaded and started; change nothing "
                   "(exit 0 nothing to do, 2 actions pending)")
    _add_json(p)
    p.set_defaults(func=c.host_prepare)

    image = sub.add_parser("image", help="the embedded guest")
    isub = image.add_subparsers(dest="image_command", required=True, parser_class=_Parser)
    p = isub.add_parser("build", help="build the embedded default guest (tiny)")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    _add_json(p)
    p.set_defaults(func=c.image_build)

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
            p.add_argument("--host", metavar="NAME",
                           help="place only the VMs whose `host:` is NAME (default: all VMs)")
        if name == "up":
            p.add_argument(
                "--timeout",
                type=float,
                default=300.0,
                help="seconds to wait for each guest agent (default 300)",
            )
        p.set_defaults(func=func)
    p = sub.add_parser("verify", help="prove the data path hop by hop; exit 0 pass, 1 fail")
    _add_lab(p)
    p.add_argument("--json", metavar="FILE", help="write the report as JSON ('-': stdout)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML, one testcase per check")
    p.add_argument("--perf", action="store_true", help="also measure iperf3 throughput")
    p.set_defaults(func=c.verify)
    from provision.cli import hosts
    hosts.add_parser(sub)
    return parser


def _warn(message: Warning | str, category: type[Warning], *_args: Any, **_kw: Any) -> None:
    """Library warnings (a deprecated lab key) as one line each on stderr."""
    print(f"provision: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _warn
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[Any], int] = args.func
        return func(args)
    except ProvisionError as exc:
        _fail(str(exc), exc.exit_code, argv)
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (`| head`); nothing left to say
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_FAIL, argv)
        return EXIT_FAIL


def _fail(message: str, code: int, argv: Sequence[str] | None) -> None:
    words = list(sys.argv[1:] if argv is None else argv)
    if "--json" in words:
        print(json.dumps({"error": message, "exit_code": code}))
    print(f"provision: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
