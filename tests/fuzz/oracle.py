"""Running `provision` on a fuzzed input (in-process or as a process) and judging the outcome
against design.md's contract: exit 0/2 for a valid input, 3 (bad input) or 4 (host cannot,
daemon unreachable) with exactly one line ``provision: error: ...`` on stderr otherwise, never
a traceback; JSON on stdout when JSON was asked for.

Each rule is its own ``assert`` line, so that hypothesis reports distinct bugs separately.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.cli import main as cli
from provision.cli.main import build_parser
from provision.core import inventory, spec
from provision.errors import SpecError

from .conftest import REPO, record_time

ERROR_PREFIX = "provision: error: "
WARNING_PREFIX = "provision: warning: "
# A terminal acts on these: in a message built from user input they must arrive escaped.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
PROCESS_TIMEOUT = 20.0  # seconds; the CLI starts in about 1 s here
PROCESS_MEMORY = 1 << 30  # bytes of address space; the CLI runs in well under 512 MiB
LAB_COMMANDS = ("render", "plan", "up", "down", "status", "verify", "graph")
# Where design.md says what a lab name may be after issue 8: no '-' any more.
LAB_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")


@dataclass
class Outcome:
    argv: Sequence[str | bytes]
    code: int
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:
        return (f"provision {' '.join(map(repr, self.argv))} -> exit {self.code} in "
                f"{self.seconds:.2f} s\n--- stdout\n{self.stdout[-2000:]}\n"
                f"--- stderr\n{self.stderr[-4000:]}")


# -- running -------------------------------------------------------------------------------

def run_inprocess(argv: list[str]) -> Outcome:
    """``main(argv)`` with stdout and stderr captured. Exceptions escape on purpose: one that
    escapes main is a traceback a user would see, and hypothesis reports it by origin."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        # A fresh process shows each warning once; reset the registry so every example does.
        warnings.simplefilter("default")
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's --help; anything else is a bug
            assert exc.code == 0 and out.getvalue().startswith("usage:"), (
                f"SystemExit({exc.code!r}) escaped main({argv!r}): {err.getvalue()}")
            code = 0
    seconds = time.monotonic() - t0
    record_time(f"in-process {argv[0] if argv else '(none)'}", seconds, argv)
    return Outcome(argv, code, out.getvalue(), err.getvalue(), seconds)


def _limit_memory() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_AS, (PROCESS_MEMORY, PROCESS_MEMORY))


def run_process(argv: Sequence[str | bytes], env: dict[str, str] | None = None) -> Outcome:
    """``python -m provision.cli`` on this worktree's code, under a time and memory cap."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "provision.cli", *argv], capture_output=True,
            stdin=subprocess.DEVNULL, env=full_env, timeout=PROCESS_TIMEOUT,
            preexec_fn=_limit_memory, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"provision {list(argv)!r} ran longer than {PROCESS_TIMEOUT} s (killed); stderr: "
            f"{(exc.stderr or b'')[-2000:].decode(errors='replace')}") from None
    seconds = time.monotonic() - t0
    record_time(f"process {os.fsdecode(argv[0]) if argv else '(none)'}", seconds, argv)
    outcome = Outcome(argv, proc.returncode, proc.stdout.decode(errors="backslashreplace"),
                      proc.stderr.decode(errors="backslashreplace"), seconds)
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}\n{outcome}"
    return outcome


# -- what may run ---------------------------------------------------------------------------

def parse(argv: Sequence[str]) -> argparse.Namespace | None:
    """The command line as main() will read it; None when it does not parse."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return build_parser().parse_args(argv)
        except (SpecError, SystemExit):
            return None


def rejected(path: str | Path) -> bool:
    """Whether the loader refuses the file with a SpecError. Any other exception is not
    swallowed here: it is a finding of its own (and a renamed loader must not make every
    input look accepted)."""
    return isinstance(load(Path(path)), SpecError)


def safe_to_run(args: argparse.Namespace | None) -> bool:
    """Whether running this command line can change nothing on the host, whatever the code
    under test does wrong after its checks: read-only commands, and `up`/`down` only of a
    file the loader rejects."""
    if args is None:  # main fails parsing it the same way, before any command runs
        return True
    command = args.func.__name__
    if command in ("render", "plan_cmd", "status", "verify", "host_check", "graph"):
        return True
    if command == "host_prepare":
        return bool(args.check)
    if command in ("up", "down"):
        return rejected(args.lab)
    return False  # image build writes the image cache


# -- judging -------------------------------------------------------------------------------

def check(o: Outcome, args: argparse.Namespace | None = None,
          allowed: Sequence[int] = (0, 2, 3, 4)) -> None:
    """The contract for any input. ``args``: the command line as the CLI's own parser read
    it (None when it does not parse), for the JSON rules."""
    assert "Traceback" not in o.stderr, f"a traceback reached the user\n{o}"
    assert o.code in allowed, f"exit {o.code}, expected one of {list(allowed)}\n{o}"
    if o.code in (3, 4):
        check_error_stderr(o)
    if args is not None:
        check_json(o, args)


def check_error_stderr(o: Outcome) -> None:
    lines = o.stderr.split("\n")
    assert o.stderr.endswith("\n"), f"stderr does not end in a newline\n{o}"
    lines.pop()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, f"{len(errors)} 'provision: error:' lines, expected 1\n{o}"
    assert "" not in lines, f"a blank line on stderr beside the error\n{o}"
    assert not [line for line in lines if line.startswith(WARNING_PREFIX)], (
        f"a warning line beside the error: stderr is not exactly one line\n{o}")
    assert len(lines) == 1, f"stderr has {len(lines)} lines, expected exactly 1\n{o}"
    message = errors[0]
    assert not CONTROL.search(message), (
        f"control characters reach the terminal unescaped: {message[:300]!r}\n{o}")


def json_to_stdout(args: argparse.Namespace) -> bool:
    if getattr(args, "command", None) == "verify":
        return args.json == "-"
    return getattr(args, "json", False) is True


def check_json(o: Outcome, args: argparse.Namespace) -> None:
    wanted = json_to_stdout(args)
    if wanted:
        try:
            doc = json.loads(o.stdout)
        except ValueError:
            raise AssertionError(f"JSON asked for on stdout, got none\n{o}") from None
        if o.code in (3, 4):
            assert isinstance(doc, dict) and doc.get("exit_code") == o.code and isinstance(
                doc.get("error"), str), f"the JSON error is not {{error, exit_code}}\n{o}"
    elif o.code in (3, 4) and getattr(args, "command", None) != "verify":
        assert '"exit_code"' not in o.stdout, f"a JSON error on stdout nobody asked for\n{o}"


# -- what the loader must reject (issue 8's rules, independent of the implementation) ------

INT_KEYS = {"vcpus", "memory_mib", "vlan", "queues", "rx_queue_size", "tx_queue_size"}
STR_KEYS = {"name", "backend", "datapath", "datapath_type", "host", "bridge", "ip", "mac"}
OPTIONAL = {"vlan", "queues", "ip", "mac", "rx_queue_size", "tx_queue_size", "trunks"}


def must_reject(doc: Any) -> dict[str, list[str]]:
    """Why the loader must reject this document, by rule, for rules that are easy to state:
    ``types`` (strict: no bool, float or string for a number, no number for a string),
    ``name`` (lab names without '-'), ``address`` (addresses no guest NIC can have). Empty
    lists when no such rule applies (the loader may still reject it for others)."""
    why: dict[str, list[str]] = {"types": [], "name": [], "address": []}
    lab = _dig(doc, "all", "vars", "lab")
    if not _is_map(lab):
        return why
    name = lab.get("name")
    if isinstance(name, str) and not LAB_NAME.match(name.strip()):
        why["name"].append(f"lab.name {name[:40]!r} is not {LAB_NAME.pattern}")
    _typed(lab, "lab", why["types"])
    for section in ("bridges", "vms"):
        for i, item in enumerate(_items(lab.get(section))):
            where = f"lab.{section}[{i}]"
            _typed(item, where, why["types"])
            for j, nic in enumerate(_items(item.get("nics")) if section == "vms" else ()):
                at = f"{where}.nics[{j}]"
                _typed(nic, at, why["types"])
                _address_rules(nic, at, why["address"])
                trunks = nic.get("trunks")
                for k, t in enumerate(trunks if isinstance(trunks, list) else ()):
                    if _is_map(t):
                        _typed(t, f"{at}.trunks[{k}]", why["types"])
                        _address_rules(t, f"{at}.trunks[{k}]", why["address"])
                    elif not _is_int(t):
                        why["types"].append(f"{at}.trunks[{k}] is a {type(t).__name__}")
    return why


def _dig(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not _is_map(doc):
            return None
        doc = doc.get(key)
    return doc


def _is_map(v: Any) -> bool:
    return isinstance(v, dict)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _items(v: Any) -> list[dict]:
    return [x for x in v if _is_map(x)] if isinstance(v, list) else []


def _typed(node: dict, where: str, why: list[str]) -> None:
    for key, value in node.items():
        if value is None and key in OPTIONAL:
            continue
        if key in INT_KEYS and not _is_int(value):
            why.append(f"{where}.{key} is a {type(value).__name__}, not an integer")
        if key in STR_KEYS and not isinstance(value, str):
            why.append(f"{where}.{key} is a {type(value).__name__}, not a string")


def _address_rules(nic: dict, where: str, why: list[str]) -> None:
    ip, mac = nic.get("ip"), nic.get("mac")
    if isinstance(ip, str):
        with contextlib.suppress(ValueError):
            iface = ipaddress.IPv4Interface(ip.strip())
            a, net = iface.ip, iface.network
            special = (a.is_unspecified or a.is_loopback or a.is_multicast or a.is_reserved
                       or a == ipaddress.IPv4Address("255.255.255.255"))
            edge = net.prefixlen <= 30 and a in (net.network_address, net.broadcast_address)
            if special or edge:
                why.append(f"{where}.ip {ip} is not a usable host address")
    if isinstance(mac, str) and mac.strip().lower() == "00:00:00:00:00:00":
        why.append(f"{where}.mac is all zeros")


# -- the loader ----------------------------------------------------------------------------

def load(path: Path) -> spec.Lab | SpecError:
    """The loader's verdict; any exception but SpecError escapes (it is a finding)."""
    t0 = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", spec.SpecDeprecation)
            return inventory.load_inventory(path).lab
    except SpecError as exc:
        return exc
    finally:
        record_time("loader", time.monotonic() - t0, path.name)


def check_spec_error(exc: SpecError) -> None:
    message = str(exc)
    assert "\n" not in message, f"a SpecError of more than one line: {message[:300]!r}"
    assert not CONTROL.search(message), f"a SpecError with control characters: {message[:300]!r}"
    assert message.strip(), "an empty SpecError"


def finite_positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0
