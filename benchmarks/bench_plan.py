"""Benchmark: planning a large lab against an observed state of the same size. Pure: no
daemons, no image, nothing on the host is read or changed.

For each size N (default 50, 100, 200 VMs; 5 NICs each, so 5N taps and OVS ports): the lab's
desired state (``desired_state`` with a made-up host and guest image), an observed state in
sync with it (what the host holds right after `up`), then ``plan_changes`` timed, best and
median of --repeat runs. The plan must be empty; anything else is a bug, not a figure.

Target (issue 11): 500 ports and 100 domains planned in at most 50 ms. Planning must grow
with the objects, not with their square: each doubling of N should about double the time
(ratio ~2; a quadratic step shows as ~4). Figures are printed beside the targets, never
asserted: the machines this runs on are shared and noisy.

Run: .venv/bin/python benchmarks/bench_plan.py [--sizes 50 100 200] [--repeat 30] [--disk]
(--disk: every other VM boots a disk image, so its overlay, seed and pool are planned too)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provision.core.desired import DesiredLab, desired_state
from provision.core.plan import plan_changes
from provision.core.spec import parse_lab
from provision.image.cache import DiskImage
from tests.unit.helpers import IMAGE as TINY
from tests.unit.helpers import caps, in_sync

TARGET_MS = 50.0  # issue 11: 500 ports and 100 domains
TARGET_VMS, NICS = 100, 5
BRIDGES = 5
HOST = caps(vhost=True, kvm=True, ovs_kernel=True)
DISK = DiskImage("debian", Path("/var/cache/virtio-lab/images/debian-1/disk.qcow2"), "qcow2",
                 "1" * 64, 2 << 30)


def lab_data(vms: int, disk: bool) -> dict[str, Any]:
    """``vms`` VMs of NICS NICs each, spread over BRIDGES bridges: access ports on two
    VLANs, and on every fifth NIC a trunk with an addressed VLAN."""
    def nic(v: int, n: int) -> dict[str, Any]:
        ip = f"10.{n}.{v // 250}.{v % 250 + 1}/16"
        if n == NICS - 1:
            return {"bridge": f"br{n % BRIDGES}", "trunks": [300, {"vlan": 301, "ip": ip}]}
        return {"bridge": f"br{n % BRIDGES}", "vlan": 100 + v % 2, "ip": ip}

    return {
        "name": "bench",
        "bridges": [{"name": f"br{b}"} for b in range(BRIDGES)],
        "vms": [{"name": f"vm{v}", "vcpus": 4, "image": "debian" if disk and v % 2 else "tiny",
                 "nics": [nic(v, n) for n in range(NICS)]} for v in range(vms)],
    }


def desired(vms: int, disk: bool) -> DesiredLab:
    spec = parse_lab(lab_data(vms, disk))
    images = {vm.name: DISK if vm.image == "debian" else TINY for vm in spec.vms}
    return desired_state(spec, HOST, images)


def timed(func: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best and median seconds of ``repeat`` calls (after one call to warm up)."""
    func()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def bench(vms: int, repeat: int, disk: bool) -> dict[str, Any]:
    want = desired(vms, disk)
    seen = in_sync(want)
    plan = plan_changes(want, seen)
    if not plan.in_sync:
        raise SystemExit(f"bench_plan: an in-sync host planned {len(plan.changes)} change(s), "
                         f"e.g. {plan.changes[0].describe()}")
    best, median = timed(lambda: plan_changes(want, seen), repeat)
    return {"vms": vms, "ports": len(want.ports), "domains": len(want.domains),
            "volumes": len(want.volumes), "best_ms": round(best * 1000, 2),
            "median_ms": round(median * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, TARGET_VMS, 200],
                        help="numbers of VMs, 5 NICs each (default 50 100 200)")
    parser.add_argument("--repeat", type=int, default=30, help="timed plans per size")
    parser.add_argument("--disk", action="store_true",
                        help="every other VM boots a disk image (plans volumes too)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [bench(n, args.repeat, args.disk) for n in sorted(args.sizes)]
    for prev, row in itertools.pairwise(rows):
        # per doubling of the lab: 2 when linear, 4 when quadratic
        growth = (row["best_ms"] / prev["best_ms"]) ** (1 / math.log2(row["vms"] / prev["vms"]))
        row["growth_per_doubling"] = round(growth, 2)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'VMs':>5} {'ports':>6} {'domains':>8} {'volumes':>8} {'best ms':>8} "
          f"{'median ms':>10} {'x per doubling':>15}")
    for r in rows:
        print(f"{r['vms']:>5} {r['ports']:>6} {r['domains']:>8} {r['volumes']:>8} "
              f"{r['best_ms']:>8} {r['median_ms']:>10} {r.get('growth_per_doubling', ''):>15}")
    at_target = [r for r in rows if r["vms"] == TARGET_VMS]
    figure = f"{at_target[0]['best_ms']} ms best" if at_target else "not measured"
    print(f"target: {TARGET_VMS * NICS} ports and {TARGET_VMS} domains planned in at most "
          f"{TARGET_MS:g} ms: {figure}; growth per doubling ~2 (linear), not ~4 (quadratic)")


if __name__ == "__main__":
    main()
