"""`provision --help` answers at once: building the parser imports none of the heavy libraries,
and each command still finds its function when it runs (issue 11, "Speed a user feels")."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from provision.cli.parser import Command, build_parser

REPO = Path(__file__).resolve().parents[2]
# What the commands use and the parser must not import: each costs 20 to 150 ms at start.
HEAVY = ("pyroute2", "libvirt", "libvirt_qemu", "ovsdbapp", "ovs", "pydantic", "pydantic_core",
         "rich", "jinja2", "pycdlib", "yaml", "graphviz")
PARSE = """
import contextlib, io
from provision.cli.main import build_parser, main
build_parser().parse_args(["up", "lab.yml", "--timeout", "30"])
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
main(["plan"])  # a missing argument: the error path too
"""


def _imported(code: str, packages: tuple[str, ...]) -> list[str]:
    """The modules of ``packages`` in sys.modules after ``code`` ran in a fresh process."""
    probe = (f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules "
             f"if m.split('.')[0] in {packages!r})))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    found: list[str] = json.loads(proc.stdout.splitlines()[-1])
    return found


def test_the_parser_and_help_import_no_heavy_library() -> None:
    assert _imported(PARSE, HEAVY) == [], "imported while parsing the command line"


def test_the_engine_imports_pyroute2_and_pycdlib_only_when_used() -> None:
    """render, record and host check touch no tap and write no seed: pyroute2 (all of it,
    ~130 ms) and pycdlib load on first use."""
    code = "import provision.cli.commands, provision.engine.lab, provision.cli.status"
    assert _imported(code, ("pyroute2", "pycdlib")) == []


def test_only_the_graph_command_imports_graphviz() -> None:
    """graphviz (~35 ms) is for `provision graph`: the other commands' modules, verify
    included, do not load it; the graph command's module does."""
    code = ("import provision.cli.commands, provision.cli.status, provision.verify, "
            "provision.cli.graph, provision.report.marks")
    assert _imported(code, ("graphviz",)) == []
    assert "graphviz" in _imported("import provision.report.graph", ("graphviz",))


def test_reading_links_and_the_state_directory_import_no_pyroute2() -> None:
    """plan, up, verify and status read the taps (``backends.netlink``) and the state
    directory; only writing a link imports pyroute2, and with it asyncio (~130 ms)."""
    code = ("import provision.engine.lab, provision.hypervisors\n"
            "from provision.backends import taps\n"
            "from provision.host.statedir import state_dir\n"
            "taps.observe_taps('demo', ['lo']), taps.observe_tap('lo'), state_dir('records')")
    assert _imported(code, ("pyroute2", "asyncio")) == []


def test_a_lab_in_sync_loads_no_table_progress_bar_or_daemon_wait() -> None:
    """`plan` and `up` of a lab in sync (issue 11's no-op `up`) draw no table, start no
    progress display, print their lines without rich, and wait for no daemon: rich (its
    console ~50 ms; rich.table with fractions and decimal; rich.progress) and
    provision.host.ready (with xml.sax, urllib.request, http.client) load only when there is
    something to draw or change."""
    code = ("import contextlib, io\n"
            "from provision.cli import commands\n"
            "from provision.cli.progress import RichProgress\n"
            "from provision.core.changes import Plan\n"
            "import provision.engine.lab\n"
            "with contextlib.redirect_stdout(io.StringIO()), RichProgress(commands.err):\n"
            "    commands._print_plan(Plan('demo'), False)")
    found = _imported(code, ("rich", "provision", "xml", "urllib", "http"))
    lazy = ("rich", "provision.host.ready", "xml.sax", "urllib.request", "http.client")
    assert [m for m in found if m.startswith(lazy)] == []


OBSERVE_OVS = """
import json, os, socket, tempfile, threading
import provision.engine.lab
from provision.backends.ovs import Ovs
path = os.path.join(tempfile.mkdtemp(), "db.sock")
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(1)
def answer():
    conn, _ = srv.accept()
    with conn:
        conn.recv(65536)
        conn.sendall(json.dumps({"id": 0, "error": None, "result": [{"rows": []}] * 3}).encode())
threading.Thread(target=answer, daemon=True).start()
ovs = Ovs("unix:" + path)
assert ovs.observe("demo", [], []) == ({}, {})
ovs.close()
"""


def test_observing_ovs_imports_no_ovsdbapp() -> None:
    """`plan` and a no-op `up` read OVS with one JSON-RPC select: ovsdbapp and python-ovs's
    IDL (~0.1 s with its first sync) load only to apply changes."""
    assert _imported(OBSERVE_OVS, ("ovs", "ovsdbapp")) == []


def test_the_progress_display_and_tables_load_when_used() -> None:
    code = ("import contextlib, io\n"
            "from provision.cli import commands\n"
            "from provision.cli.progress import RichProgress\n"
            "from provision.core.changes import Change, Plan\n"
            "with RichProgress(commands.err, enabled=False) as progress:\n"
            "    progress.advance(progress.task('taps', 1))\n"
            "tap = Change('taps', 'create', 'tap', 'demo-vm1-0', None, {}, 'absent')\n"
            "plan = Plan('demo', [tap])\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    commands._print_plan(plan, False)")
    found = _imported(code, ("rich",))
    assert {"rich.progress", "rich.table"} <= set(found)


def _commands(parser: argparse.ArgumentParser, words: str = "") -> Iterator[tuple[str, Any]]:
    func = parser.get_default("func")
    if func is not None:
        yield words, func
    for action in parser._actions:  # argparse keeps its subparsers there and nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{words} {name}".strip())


def test_every_command_names_a_function_that_exists() -> None:
    found = dict(_commands(build_parser()))
    assert {"up", "plan", "host check", "image build", "hosts exec", "graph"} <= set(found)
    for words, func in found.items():
        assert isinstance(func, Command), words
        target = getattr(importlib.import_module(func.module), func.__name__, None)
        assert callable(target), f"`provision {words}`: {func!r} names no function"


def test_a_command_is_named_as_its_function_is() -> None:
    args = build_parser().parse_args(["hosts", "exec", "hv1", "--", "true"])
    assert args.func.__name__ == "hosts_exec"
    assert args.func.module == "provision.cli.hosts"


def test_lab_commands_never_load_the_vhost_user_probe() -> None:
    """The vhost-user probe (two `--version` runs, the private QEMU's manifest) belongs to
    `host check` and `host prepare`: the engine, verify and the commands module do not import
    it, and only a full probe (``probe_host``) calls it."""
    code = ("import provision.cli.commands, provision.engine.lab, provision.verify.runner, "
            "provision.host.probe")
    found = _imported(code, ("provision",))
    assert [m for m in found if m in ("provision.host.vhost_user",
                                      "provision.host.qemu_private")] == []


def test_the_command_freezes_its_heap_before_exiting_and_a_caller_s_main_does_not() -> None:
    """The interpreter's final collections over pydantic's models cost ~0.1 s at exit; the
    `provision` process freezes its heap instead. A test calling ``main(argv)`` keeps its
    collector."""
    code = ("import contextlib, gc, io, sys\n"
            "from provision.cli.main import main\n"
            "with contextlib.redirect_stderr(io.StringIO()):\n"
            "    main(['plan'])\n"
            "    assert gc.get_freeze_count() == 0\n"
            "    sys.argv = ['provision', 'plan']\n"
            "    main()\n"
            "assert gc.get_freeze_count() > 0")
    _imported(code, ())  # in a fresh process, which fails on a false assertion
