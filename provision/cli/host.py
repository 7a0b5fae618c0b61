"""`provision host check` and `host prepare`: this machine, what it can do and readying it.
Like every command module, it imports the library modules it uses when it runs."""

from __future__ import annotations

import argparse

from provision.cli.commands import _emit_json, _table, err, out


def host_check(args: argparse.Namespace) -> int:
    from provision.host.probe import probe_host

    caps = probe_host()
    if args.json:
        _emit_json(caps.to_dict())
    else:
        t = _table("host", show_header=False)
        t.add_row("KVM", _yesno(caps.kvm_usable, caps.kvm_reason))
        t.add_row("vhost-net", _yesno(caps.vhost_net, caps.vhost_reason))
        t.add_row("OVS kernel datapath", _yesno(caps.ovs_kernel_datapath, caps.ovs_reason))
        t.add_row("OVS datapath types", ", ".join(caps.ovs_datapath_types) or "(ovs-vswitchd down)")
        t.add_row(
            "chosen",
            f"domain type {caps.domain_type}, virtio backend "
            f"{caps.best_backend}, bridges {caps.best_ovs_datapath_type}",
        )
        t.add_row("virtio backend", f"{caps.best_backend} ({caps.backend_reason})")
        unknown = "[red]unknown[/] (libvirtd did not say; run `provision host prepare`)"
        t.add_row("emulator", caps.emulator or unknown)
        t.add_row("lab domains run", f"{caps.accel}, by {caps.domain_emulator or 'unknown'}"
                  + ("" if caps.accel != "tcg multi-threaded"
                     else " [yellow](run `provision host prepare` for single-threaded TCG)[/]"))
        t.add_row("machine", caps.machine or unknown)
        if caps.vhost_user is not None:  # informational: no lab asks for vhost-user yet
            t.add_row("vhost-user labs", _yesno(caps.vhost_user.ready, caps.vhost_user.reason))
        for name, up in sorted(caps.daemons.items()):
            t.add_row(name, "running" if up else "[red]not running[/]")
        for name, version in sorted(caps.versions.items()):
            t.add_row(f"{name} version", version)
        t.add_row("missing packages", " ".join(caps.missing_packages) or "none")
        out.print(t)
    return 4 if caps.missing_packages else 0


def _yesno(ok: bool, reason: str) -> str:
    return f"[green]yes[/] ({reason})" if ok else f"[yellow]no[/] ({reason})"


def host_prepare(args: argparse.Namespace) -> int:
    if args.check:
        return _host_prepare_check(args)
    from provision.host.prepare import prepare_host
    from provision.host.probe import probe_ovs_kernel_datapath
    from provision.host.underlay import ensure_underlay, parse_underlay

    underlay = parse_underlay(args.underlay) if args.underlay else None  # bad input: no change
    log = (lambda s: None) if args.json else (lambda s: err.print(s, style="dim", markup=False))
    result = prepare_host(log=log, install=not args.no_install,
                          with_vhost_user="vhost-user" in args.with_)
    moved = ensure_underlay(*underlay, probe_ovs_kernel_datapath()[0], log) if underlay else []
    if args.json:
        _emit_json({**result.to_dict(), "underlay": moved})
    else:  # each action was logged as it happened
        n = len(result.actions) + len(moved)
        out.print(f"host ready: {n} action(s) taken" if n else "host ready: nothing to do")
    return 0


def _host_prepare_check(args: argparse.Namespace) -> int:
    from provision.host.plan import plan_host
    from provision.host.probe import probe_host

    host_plan = plan_host(probe_host(kvm_probe_timeout=0), install=not args.no_install,
                          with_vhost_user="vhost-user" in args.with_)
    if args.json:
        _emit_json(host_plan.to_dict())
    elif not host_plan.changed:
        out.print("host ready: nothing to do")
    else:
        t = _table(f"host: {len(host_plan.actions)} action(s) pending")
        for col in ("action", "target", "reason"):
            t.add_column(col)
        for a in host_plan.actions:
            t.add_row(a.kind, a.target, a.reason)
        out.print(t)
    return 2 if host_plan.changed else 0
