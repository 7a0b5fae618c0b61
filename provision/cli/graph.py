"""``provision graph``: the lab as a picture of what this host holds now (``report.graph``),
coloured by a verify report. Observes only, as ``status`` does (no lab lock, no change); reads
its inputs (the lab file, ``--verify``, the ``--svg`` path) before it asks the daemons.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from provision.core.observed import ObservedLab
from provision.core.owner import domain_name, nic_mac
from provision.core.spec import Lab
from provision.errors import OperationError, SpecError


def graph(args: argparse.Namespace) -> int:
    from provision.cli.commands import check_output_path
    from provision.engine.lab import lab_inventory
    from provision.report import graph as picture
    from provision.report.marks import read_report

    if args.svg is not None:
        check_output_path("--svg", args.svg)
    report = read_report(args.verify) if args.verify is not None else None
    name = lab_inventory(args.lab, args.inventory).lab.name
    if report is not None and report["lab"] != name:
        raise SpecError(f"--verify {args.verify}", f"is the report of lab {report['lab']!r}, "
                        f"not of lab {name} ({args.lab}); pass the report of "
                        f"`provision verify {args.lab} --json FILE`")
    dot = lab_dot_now(args.lab, report, args.host, args.inventory)
    if args.svg is None:
        print(json.dumps({"dot": dot}) if args.json else dot, end="\n" if args.json else "")
        return 0
    _write(args.svg, picture.dot_to_svg(dot))
    if args.json:
        print(json.dumps({"svg": args.svg}))
    else:
        print(f"lab {name}: picture written to {args.svg}")
    return 0


def lab_dot_now(lab_file: str, report: dict | None, host: str | None,
                inventory: list[str] | None) -> str:
    """The DOT picture of lab `lab_file` as this host holds it now, coloured by `report`."""
    from provision.engine.converge import observe_lab, open_backends
    from provision.report import graph as picture
    from provision.verify.runner import load_for_verify

    whole, _here, want, _caps = load_for_verify(lab_file, host, inventory or ())
    with open_backends() as b:
        observed = observe_lab(b, want.lab, want)
    backends = observed_backends(whole, observed)
    return picture.lab_dot(whole, observed, report, host=host, backends=backends)


def _write(path: str, svg: str) -> None:
    try:
        Path(path).write_text(svg)
    except OSError as exc:  # checked before the work, so something changed meanwhile
        raise OperationError(f"--svg: cannot write {path}: {exc.strerror or exc}") from None


def observed_backends(lab: Lab, observed: ObservedLab) -> dict[str, str]:
    """The virtio backend QEMU really uses for each NIC ("vm/i") of the lab's running
    domains, read from /proc as verify's QEMU hop reads it (never from the domain XML)."""
    from provision.verify import parse, qemu

    out: dict[str, str] = {}
    for vm in lab.vms:
        dom = observed.domains.get(domain_name(lab.name, vm.name))
        if dom is None or not dom.running:
            continue
        proc = qemu.read_qemu(dom.name)
        if isinstance(proc, str):
            continue
        nics = parse.qemu_nics(proc.argv)
        for i, nic in enumerate(vm.nics):
            found = nics.get(nic_mac(lab.name, vm.name, i, nic.mac))
            if found is not None:
                out[f"{vm.name}/{i}"] = parse.nic_backend(found, proc.fd_links)
    return out
