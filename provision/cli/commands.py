"""One function per CLI command: load, call the library, print. Returns the exit code.

Each command imports the library modules it uses when it runs: the engine pulls in pydantic,
jinja2, libvirt and more, which `host check` or `image build` should not wait for. rich's
tables (``rich.table``, with ``fractions`` and ``decimal``) load when a table is drawn: a lab in
sync prints none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.cli.console import LazyConsole
from provision.cli.main import printable
from provision.cli.progress import RichProgress
from provision.errors import HostError, OperationError, SpecError

if TYPE_CHECKING:
    from rich.table import Table

    from provision.core import plan
    from provision.verify.model import VerifyReport

out = LazyConsole()  # piped, 160 columns wide: whole rows for scripts and log readers
err = LazyConsole(stderr=True)


def _table(title: str, **options: Any) -> Table:
    from rich.table import Table

    return Table(title=title, **options)


def escape(text: str) -> str:
    """``text`` shown as it is inside rich markup (rich loads with the markup it escapes)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# -- host and image ---------------------------------------------------------------------
def image_build(args: argparse.Namespace) -> int:
    from provision.image import build as image

    if args.name == "debian":
        return _debian_build(args)
    if args.mirror is not None:
        raise SpecError("--mirror", "only the debian image comes from a mirror; "
                        "drop --mirror, or run `provision image build debian --mirror URL`")
    with err.status("building the embedded guest"):
        img, built = image.build_image(force=args.force)
    if args.json:
        _emit_json(
            {
                "image": img.name,
                "built": built,
                "kernel": str(img.kernel),
                "initrd": str(img.initrd),
                "content_hash": img.content_hash,
                "kernel_version": img.kernel_version,
            }
        )
    else:
        verb = "built" if built else "up to date"
        out.print(  # the cache path comes from VIRTIO_LAB_CACHE: not markup
            f"image {img.name} {verb}: {img.initrd.parent} (sha256 {img.content_hash[:16]},"
            f" kernel {img.kernel_version})", markup=False
        )
    return 0


def _debian_build(args: argparse.Namespace) -> int:
    from provision.image import debian

    start = time.monotonic()
    with err.status("debian: starting") as status:
        def stage(text: str) -> None:  # each stage on its own line, the spinner on the last
            err.print(f"[{time.monotonic() - start:6.1f}s] debian: {text}", style="dim",
                      markup=False, highlight=False)
            status.update(f"debian: {escape(text)}")

        img, built = debian.build_debian(force=args.force, stage=stage,
                                         mirror=args.mirror or debian.DEFAULT_MIRROR)
    if args.json:
        _emit_json({"image": img.name, "built": built, "path": str(img.path),
                    "format": img.format, "content_hash": img.content_hash,
                    "virtual_size": img.virtual_size})
    else:
        verb = "built" if built else "up to date"
        out.print(f"image {img.name} {verb}: {img.path} (sha256 {img.content_hash[:16]}, "
                  f"{img.virtual_size >> 20} MiB virtual, "
                  f"{time.monotonic() - start:.0f} s)", markup=False)
    return 0


# -- lab ---------------------------------------------------------------------------------
def render(args: argparse.Namespace) -> int:
    from provision.engine import lab

    _spec, want = lab.load(args.lab)
    if args.json:
        _emit_json(
            {
                "lab": want.lab,
                "backend": want.backend,
                "domain_type": want.domain_type,
                "accel": want.accel,
                "bridges": [vars(b) for b in want.bridges],
                "ports": [vars(p) for p in want.ports],
                "taps": [vars(t) for t in want.taps],
                "domains": [{"name": d.name, "xml": d.xml} for d in want.domains],
            }
        )
        return 0
    out.print(f"# lab {want.lab}: virtio backend {want.backend}, domain type {want.domain_type}"
              f" ({want.accel})")
    for b in want.bridges:
        out.print(f"# OVS Bridge {b.name}: datapath_type={b.datapath_type}")
    for p in want.ports:
        vlan = f"tag={p.tag}" if p.tag else f"trunks={list(p.trunks)}" if p.trunks else "no vlan"
        out.print(f"# OVS Port {p.name} on {p.bridge}: {vlan} external_ids={p.external_ids}")
    for d in want.domains:
        out.print(d.xml, markup=False, soft_wrap=True)
    return 0


def _print_plan(p: plan.Plan, as_json: bool, extra: dict | None = None) -> None:
    if as_json:
        _emit_json({**p.to_dict(), **(extra or {})})
        return
    for note in p.notes:  # notes quote the lab file (host names): never markup
        out.print(f"[dim]note: {escape(printable(note))}[/]")
    if p.in_sync:
        out.line(f"lab {p.lab}: in sync, nothing to change")
        return
    t = _table(f"lab {p.lab}: {len(p.changes)} change(s)")
    for col in ("phase", "action", "kind", "target", "reason"):
        t.add_column(col)
    for c in p.changes:
        t.add_row(c.phase, c.action, c.kind, c.target, c.reason)
    out.print(t)


def plan_cmd(args: argparse.Namespace) -> int:
    from provision.engine import lab

    result = lab.plan_lab(args.lab, args.host, extra=args.inventory)
    _print_plan(result.plan, args.json, {"backend": result.backend})
    return 0 if result.plan.in_sync else 2


def up(args: argparse.Namespace) -> int:
    from provision.engine import lab, record_store

    def show(p: plan.Plan) -> None:
        if not args.json:
            _print_plan(p, False)

    # A bad --expect file is exit 3 before anything else is read or done.
    expect = (None if args.expect is None
              else record_store.read_record(args.expect, "--expect"))
    with RichProgress(err, enabled=not args.json) as progress:
        result = lab.up_lab(args.lab, progress, agent_timeout=args.timeout, on_plan=show,
                            host=args.host, extra=args.inventory, expect=expect,
                            expect_source=str(args.expect))
    if args.json:
        _emit_json(result.to_dict())
    elif not result.changed:
        _print_plan(result.plan, False)
        out.line(f"no changes made; virtio backend {result.backend}, domain type "
                 f"{result.domain_type} ({result.accel}; {result.seconds:.2f} s)")
    else:
        out.print(f"lab {result.lab} up: {len(result.plan.changes)} change(s) applied in "
                  f"{result.seconds:.1f} s; virtio backend {result.backend}, domain type "
                  f"{result.domain_type} ({result.accel}); every guest agent answers")
    return 0


def down(args: argparse.Namespace) -> int:
    from provision.engine import lab

    def show(p: plan.Plan) -> None:
        if not args.json:
            _print_plan(p, False)

    with RichProgress(err, enabled=not args.json) as progress:
        result = lab.down_lab(args.lab, progress, on_plan=show)
    if args.json:
        _emit_json(result.to_dict())
    elif not result.changed:
        out.print(f"lab {result.lab}: nothing on this host, nothing removed")
    else:
        out.print(f"lab {result.lab} down: {len(result.plan.changes)} object(s) removed")
    return 0


def record_cmd(args: argparse.Namespace) -> int:
    from rich.text import Text

    from provision.core.spec import spec_hash
    from provision.engine import lab, record, record_store

    wanted = lab.lab_inventory(args.lab, args.inventory).placed(args.host)  # exit 3 first
    rec = record_store.load_record(wanted.name, args.lab)
    if args.host is not None and rec["placement"] != args.host:
        raise HostError(f"lab {wanted.name} was last brought up here for "
                        f"{_placement_words(rec['placement'])}, not --host {args.host}: run "
                        f"`provision up LAB --host {args.host}` to record that placement")
    if args.json:
        _emit_json(rec)
        return 0
    if rec["spec_hash"] != spec_hash(wanted):
        out.print(f"[dim]note: the lab file has changed since (spec hash {spec_hash(wanted)}; "
                  f"the record has {escape(printable(rec['spec_hash']))})[/]")
    t = _table(f"lab {wanted.name}: as last brought up here")
    for col in ("field", "value", "compared by up --expect"):
        t.add_column(col, overflow="fold")
    for key, value, must in record.record_rows(rec):
        t.add_row(Text(key), Text(printable(value)), "must match" if must else "note")
    out.print(t)
    return 0


def _placement_words(placement: str | None) -> str:
    from provision.engine import record

    return record.NO_HOST if placement is None else f"--host {printable(placement)}"


def status(args: argparse.Namespace) -> int:
    from provision.cli.status import lab_status, print_status
    from provision.engine import converge, lab

    wanted = lab.lab_spec(args.lab)  # a bad file is exit 3 whether or not the daemons answer
    with converge.open_backends() as b:
        data = lab_status(b, wanted)
    if args.json:
        _emit_json(data)
    else:
        print_status(out, data)
    return 0


def verify(args: argparse.Namespace) -> int:
    from provision.verify import output, verify_lab

    to_stdout = args.json == "-"
    files = [(flag, path) for flag, path in (("--json", args.json), ("--junit", args.junit),
                                              ("--html", args.html))
             if path is not None and not (flag == "--json" and to_stdout)]
    for flag, path in files:  # before the work: a typo must not cost a whole verify
        check_output_path(flag, path)
    with RichProgress(err, enabled=not to_stdout) as progress:
        report = verify_lab(args.lab, progress, perf=args.perf, host=args.host,
                            extra=args.inventory)
    if to_stdout:
        print(output.to_json(report))
    else:
        output.print_report(out, report)
    def write_html(report: VerifyReport, path: str) -> None:
        _write_html(report, path, args)

    writers = {"--json": output.write_json, "--junit": output.write_junit, "--html": write_html}
    for flag, path in files:
        try:
            writers[flag](report, path)
        except OSError as exc:  # checked before the run, so something changed meanwhile
            verdict = "passed" if report.passed else "failed"
            raise OperationError(f"{flag}: cannot write {path}: {exc.strerror or exc} "
                                 f"(verify {verdict}; the report is not saved)") from None
    return 0 if report.passed else 1


def _write_html(report: VerifyReport, path: str, args: argparse.Namespace) -> None:
    """verify --html: the page, with the lab's picture as the host holds it after the run,
    coloured by this report. When the picture cannot be drawn (no `dot`, a daemon gone
    meanwhile) the page says why in its place; the report itself is still written."""
    from provision.cli.graph import lab_dot_now
    from provision.report.graph import dot_to_svg
    from provision.report.html import write_html

    data = report.to_dict()
    try:
        svg = dot_to_svg(lab_dot_now(args.lab, data, args.host, args.inventory))
    except Exception as exc:  # the picture is an extra: whatever breaks it, keep the report
        write_html(data, path, None, topology_note=f"The picture could not be drawn: {exc}")
        return
    write_html(data, path, svg)


def schema(args: argparse.Namespace) -> int:
    from provision.core.schema import schema_json

    text = schema_json()  # JSON whatever the flags: there is no other form
    if args.output is None:
        sys.stdout.write(text)
        return 0
    check_output_path("--output", args.output)
    try:
        Path(args.output).write_text(text)
    except OSError as exc:
        raise OperationError(f"--output: cannot write {args.output}: "
                             f"{exc.strerror or exc}") from None
    return 0


OUTPUT_EXAMPLES = {"--json": "report.json", "--junit": "junit.xml", "--html": "report.html",
                   "--output": "lab.schema.json"}


def check_output_path(flag: str, path: str) -> None:
    """SpecError (exit 3) naming ``flag`` unless ``path`` can be written as a file: its
    directory exists and is writable, and it is not itself a directory."""
    target = Path(path)
    parent = target.parent
    if not path:
        raise SpecError(flag, "the file name is empty; name a file, e.g. "
                        f"{OUTPUT_EXAMPLES.get(flag, 'report.json')}")
    if "\0" in path:
        raise SpecError(flag, "the file name contains a NUL character")
    if target.is_dir():
        example = target / OUTPUT_EXAMPLES.get(flag, "report.json")
        raise SpecError(flag, f"{path} is a directory; name a file in it, e.g. {example}")
    if not parent.is_dir():
        raise SpecError(flag, f"cannot write {path}: directory {parent} does not exist; "
                        "create it or name a file in an existing directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (
        target.exists() and not os.access(target, os.W_OK)
    ):
        raise SpecError(flag, f"cannot write {path}: permission denied or read-only file "
                        "system; name a file you can write")
