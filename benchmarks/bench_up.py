"""Benchmark: `up`, no-op `up` and `down` of labs of N VMs, beside a floor from the same run.

For each N (default 1, 4, 16; 4 vCPUs and a 4-queue NIC per VM):

- floor: the same rendered domains defined and started in parallel straight through
  libvirt-python, the same taps made with pyroute2 and the same OVS rows in one ovsdbapp
  transaction, then every guest agent polled until it answers; no planning, no observation.
- up: `provision up`'s path (observe, plan, apply, wait for agents, check NICs, then read
  back: observe and plan again); the read-back's share of it is printed beside its target.
- no-op up: a second up; also counts writes: bytes appended to OVSDB's database log and
  libvirt's domain files touched (both must stay at zero).
- down: `provision down`'s path.

Prints seconds and the ratio up/floor. Needs the daemons and the image (`make bench`).
Run: .venv/bin/python benchmarks/bench_up.py [--sizes 1 4 16]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt
import libvirt_qemu
from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.schema.open_vswitch import impl_idl
from pyroute2 import IPRoute

from provision.core import plan
from provision.core.desired import DesiredLab, desired_state
from provision.core.spec import Lab, parse_lab
from provision.engine import converge, lab
from provision.host.probe import lab_caps
from provision.image.cache import load_image

OVSDB = "unix:/var/run/openvswitch/db.sock"
OVSDB_FILE = Path("/etc/openvswitch/conf.db")


def lab_spec(name: str, n: int) -> dict:
    def nic(i: int) -> dict:
        ip = f"10.88.{i // 250}.{i % 250 + 1}/16"
        return {"bridge": f"br-{name}", "vlan": 100, "queues": 4, "ip": ip}

    vms = [{"name": f"vm{i}", "vcpus": 4, "memory_mib": 256, "nics": [nic(i)]} for i in range(n)]
    return {"name": name, "bridges": [{"name": f"br-{name}"}], "vms": vms}


def wait_agents(conn: libvirt.virConnect, names: list[str], timeout: float = 900) -> None:
    def ping(name: str) -> None:
        dom = conn.lookupByName(name)
        deadline = time.monotonic() + timeout
        while True:
            try:
                libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 1, 0)
                return
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(ping, names))


def floor_up(want: DesiredLab, conn: libvirt.virConnect) -> float:
    t0 = time.monotonic()
    with IPRoute() as ipr:
        for tap in want.taps:
            ipr.link("add", ifname=tap.name, kind="tuntap", mode="tap",
                     ifr={"multi_queue": tap.multi_queue, "vnet_hdr": True, "no_pi": True})
            ipr.link("set", index=ipr.link_lookup(ifname=tap.name)[0], state="up")
    helper = idlutils.get_schema_helper(OVSDB, "Open_vSwitch")
    helper.register_all()
    conn_ovs = connection.Connection(connection.OvsdbIdl(OVSDB, helper), timeout=30)
    api = impl_idl.OvsdbIdl(conn_ovs)
    with api.transaction(check_error=True) as txn:
        for br in want.bridges:
            txn.add(api.add_br(br.name, datapath_type=br.datapath_type))
        for port in want.ports:
            txn.add(api.add_port(port.bridge, port.name))
            txn.add(api.db_set("Port", port.name, ("tag", port.tag)))

    def boot(xml: str) -> None:
        conn.defineXML(xml).create()

    with ThreadPoolExecutor(len(want.domains)) as pool:
        list(pool.map(boot, [d.xml for d in want.domains]))
    wait_agents(conn, [d.name for d in want.domains])
    elapsed = time.monotonic() - t0
    for dom in want.domains:
        d = conn.lookupByName(dom.name)
        d.destroy()
        d.undefine()
    with api.transaction(check_error=True) as txn:
        for br in want.bridges:
            txn.add(api.del_br(br.name))
    conn_ovs.stop()
    with IPRoute() as ipr:
        for tap in want.taps:
            ipr.link("del", ifname=tap.name)
    return elapsed


def libvirt_mtimes(directory: str) -> dict[str, float]:
    return {f: os.stat(f).st_mtime_ns for f in glob.glob(f"{directory}/*.xml")}


def touched(before: dict[str, float], after: dict[str, float]) -> int:
    return sum(1 for f, m in after.items() if before.get(f) != m)


def lab_up(spec: Lab) -> tuple[float, int, float]:
    """`provision up`'s path: seconds, changes made, seconds of the read-back in it."""
    t0 = time.monotonic()
    result = lab.up_lab(spec, agent_timeout=900)
    return time.monotonic() - t0, len(result.plan.changes), result.readback_seconds


def lab_down(name: str) -> float:
    t0 = time.monotonic()
    with converge.open_backends() as b:
        p = plan.plan_teardown(converge.observe_lab(b, name, guests=False))
        converge.apply_plan(b, p)
    return time.monotonic() - t0


def bench(n: int, noop_runs: int, repeats: int) -> dict:
    name = "vlb" + secrets.token_hex(2)
    caps = lab_caps()
    spec = parse_lab(lab_spec(name, n))
    want = desired_state(spec, caps, load_image())
    conn = libvirt.open("qemu:///system")
    floors, ups, downs, noops, readbacks = [], [], [], [], []
    try:
        for _ in range(repeats):  # alternate, so drift in the machine's load hits both
            floors.append(floor_up(want, conn))
            seconds, changes, readback = lab_up(spec)
            ups.append(seconds)
            readbacks.append(readback)
            db_before = OVSDB_FILE.stat().st_size
            conf, status = libvirt_mtimes("/etc/libvirt/qemu"), libvirt_mtimes("/run/libvirt/qemu")
            for _ in range(noop_runs):
                seconds, noop_changes, _ = lab_up(spec)
                assert noop_changes == 0, "a second up planned changes"
                noops.append(seconds)
            db_writes = OVSDB_FILE.stat().st_size - db_before
            conf_touched = touched(conf, libvirt_mtimes("/etc/libvirt/qemu"))
            status_touched = touched(status, libvirt_mtimes("/run/libvirt/qemu"))
            downs.append(lab_down(name))
    finally:
        lab_down(name)
        conn.close()
    floor, up = statistics.median(floors), statistics.median(ups)
    return {"vms": n, "repeats": repeats, "floor_s": round(floor, 2), "up_s": round(up, 2),
            "up_over_floor": round(up / floor, 3), "up_changes": changes,
            "readback_s": round(statistics.median(readbacks), 3),
            "readback_pct_of_up": round(100 * statistics.median(readbacks) / up, 2),
            "noop_up_s": round(statistics.median(noops), 3),
            "noop_ovsdb_bytes_written": db_writes,
            "noop_libvirt_definitions_touched": conf_touched,
            "noop_libvirt_status_files_touched": status_touched,
            "down_s": round(statistics.median(downs), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--noop-runs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1,
                        help="floor/up pairs per size; medians are printed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [bench(n, args.noop_runs, args.repeats) for n in args.sizes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'VMs':>4} {'floor s':>8} {'up s':>8} {'up/floor':>9} {'read-back':>14} "
          f"{'no-op up s':>11} "
          f"{'no-op OVSDB B':>14} {'no-op defs':>11} {'no-op status':>13} {'down s':>7}")
    for r in rows:
        readback = f"{r['readback_s']}s {r['readback_pct_of_up']}%"
        print(f"{r['vms']:>4} {r['floor_s']:>8} {r['up_s']:>8} {r['up_over_floor']:>9} "
              f"{readback:>14} "
              f"{r['noop_up_s']:>11} {r['noop_ovsdb_bytes_written']:>14} "
              f"{r['noop_libvirt_definitions_touched']:>11} "
              f"{r['noop_libvirt_status_files_touched']:>13} {r['down_s']:>7}")
    print("read-back: observing and planning again after applying, in seconds and as a share "
          "of up (target: under 1%)")
    print("no-op defs: libvirt domain definitions (/etc/libvirt/qemu) rewritten, must be 0; "
          "no-op status: libvirtd's runtime status files (/run/libvirt/qemu), which libvirtd "
          "itself rewrites for every guest-agent call that reads the guest")


if __name__ == "__main__":
    main()
