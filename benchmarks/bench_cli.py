"""Benchmark: the CLI as a user feels it: wall time of `provision` as a subprocess, process
start included, beside baselines measured in the same run. Figures are printed beside the
targets, never asserted; exit 1 when a command or a verify failed, or a no-op `up`
changed something.

- `provision --help` (median of 5), beside `python -c pass`, `virsh --version` and
  `ovs-vsctl --version` (those installed).
- Per size N (--sizes): a lab file in a temporary directory (lab vlb<N>x<4 random hex>,
  bridge br-<lab>, N `tiny` VMs of 128 MiB and --vcpus, one NIC of --queues each on VLAN
  100 or 200 of one subnet), then `up`, no-op `up` (median of 3; its JSON must say changed
  false), `verify` (median of --verify-runs; counts from `verify --json FILE`), and `down`
  in a `finally`.
- --demo: inventory/demo.yml the same way, but `down` only if `provision status --json`
  showed nothing of it before: a lab the user had is left up.
- --dry-run: the lab files, and `provision plan --json` on each (median of 3); changes nothing.

Commands run as `sys.executable -m provision.cli` with this checkout as the working
directory (--script: the `provision` console script beside sys.executable instead).
Run: .venv/bin/python benchmarks/bench_cli.py [--sizes 4 16 32] [--demo] [--dry-run] [--json F]
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "inventory" / "demo.yml"
HELP_RUNS, NOOP_RUNS, PLAN_RUNS = 5, 3, 3
VLANS = (100, 200)
NETWORK = "10.89.0.0"  # the guests' subnet: /24 when N fits, else /16
TARGETS = {"help_s": 0.15, "noop_up_demo_s": 0.35, "noop_up_16_s": 0.5,
           "verify_demo_s": 3.0, "verify_16_s": 15.0}
OPS = ("up", "noop_up", "verify", "down")


class CliError(RuntimeError):
    """A `provision` command exited with a code it should not have."""


def lab_name(vms: int) -> str:
    """vlb<N>x<4 random hex>: at most 12 characters (spec.LAB_NAME) for N < 10000, and no
    user's lab is named so."""
    return f"vlb{vms}x{secrets.token_hex(2)}"


def lab_document(name: str, vms: int, vcpus: int = 1, queues: int | None = None
                 ) -> dict[str, Any]:
    """A lab file (an Ansible inventory with the lab in all.vars.lab) of ``vms`` VMs."""
    prefix = 24 if vms <= 254 else 16
    net = ipaddress.IPv4Network(f"{NETWORK}/{prefix}")
    if vms > net.num_addresses - 2:
        raise ValueError(f"{vms} VMs do not fit {net}")
    bridge = f"br-{name}"[:15]  # a Linux interface name (IFNAMSIZ)

    def vm(i: int) -> dict[str, Any]:
        # MACs of its own: derived ones are 24 bits of a hash, and 300 of them collide in
        # about 1 lab of 400 (the spec then refuses the lab)
        nic = {"bridge": bridge, "vlan": VLANS[i % 2], "queues": queues or vcpus,
               "ip": f"{net[i + 1]}/{prefix}", "mac": f"52:54:00:b0:{i >> 8:02x}:{i & 255:02x}"}
        return {"name": f"vm{i + 1}", "vcpus": vcpus, "memory_mib": 128, "image": "tiny",
                "nics": [nic]}

    lab = {"name": name, "bridges": [{"name": bridge}], "vms": [vm(i) for i in range(vms)]}
    return {"all": {"hosts": {"localhost": {"ansible_connection": "local"}},
                    "vars": {"lab": lab}}}


def write_lab(directory: Path, vms: int, vcpus: int = 1, queues: int | None = None) -> Path:
    """A new lab of ``vms`` VMs in ``directory``/<lab name>.yml."""
    name = lab_name(vms)
    path = directory / f"{name}.yml"
    path.write_text(yaml.safe_dump(lab_document(name, vms, vcpus, queues), sort_keys=False))
    return path


def lab_present(status: dict[str, Any]) -> bool:
    """Whether `provision status LAB --json` shows anything of the lab on this host: an
    owned bridge, a domain, a tap or an OVS port."""
    return bool(status["bridges"]) or any(
        vm["state"] != "absent"
        or any(nic["tap_up"] is not None or nic["bridge"] is not None for nic in vm["nics"])
        for vm in status["vms"])


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          cwd=REPO, check=False)
    return time.monotonic() - t0, proc


def median_s(argv: list[str], runs: int) -> float:
    return round(statistics.median(timed(argv)[0] for _ in range(runs)), 3)


class Cli:
    """`provision` as a subprocess: each call's wall time and its output."""

    def __init__(self, script: bool) -> None:
        exe = Path(sys.executable).parent / "provision"
        self.argv = [str(exe)] if script else [sys.executable, "-m", "provision.cli"]
        self.how = str(exe) if script else f"{sys.executable} -m provision.cli (cwd {REPO})"

    def run(self, *words: str, ok: tuple[int, ...] = (0,)
            ) -> tuple[float, subprocess.CompletedProcess[str]]:
        seconds, proc = timed([*self.argv, *words])
        if proc.returncode not in ok:
            said = (proc.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
            raise CliError(f"provision {' '.join(words)}: exit {proc.returncode}: {said}")
        return seconds, proc

    def json(self, *words: str, ok: tuple[int, ...] = (0,)) -> tuple[float, dict[str, Any]]:
        seconds, proc = self.run(*words, ok=ok)
        return seconds, json.loads(proc.stdout)


def startup(cli: Cli) -> dict[str, Any]:
    """`provision --help` and the baselines, medians of HELP_RUNS."""
    cli.run("--help")  # fails loudly when the CLI cannot start at all
    base = {"python -c pass": [sys.executable, "-c", "pass"],
            "virsh --version": ["virsh", "--version"],
            "ovs-vsctl --version": ["ovs-vsctl", "--version"]}
    return {"help_s": median_s([*cli.argv, "--help"], HELP_RUNS),
            "baselines_s": {label: median_s(argv, HELP_RUNS)
                            for label, argv in base.items() if shutil.which(argv[0])}}


def verify_once(cli: Cli, lab: Path, report: Path) -> tuple[float, bool, dict[str, int]]:
    report.unlink(missing_ok=True)
    seconds, proc = cli.run("verify", str(lab), "--json", str(report), ok=(0, 1))
    if not report.exists():  # exit 1 without a report: the command failed, not a check
        raise CliError(f"provision verify {lab}: exit {proc.returncode}, no report: "
                       f"{proc.stderr.strip()[-300:]}")
    data = json.loads(report.read_text())
    if not data["passed"]:  # keep the evidence: the next run overwrites the report
        kept = report.with_suffix(f".failed-{int(time.time())}.json")
        kept.write_text(report.read_text())
        failed = [f"{c['name']} {c['target']}: {c['detail'][:160]}" for c in data["checks"]
                  if c["status"] == "fail"]
        print(f"verify {lab.name} failed {len(failed)} check(s), report kept in {kept}:",
              *failed[:5], sep="\n  ", file=sys.stderr)
    return seconds, bool(data["passed"]), data["counts"]


def measure(cli: Cli, lab: Path, row: dict[str, Any], args: argparse.Namespace,
            report: Path) -> None:
    """up, no-op up and verify of ``lab``, into ``row`` (as they are measured)."""
    timeout = ("--timeout", str(args.timeout))
    seconds, first = cli.json("up", str(lab), "--json", *timeout)
    row["up_s"], row["up_changes"] = round(seconds, 3), len(first["changes"])
    noops = [cli.json("up", str(lab), "--json", *timeout) for _ in range(NOOP_RUNS)]
    row["noop_up_s"] = round(statistics.median(s for s, _ in noops), 3)
    row["noop_changed"] = [bool(d["changed"]) for _, d in noops]  # all false, or a bug
    runs = [verify_once(cli, lab, report) for _ in range(args.verify_runs)]
    row["verify_s"] = round(statistics.median(s for s, _, _ in runs), 3)
    row["verify_passed_runs"] = sum(passed for _, passed, _ in runs)
    row["verify_runs"] = len(runs)
    row["verify_counts"] = [counts for _, _, counts in runs]


def bench_lab(cli: Cli, lab: Path, row: dict[str, Any], args: argparse.Namespace,
              down: bool) -> None:
    """One lab's figures into ``row``; `down` afterwards (when ``down``) whatever happened."""
    try:
        measure(cli, lab, row, args, args.workdir / f"{row['lab']}.verify.json")
    except (CliError, ValueError, KeyError) as exc:  # ValueError: output that is not JSON
        row["error"] = str(exc) if isinstance(exc, CliError) else f"bad output: {exc!r}"
    finally:
        if down:
            try:
                row["down_s"] = round(cli.run("down", str(lab), "--json")[0], 3)
            except CliError as exc:
                row["down_error"] = str(exc)


def plan_only(cli: Cli, lab: Path, row: dict[str, Any]) -> None:
    """--dry-run: `plan --json` (exit 0 in sync, 2 changes pending), median of PLAN_RUNS."""
    try:
        runs = [cli.json("plan", str(lab), "--json", ok=(0, 2)) for _ in range(PLAN_RUNS)]
    except (CliError, ValueError) as exc:
        row["error"] = str(exc)
        return
    row["plan_s"] = round(statistics.median(s for s, _ in runs), 3)
    row["plan_changes"] = len(runs[-1][1]["changes"])


def bench_demo(cli: Cli, args: argparse.Namespace) -> dict[str, Any]:
    """The demo lab; torn down afterwards only when nothing of it was here before."""
    row: dict[str, Any] = {"lab": "demo", "vms": 3}
    try:
        row["was_up_before"] = lab_present(cli.json("status", str(DEMO), "--json")[1])
    except (CliError, ValueError, KeyError) as exc:  # unknown: never touch the user's lab
        row["error"] = f"status: {exc}"
        return row
    if args.dry_run:
        plan_only(cli, DEMO, row)
    else:
        bench_lab(cli, DEMO, row, args, down=not row["was_up_before"])
    return row


def bench_sizes(cli: Cli, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """Each size's lab file, then its figures, appended to ``rows`` before they are taken
    (an interruption keeps what was measured and whether its `down` failed)."""
    for vms in args.sizes:
        lab = write_lab(args.workdir, vms, args.vcpus, args.queues)
        row: dict[str, Any] = {"lab": lab.stem, "vms": vms}
        rows.append(row)
        if args.dry_run:
            plan_only(cli, lab, row)
        else:
            bench_lab(cli, lab, row, args, down=True)


def per_vm(rows: list[dict[str, Any]], ops: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per op, between the smallest and the largest size: seconds per VM at the largest over
    that at the smallest (1: flat; below 1: a fixed cost per command dominates), and the
    marginal seconds each further VM adds."""
    done = sorted((r for r in rows if "error" not in r), key=lambda r: r["vms"])
    if len(done) < 2 or done[0]["vms"] == done[-1]["vms"]:
        return {}
    small, large = done[0], done[-1]
    out = {}
    for op in ops:
        a, b = small.get(f"{op}_s"), large.get(f"{op}_s")
        if a and b is not None:
            out[op] = {"ratio": round((b / large["vms"]) / (a / small["vms"]), 2),
                       "marginal_s_per_vm": round((b - a) / (large["vms"] - small["vms"]), 4)}
    return out


def cells(row: dict[str, Any], ops: tuple[str, ...]) -> list[str]:
    """Seconds of each op, seconds per VM of each, then whether the no-op ups changed
    anything and how many verify runs passed (full runs only)."""
    values = [row.get(f"{op}_s") for op in ops]
    out = [f"{v:.3f}" if v is not None else "-" for v in values]
    out += [f"{v / row['vms']:.4f}" if v is not None else "-" for v in values]
    if "plan" not in ops:
        changed = row.get("noop_changed")
        out.append("-" if changed is None else "yes" if any(changed) else "no")
        out.append(f"{row['verify_passed_runs']}/{row['verify_runs']}"
                   if "verify_runs" in row else "-")
    return out


def print_table(rows: list[dict[str, Any]], ops: tuple[str, ...]) -> None:
    words = [op.replace("noop_", "no-op ") for op in ops]
    heads = ["lab", "VMs", *(f"{w} s" for w in words), *(f"{w} s/VM" for w in words)]
    if "plan" not in ops:
        heads += ["no-op changed", "verify passed"]
    table = [heads] + [[r["lab"], str(r["vms"]), *cells(r, ops)] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(heads))]
    for i, line in enumerate(table):
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
        row = rows[i - 1] if i else {}
        for key in ("error", "down_error"):
            if key in row:
                print(f"    {key}: {row[key]}")


def print_targets(result: dict[str, Any]) -> None:
    base = ", ".join(f"{k} {v:.3f} s" for k, v in result["baselines_s"].items())
    print(f"provision --help: {result['help_s']:.3f} s (target <= {TARGETS['help_s']} s); "
          f"baselines: {base}")
    demo = result.get("demo") or {}
    sixteen = next((r for r in result["sizes"] if r["vms"] == 16), {})
    for op, words in () if result["dry_run"] else (("noop_up", "no-op up"), ("verify", "verify")):
        for label, key, row in (("the demo", "demo", demo), ("16 VMs", "16", sixteen)):
            value = f"{row[f'{op}_s']:.3f} s" if f"{op}_s" in row else "not measured"
            runs = (f", passed {row['verify_passed_runs']} of {row['verify_runs']} runs "
                    "(target: every run)") if op == "verify" and "verify_runs" in row else ""
            print(f"{words} of {label}: {value} (target <= {TARGETS[f'{op}_{key}_s']} s){runs}")
    ratios = ", ".join(f"{op.replace('noop_', 'no-op ')} {v['ratio']} "
                       f"({v['marginal_s_per_vm']:+.4f} s per further VM)"
                       for op, v in result["flatness"].items()) or "not measured"
    print(f"per-VM cost, largest size over smallest: {ratios} (≈1 is flat; below 1, a fixed "
          "cost per command dominates)")


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=positive, nargs="+", default=[4, 16, 32])
    parser.add_argument("--vcpus", type=positive, default=1)
    parser.add_argument("--queues", type=positive, help="per NIC (default: --vcpus)")
    parser.add_argument("--verify-runs", type=positive, default=3)
    parser.add_argument("--timeout", type=float, default=900, help="`up --timeout` (s)")
    parser.add_argument("--demo", action="store_true", help="also inventory/demo.yml")
    parser.add_argument("--dry-run", action="store_true", help="plan only; boot nothing")
    parser.add_argument("--script", action="store_true",
                        help="run the `provision` console script beside sys.executable")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure here")
    args = parser.parse_args()
    if args.json and not args.json.resolve().parent.is_dir():  # before, not after the run
        parser.error(f"--json: no directory {args.json.resolve().parent}")
    return args


def add_per_vm(rows: list[dict[str, Any]], ops: tuple[str, ...]) -> None:
    for row in rows:
        for op in ops:
            if f"{op}_s" in row:
                row[f"{op}_s_per_vm"] = round(row[f"{op}_s"] / row["vms"], 4)


def main() -> int:
    args = parse_args()
    cli = Cli(args.script)
    ops = ("plan",) if args.dry_run else OPS
    print(f"provision: {cli.how}")
    result: dict[str, Any] = {"date": datetime.datetime.now().astimezone().isoformat(),
                              "command": cli.how, "dry_run": args.dry_run,
                              "vcpus": args.vcpus, "queues": args.queues or args.vcpus,
                              "targets": TARGETS, **startup(cli), "sizes": []}
    args.workdir = Path(tempfile.mkdtemp(prefix="vlbench-"))
    try:
        if args.demo:
            result["demo"] = bench_demo(cli, args)
        bench_sizes(cli, args, result["sizes"])
    finally:
        if any("down_error" in r for r in [*result["sizes"], result.get("demo", {})]):
            sys.stdout.flush()
            print(f"bench_cli: a `down` failed: lab files kept in {args.workdir}",
                  file=sys.stderr)
        elif any(args.workdir.glob("*.failed-*.json")):
            print(f"bench_cli: failed verify reports kept in {args.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(args.workdir, ignore_errors=True)
    rows = ([result["demo"]] if args.demo else []) + result["sizes"]
    add_per_vm(rows, ops)
    result["flatness"] = per_vm(result["sizes"], ops)
    print_table(rows, ops)
    print_targets(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if any(failed(r) for r in rows) else 0


def failed(row: dict[str, Any]) -> bool:
    """A command failed, a verify run failed, or a no-op `up` changed something: not a
    timing, so the run fails."""
    return ("error" in row or "down_error" in row or any(row.get("noop_changed", ()))
            or row.get("verify_passed_runs", 0) < row.get("verify_runs", 0))


if __name__ == "__main__":
    sys.exit(main())
