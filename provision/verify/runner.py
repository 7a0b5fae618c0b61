"""``verify_lab()``: walk every hop of a running lab and gather the verdicts in a
``VerifyReport``. Observes only; it never repairs. VMs are checked concurrently.

Phases: per VM (domain, QEMU, tap, guest) in parallel; OVS from one OVSDB replica; every
queue's traffic; the reachability matrix (one concurrent guest-exec per VM); TCP; and with
``perf`` the iperf3 throughput.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from provision.backends import virt
from provision.core import spec
from provision.core.desired import DesiredLab, desired_state
from provision.core.observed import ObservedLab
from provision.core.owner import owned_by
from provision.core.placement import guest_mtus
from provision.engine.converge import (
    Backends,
    NoProgress,
    Progress,
    observe_lab,
    open_backends,
    parallel,
)
from provision.engine.lab import LabSource, lab_inventory, with_tunnels
from provision.engine.record import host_facts, lab_record
from provision.errors import HostError
from provision.host.probe import HostCaps, lab_caps
from provision.image import resolve
from provision.verify import guest, host_checks, matrix, parse, pings, qemu, silence, tcp, traffic
from provision.verify.matrix import Endpoint
from provision.verify.model import Check, VerifyReport, hop_order, skipped


@dataclass
class VmState:
    """What the per-VM phase learnt, for the phases that follow."""

    domain: str
    dom: libvirt.virDomain | None
    running: bool
    backend: str | None  # what QEMU uses, None when it could not be read
    view: guest.GuestView
    checks: list[Check] = field(default_factory=list)


def load_for_verify(path: LabSource, host: str | None = None,
                    extra: Sequence[str | Path] = ()) -> tuple[spec.Lab, spec.Lab, DesiredLab,
                                                               HostCaps]:
    """The whole lab, the part of it on this host (``host``; all of it when None), and what
    ``up`` would have made here. Where the lab asks for what this host lacks (vhost-net, the
    OVS kernel datapath), the desired state is still rendered as asked, so that the QEMU and
    OVS hops report the fallback instead of verify refusing to look."""
    inv = lab_inventory(path, extra)
    lab = inv.placed(host)
    caps = lab_caps()
    render_caps = caps
    if any(b.datapath_type == "system" for b in lab.bridges) and not caps.ovs_kernel_datapath:
        render_caps = dataclasses.replace(render_caps, ovs_kernel_datapath=True)
    images = resolve.vm_images(lab, fetch=False).images
    want = desired_state(lab, render_caps, images, strict=False, mtus=guest_mtus(inv.lab))
    return inv.lab, lab, with_tunnels(want, inv, host), caps


def _require_lab(observed: ObservedLab, lab: str, path: LabSource) -> None:
    objects = [*observed.domains.values(), *observed.ports.values(),
               *observed.taps.values(), *observed.bridges.values()]
    owned = any(owned_by(o.owner, lab) for o in objects)
    if not owned:
        raise HostError(f"lab {lab} is not on this host: no domain, tap, OVS port or bridge "
                        f"of it exists; run `provision up {_file_name(path)}` first")


def _file_name(path: LabSource) -> str:
    return "LAB" if isinstance(path, spec.Lab) else str(path)


def _vm_phase(b: Backends, lab: spec.Lab, want: DesiredLab, vm: spec.VmSpec,
              eps: list[Endpoint], observed: ObservedLab, resolved: str) -> VmState:
    target = f"{lab.name}/{vm.name}"
    desired = next(d for d in want.domains if d.vm == vm.name)
    checks, running = host_checks.domain_checks(b.conn, desired, eps, target)
    more, actual = qemu.qemu_checks(desired.name, target, eps, lab.backend, resolved,
                                    running)
    checks += more
    checks += [host_checks.tap_check(ep, want, observed) for ep in eps]
    dom = virt.lookup(b.conn, desired.name)
    view = guest.observe_guest(dom, running)
    nics = {n.mac: n for n in desired.nics}
    checks += [guest.guest_nic_check(view, ep, nics[ep.mac]) for ep in eps]
    return VmState(desired.name, dom, running, actual, view, checks)


Pinged = dict[pings.Ping, tuple[int, int, str] | str]


def _matrix_checks(eps: list[Endpoint], states: dict[str, VmState],
                   probes: Sequence[tuple[Endpoint, Endpoint]] = ()) -> list[Check]:
    """Pings from this host's guests: to every peer on their segment (here or on another
    hypervisor), and at the same time to every NIC of another VLAN of their bridges; the
    latter listen until the reach round trips on that bridge have grounded how long
    (``silence``)."""
    local = set(states)
    reach = [pings.Ping("reach", a, b)
             for a, b in matrix.from_here(matrix.reach_pairs(eps), local)]
    reach += [pings.Ping("reach", a, b) for a, b in probes if a.domain in local]
    isolation = _by_source([pings.Ping("isolation", a, b)
                            for a, b in matrix.from_here(matrix.isolation_pairs(eps), local)])
    tokens = {d: secrets.token_hex(6) for d in isolation}
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(isolation)))) as pool:
        listening = {d: pool.submit(pings.listen_from, states[d].dom, states[d].view, ps,
                                    tokens[d]) for d, ps in isolation.items()}
        reached: Pinged = {}
        for part in parallel(lambda item: pings.ping_from(states[item[0]].dom,
                                                          states[item[0]].view, item[1]),
                             list(_by_source(reach).items())):
            reached.update(part)
        windows = silence.windows([pings.reach_sample(p, reached[p]) for p in reach],
                                  {p.src.bridge for ps in isolation.values() for p in ps})
        vm_windows = {d: max((windows[p.src.bridge] for p in ps), key=lambda w: w.seconds)
                      for d, ps in isolation.items()}
        parallel(lambda d: pings.close_window(states[d].dom, states[d].view, isolation[d],
                                              tokens[d], vm_windows[d].seconds),
                 list(isolation))
        heard = {d: f.result() for d, f in listening.items()}
    checks = [skipped("reach", ep.target, why) for ep, why in matrix.excluded(eps)
              if ep.domain in local]
    checks += [pings.reach_check(p, reached[p]) for p in reach]
    return checks + _isolation_checks(isolation, heard, vm_windows, states)


def _isolation_checks(isolation: dict[str, list[pings.Ping]],
                      heard: dict[str, tuple[Pinged, float | None]],
                      vm_windows: dict[str, silence.Window], states: dict[str, VmState],
                      ) -> list[Check]:
    """A check per isolation ping. A ping the shortened window cannot vouch for (it sent no
    probe, started late, or the guest did not listen the whole window: ``silence.vouches``)
    and that heard no reply listens again, alone, for the whole deadline."""
    heard_by: dict[pings.Ping, tuple[tuple[int, int, str] | str, silence.Window,
                                      float | None]] = {}
    again: dict[str, list[pings.Ping]] = defaultdict(list)
    for d, ps in isolation.items():
        results, listened = heard[d]
        for p in ps:
            heard_by[p] = (results[p], vm_windows[d], listened)
            r = results[p]
            if not isinstance(r, str) and r[1] == 0 and not silence.vouches(
                    vm_windows[d], r[0], listened):
                again[d].append(p)
    redo = silence.full_deadline("listened again alone: the first time it sent no probe, "
                                 "or fewer than all, or listened less than its window")
    for part in parallel(lambda d: pings.ping_from(states[d].dom, states[d].view, again[d]),
                         list(again)):
        heard_by.update({p: (r, redo, None) for p, r in part.items()})
    checks = []
    for p, (r, window, listened) in heard_by.items():
        dst = states.get(p.dst.domain)
        checks.append(pings.isolation_check(p, r, dst.view if dst else None, window,
                                            listened))
    return checks


def _by_source(ps: list[pings.Ping]) -> dict[str, list[pings.Ping]]:
    by_source: dict[str, list[pings.Ping]] = defaultdict(list)
    for p in ps:
        by_source[p.src.domain].append(p)
    return by_source


def _queue_checks(b: Backends, eps: list[Endpoint], states: dict[str, VmState],
                  progress: Progress) -> list[Check]:
    """Every queue of every NIC here, with nothing else running in the guests: another
    check's packets would move queues this one must see moved by its own flows."""
    pairs, lonely = matrix.traffic_pairs(eps)
    lonely = [(ep, why) for ep, why in lonely if ep.domain in states]
    task = progress.task("every queue carries traffic", 1)
    checks = traffic.queue_checks(b.ovs, {d: s.dom for d, s in states.items()},
                                  {d: s.view for d, s in states.items()},
                                  matrix.from_here(pairs, set(states)), lonely)
    progress.advance(task)
    return checks


def _tcp_pairs(eps: list[Endpoint], states: dict[str, VmState],
               ) -> tuple[list[tuple[Endpoint, Endpoint]], list[Check]]:
    """Traffic pairs with both ends here (TCP needs a server in the peer's guest), and a
    skip for each pair whose peer runs on another hypervisor."""
    pairs = matrix.from_here(matrix.traffic_pairs(eps)[0], set(states))
    remote = [skipped("l4.tcp", matrix.pair_target(a, b),
                      f"{b.target} runs on {b.host}: this host cannot serve TCP from its "
                      "guest; ping and every queue of the pair are checked from here")
              for a, b in pairs if b.domain not in states]
    return [(a, b) for a, b in pairs if b.domain in states], remote


def _tcp_checks(pairs: list[tuple[Endpoint, Endpoint]], states: dict[str, VmState],
                pool: tcp.PortPool, progress: Progress) -> list[Check]:
    doms = {d: s.dom for d, s in states.items()}
    views = {d: s.view for d, s in states.items()}
    task = progress.task("TCP across the data path", len(pairs))

    def one(pair: tuple[Endpoint, Endpoint]) -> Check:
        check = tcp.tcp_check(doms, views, pair[0], pair[1], pool)
        progress.advance(task, check.target)
        return check

    return parallel(one, pairs)


def _perf_checks(pairs: list[tuple[Endpoint, Endpoint]], states: dict[str, VmState],
                 pool: tcp.PortPool, tcp_checks: list[Check], progress: Progress,
                 ) -> list[Check]:
    doms = {d: s.dom for d, s in states.items()}
    views = {d: s.view for d, s in states.items()}
    checks: list[Check] = []
    task = progress.task("throughput (iperf3)", len(pairs))
    for pair, tcp_result in zip(pairs, tcp_checks, strict=True):
        checks += tcp.perf_checks(doms, views, pair[0], pair[1], pool, tcp_result)
        progress.advance(task, tcp_result.target)
    return checks


def _data_path_checks(b: Backends, whole: spec.Lab, l3: list[Endpoint],
                      states: dict[str, VmState], perf: bool, progress: Progress,
                      ) -> list[Check]:
    """Queues, the ping matrix, TCP, then throughput when asked for: one at a time.
    Running the matrix and TCP at once saved about a second on the demo but, in a lab of
    32 one-vCPU guests on two cores, left guests' scripts unfinished after 30 s: each
    guest's one vCPU ran both checks' processes."""
    checks = _queue_checks(b, l3, states, progress)
    pairs, remote = _tcp_pairs(l3, states)
    pool = tcp.PortPool()
    task = progress.task("reachability matrix (pings inside the guests)", 1)
    checks += _matrix_checks(l3, states, matrix.probe_pairs(whole, l3))
    progress.advance(task)
    tcp_checks = _tcp_checks(pairs, states, pool, progress)
    checks += remote + tcp_checks
    if perf:
        checks += _perf_checks(pairs, states, pool, tcp_checks, progress)
    return checks


def verify_lab(path: LabSource, progress: Progress | None = None,
               perf: bool = False, host: str | None = None,
               extra: Sequence[str | Path] = ()) -> VerifyReport:
    """Every check of the lab (a lab file or a ``Lab``); HostError (exit 4) when the lab is
    not here. The report carries the lab's record (``engine.record``), computed as `up`
    computes it, from the desired state here."""
    t0 = time.monotonic()
    progress = progress or NoProgress()
    whole, lab, want, caps = load_for_verify(path, host, extra)
    eps = matrix.endpoints(lab)
    l3 = matrix.l3_endpoints(whole)  # peers on other hypervisors too
    by_vm: dict[str, list[Endpoint]] = defaultdict(list)
    for ep in eps:
        by_vm[ep.vm].append(ep)
    with open_backends() as b:
        observed = observe_lab(b, want.lab, want, guests=False)
        _require_lab(observed, lab.name, path)
        record = lab_record(want, lab, host_facts(b.conn, b.ovs), host)
        task = progress.task("domain, QEMU, tap and guest of each VM", len(lab.vms))

        def vm_phase(vm: spec.VmSpec) -> VmState:
            state = _vm_phase(b, lab, want, vm, by_vm[vm.name], observed, caps.best_backend)
            progress.advance(task, vm.name)
            return state

        states = {s.domain: s for s in parallel(vm_phase, lab.vms)}
        checks = [c for s in states.values() for c in s.checks]
        checks += host_checks.bridge_checks(want, observed)
        checks += [host_checks.port_check(ep, want, observed) for ep in eps]
        checks += host_checks.link_port_checks(want, observed)
        checks += _data_path_checks(b, whole, l3, states, perf, progress)
    checks.sort(key=hop_order)
    actual = parse.combine_backends([s.backend for s in states.values()
                                      if s.backend is not None])
    return VerifyReport(lab.name, actual, checks, time.monotonic() - t0, lab.backend, record)
