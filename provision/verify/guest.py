"""Inside the guests, through the QEMU guest agent (libvirt): the guest's view of each NIC,
and the reachability matrix (pings from inside, one guest-exec per VM, pings concurrent).

Scripts here are constant text; targets reach them as positional arguments, never
interpolated into the script.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from provision.backends import agent
from provision.core import compare
from provision.core.desired import GuestNic
from provision.core.observed import ObservedGuestNic
from provision.verify import parse
from provision.verify.matrix import Endpoint, pair_target, same_subnet
from provision.verify.model import Check, skipped, verdict

# $1..: "IFNAME,ADDRESS,PAYLOAD,SECONDS" targets. Every ping runs at once; each ends once
# 3 replies came, or after SECONDS (-w).
_PING_ALL = r"""
k=0
for t in "$@"; do
  ifn=${t%%,*}; r=${t#*,}; dst=${r%%,*}; r=${r#*,}; size=${r%%,*}; r=${r#*,}
  secs=${r%%,*}; rounds=${r#*,}
  ( n=0; : > "/tmp/vl-ping.$$.$k"
    while :; do
      ping -c 3 -i 0.2 -W "$secs" -w "$secs" -s "$size" -I "$ifn" "$dst" \
        >> "/tmp/vl-ping.$$.$k" 2>&1
      rc=$?; n=$((n+1))
      if [ "$rc" -eq 0 ] || [ "$n" -ge "$rounds" ]; then break; fi
    done
    echo "exit $rc" >> "/tmp/vl-ping.$$.$k" ) &
  k=$((k+1))
done
wait
k=0
for t in "$@"; do
  echo "@@ $k"; cat "/tmp/vl-ping.$$.$k"; rm -f "/tmp/vl-ping.$$.$k"; k=$((k+1))
done
"""


def run_sh(dom: libvirt.virDomain, script: str, args: list[str],
           timeout: float = 30.0) -> tuple[int, str, str]:
    """Run a constant shell script in the guest with ``args`` as $1.. ."""
    return agent.guest_exec(dom, "/bin/sh", ["-c", script, "vlab", *args], timeout=timeout)


@dataclass(frozen=True)
class GuestIface:
    """The guest interface an endpoint sends from: the NIC, or a VLAN interface on it."""

    ifname: str  # what ping -I and iperf3 --bind-dev use
    parent: str  # the virtio NIC, whose queues and counters carry the traffic
    addresses: tuple[str, ...]
    up: bool


@dataclass
class GuestView:
    """One VM's NICs as its agent reports them, or why the agent could not be asked."""

    nics: dict[str, ObservedGuestNic]
    error: str | None = None

    def nic(self, mac: str) -> ObservedGuestNic | None:
        return self.nics.get(mac)

    def iface(self, ep: Endpoint) -> GuestIface | None:
        nic = self.nics.get(ep.mac)
        if nic is None:
            return None
        if ep.guest_vlan is None:
            return GuestIface(nic.ifname, nic.ifname, nic.addresses, nic.up)
        vlan = nic.vlan(ep.guest_vlan)
        if vlan is None:
            return None
        return GuestIface(vlan.ifname, nic.ifname, vlan.addresses, vlan.up and nic.up)

    def missing(self, ep: Endpoint) -> str:
        """Why ``iface(ep)`` is None, for a failed check."""
        if ep.guest_vlan is not None and ep.mac in self.nics:
            return f"no VLAN {ep.guest_vlan} interface on the NIC with MAC {ep.mac} in the guest"
        return f"no interface with MAC {ep.mac} in the guest"


def observe_guest(dom: libvirt.virDomain | None, running: bool) -> GuestView:
    if dom is None or not running:
        return GuestView({}, "the domain is not running")
    try:
        return GuestView(agent.observe_nics(dom))
    except agent.AgentError as exc:
        return GuestView({}, f"the guest agent did not answer: {exc}")


def healthy(iface: GuestIface | None, ep: Endpoint) -> bool:
    """The guest interface is there, up, and carries its address: it could answer a ping."""
    return iface is not None and iface.up and (ep.ip is None or ep.ip in iface.addresses)


def guest_nic_check(view: GuestView, ep: Endpoint, want: GuestNic) -> Check:
    """The planner's comparison of the guest NIC (channels, link, addresses, VLAN
    interfaces), plus what only verify looks at: the driver and the maximum channels."""
    if view.error:
        return verdict("guest.nic", ep.target, [view.error], {"mac": ep.mac})
    nic = view.nic(ep.mac)
    if nic is None:
        return verdict("guest.nic", ep.target, [f"no interface with MAC {ep.mac} in the guest"],
                       {"mac": ep.mac, "seen": sorted(view.nics)})
    problems = []
    if nic.driver != "virtio_net":
        problems.append(f"driver is {nic.driver}, not virtio_net")
    if nic.max_combined != ep.queues:
        problems.append(f"ethtool -l maximum combined is {nic.max_combined}, want {ep.queues}")
    problems += [str(d) for d in compare.guest_nic_diffs(want, nic)]
    evidence = {"ifname": nic.ifname, "mac": nic.mac, "driver": nic.driver, "up": nic.up,
                "max_combined": nic.max_combined, "combined": nic.combined,
                "addresses": list(nic.addresses),
                "vlans": [{"vid": v.vid, "ifname": v.ifname, "up": v.up,
                           "addresses": list(v.addresses)} for v in nic.vlans]}
    vlans = "".join(f", {v.ifname} {' '.join(v.addresses) or 'no address'}" for v in nic.vlans)
    ok = f"{nic.ifname} {nic.driver}, combined {nic.combined}/{nic.max_combined}, " \
         f"{' '.join(nic.addresses) or 'no address'}{vlans}"
    return verdict("guest.nic", ep.target, problems, evidence, ok)


# A reach ping: up to REACH_ROUNDS rounds of three probes, each waiting REACH_DEADLINE_S for
# replies, a round only after one that got none. Three probes sent in the first 0.4 s can
# all be lost on a loaded host (the ARP request or its answer among them: measured once in
# a 16-VM lab, 64 TCG vCPUs on two cores), and busybox's ping sends no more than -c; fresh
# probes, with the neighbour's address learnt meanwhile, then get through. A healthy lab
# ends at the first round's third reply. An isolation ping waits its whole deadline once.
REACH_DEADLINE_S = 5
REACH_ROUNDS = 3
ISOLATION_DEADLINE_S = 2


@dataclass(frozen=True)
class Ping:
    kind: str  # "reach" | "isolation"
    src: Endpoint
    dst: Endpoint

    @property
    def seconds(self) -> int:
        """How long the ping may wait. A reach ping ends at its third reply, so a long
        deadline costs a healthy lab nothing and lets a loaded one (many TCG guests on two
        cores) answer late; an isolation ping must wait its whole deadline for silence."""
        return REACH_DEADLINE_S if self.kind == "reach" else ISOLATION_DEADLINE_S

    @property
    def rounds(self) -> int:
        """Rounds of probes while none is answered: only a reach ping tries again."""
        return REACH_ROUNDS if self.kind == "reach" else 1

    @property
    def size(self) -> int:
        """ICMP payload bytes: full-size frames (the guest MTU less IP and ICMP headers) to a
        peer on another hypervisor, so the tunnel is shown to carry them; 56 otherwise."""
        if self.kind == "reach" and self.dst.outside is None and self.src.host != self.dst.host:
            return min(self.src.mtu, self.dst.mtu) - 28
        return 56


def _ping_script_limit(pings: int) -> float:
    """How long one guest's pings may take in all: every round of a reach ping, plus time
    to start them. Each ping is two processes (a subshell and ping); a one-vCPU TCG guest
    among 32 on two cores was measured to need over 30 s for 16 pings."""
    return REACH_DEADLINE_S * REACH_ROUNDS + 30 + 2 * pings


def ping_from(dom: libvirt.virDomain | None, view: GuestView,
              pings: list[Ping]) -> dict[Ping, tuple[int, int, str] | str]:
    """Run one VM's pings at once; per ping (sent, received, output) or why it did not run."""
    if dom is None or view.error:
        return {p: (view.error or "the domain is not running") for p in pings}
    runnable, out = [], {}
    for p in pings:
        iface = view.iface(p.src)
        if iface is None:
            out[p] = view.missing(p.src)
        else:
            runnable.append((p, f"{iface.ifname},{p.dst.address},{p.size},{p.seconds},"
                                f"{p.rounds}"))
    if not runnable:
        return out
    try:
        _code, text, err = run_sh(dom, _PING_ALL, [arg for _p, arg in runnable],
                                  timeout=_ping_script_limit(len(runnable)))
    except agent.AgentError as exc:
        return {**out, **{p: str(exc) for p, _ in runnable}}
    blocks = parse.sections(text)
    for k, (p, _arg) in enumerate(runnable):
        body = blocks.get(str(k), err.strip())
        sent, received = parse.ping_counts(body)
        out[p] = (sent, received, body.strip())
    return out


def reach_check(p: Ping, result: tuple[int, int, str] | str) -> Check:
    target = pair_target(p.src, p.dst)
    if isinstance(result, str):
        return verdict("reach", target, [f"could not ping: {result}"], {})
    sent, received, text = result
    evidence = {"from": p.src.address, "to": p.dst.address, "segment": p.src.segment_name(),
                "sent": sent, "received": received, "payload": p.size, "output": text[-300:]}
    across = f" on {p.dst.host}, {p.size}-byte payloads" if p.size != 56 else ""
    problems = [] if received > 0 else [
        f"{p.dst.address}{across} does not answer {p.src.address} on {p.src.segment_name()}"]
    return verdict("reach", target, problems, evidence,
                   f"{p.src.address} -> {p.dst.address}{across}: {received}/{sent} replies")


def isolation_check(p: Ping, result: tuple[int, int, str] | str,
                    dst_view: GuestView | None) -> Check:
    """Silence from a peer on another VLAN. ``dst_view`` None: the peer runs on another
    hypervisor, whose own verify shows it up with its address."""
    target = pair_target(p.src, p.dst)
    base = {"from": p.src.address, "to": p.dst.address,
            "segments": [p.src.segment_name(), p.dst.segment_name()]}
    if not same_subnet(p.src, p.dst):
        return skipped("isolation", target, "the addresses are in different subnets: an "
                       "unanswered ping would prove routing, not VLAN isolation", base)
    if isinstance(result, str):
        return skipped("isolation", target, f"could not ping: {result}", base)
    if dst_view is not None and not healthy(dst_view.iface(p.dst), p.dst):
        return skipped("isolation", target, f"{p.dst.target} is not up with its address, so "
                       "silence would prove nothing", base)
    sent, received, text = result
    evidence = {**base, "sent": sent, "received": received, "output": text[-300:]}
    problems = [] if received == 0 else [
        f"{p.dst.address} on {p.dst.segment_name()} answers {p.src.address} on "
        f"{p.src.segment_name()}: VLANs leak"]
    return verdict("isolation", target, problems, evidence,
                   f"{p.src.address} -/-> {p.dst.address}: 0/{sent} replies, as required")
