"""`provision hosts up|exec|status|down`: namespace hypervisors on this machine. Their
arguments are in ``provision.cli.parser``."""

from __future__ import annotations

import argparse

from rich.table import Table

from provision.cli.commands import _emit_json, err, out
from provision.cli.progress import RichProgress


def hosts_up(args: argparse.Namespace) -> int:
    from provision.hypervisors import hosts_up as up

    with RichProgress(err, enabled=not args.json) as progress:
        result = up(args.count, args.inventory, progress)
    if args.json:
        _emit_json(result.to_dict())
        return 0
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    t = Table(title=f"{len(result.hosts)} hypervisor(s) in {result.seconds:.1f} s")
    for col in ("host", "action", "seconds", "management", "underlay", "init pid"):
        t.add_column(col)
    for h in result.hosts:
        t.add_row(h.name, h.action, f"{h.seconds:.1f}", h.mgmt_ip, h.underlay_ip, str(h.pid))
    out.print(t)
    if result.removed:
        out.print(f"removed: {' '.join(result.removed)}")
    out.print(f"inventory: {result.inventory}")
    return 0


def hosts_exec(args: argparse.Namespace) -> int:
    from provision.hypervisors import hosts_exec as run

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    proc = run(args.host, argv, capture=args.json)
    # A command killed by a signal exits 128+N, as in a shell (Python reports -N).
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    if args.json:
        _emit_json({"host": args.host, "argv": argv, "exit_code": code,
                    "stdout": proc.stdout, "stderr": proc.stderr})  # fmt: skip
    return code


def hosts_status(args: argparse.Namespace) -> int:
    from provision.hypervisors import hosts_status as status

    data = status()
    if args.json:
        _emit_json(data)
        return 0
    for warning in data["warnings"]:
        err.print(f"[yellow]warning:[/] {warning}")
    if not data["hypervisors"]:
        out.print("no hypervisors")
        return 0
    names = ("ovsdb-server", "ovs-vswitchd", "virtlogd", "libvirtd", "sshd")
    t = Table(title="hypervisors")
    for col in ("host", "init pid", "management", "underlay", *names):
        t.add_column(col)
    for h in data["hypervisors"]:
        marks = ["[green]up[/]" if h["daemons"][n] else "[red]down[/]" for n in names]
        t.add_row(h["name"], str(h["pid"] or "[red]gone[/]"), h["mgmt_ip"], h["underlay_ip"],
                  *marks)  # fmt: skip
    out.print(t)
    return 0


def hosts_down(args: argparse.Namespace) -> int:
    from provision.hypervisors import hosts_down as down

    with RichProgress(err, enabled=not args.json) as progress:
        result = down(progress)
    if args.json:
        _emit_json(result.to_dict())
    elif not result.changed:
        out.print("no hypervisors: nothing to remove")
    else:
        out.print(f"removed {len(result.hosts)} hypervisor(s) ({' '.join(result.hosts)}), "
                  f"{len(result.links)} link(s) and their state in {result.seconds:.1f} s")
    return 0
