"""The address and name plan of `provision hosts`: which hypervisors, which addresses, which
interfaces, as data.

Pure: nothing here touches the host, so the plan, the conflict test and the parsing of
firewall listings get fast unit tests. Everything `provision hosts` creates in the root
namespace is named here and carries ``OWNER_TAG`` as its interface alias.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from provision.errors import SpecError

MAX_HOSTS = 8
# The alias (IFLA_IFALIAS) on every interface `hosts up` creates in the root namespace:
# `hosts down` removes what carries it, never an interface it only finds by name.
OWNER_TAG = "virtio-lab:hypervisors"
STATE_ROOT = Path("/var/lib/virtio-lab/hypervisors")

# Private ranges (RFC 1918) picked to be rare on real networks; `hosts up` refuses when this
# machine routes either already.
MGMT_NET = IPv4Network("192.168.250.0/24")  # this machine <-> each hypervisor's sshd
UNDERLAY_NET = IPv4Network("192.168.251.0/24")  # between the hypervisors; no address here
MGMT_GATEWAY = IPv4Interface("192.168.250.254/24")  # on MGMT_BRIDGE, this machine's side
MGMT_BRIDGE = "vlhv-mgmt"  # Linux bridge in the root namespace, holds MGMT_GATEWAY
UNDERLAY_BRIDGE = "vlhv-underlay"  # Linux bridge in the root namespace, no address
MGMT_IFNAME = "mgmt0"  # the management NIC inside each hypervisor
UNDERLAY_IFNAME = "underlay0"  # the underlay NIC inside each hypervisor

_NAME = re.compile(r"hv([1-9][0-9]*)")


@dataclass(frozen=True)
class Hypervisor:
    """One namespace hypervisor: its names and addresses."""

    index: int  # K in hvK, 1..MAX_HOSTS

    @property
    def name(self) -> str:
        """Inventory host name, UTS hostname and state directory name."""
        return f"hv{self.index}"

    @property
    def mgmt_ip(self) -> IPv4Interface:
        """Address of mgmt0 inside: the inventory's ansible_host; sshd listens only here."""
        return IPv4Interface(f"{MGMT_NET.network_address + self.index}/{MGMT_NET.prefixlen}")

    @property
    def underlay_ip(self) -> IPv4Interface:
        """Address of underlay0 inside: the inventory's virtio_lab_underlay_ip."""
        net = UNDERLAY_NET
        return IPv4Interface(f"{net.network_address + self.index}/{net.prefixlen}")

    @property
    def mgmt_veth(self) -> str:
        """Root-namespace end of the management veth, a port of MGMT_BRIDGE."""
        return f"vlhv{self.index}-mgmt"

    @property
    def underlay_veth(self) -> str:
        """Root-namespace end of the underlay veth, a port of UNDERLAY_BRIDGE."""
        return f"vlhv{self.index}-underlay"

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.name


def plan_hypervisors(count: int) -> tuple[Hypervisor, ...]:
    """hv1..hvN; SpecError (exit 3) unless 1 <= N <= MAX_HOSTS."""
    if not 1 <= count <= MAX_HOSTS:
        raise SpecError("N", f"{count} hypervisors asked; give 1 to {MAX_HOSTS}")
    return tuple(Hypervisor(k) for k in range(1, count + 1))


def parse_name(name: str) -> Hypervisor:
    """The hypervisor called `name` (hv1..hv8); SpecError (exit 3) for anything else."""
    match = _NAME.fullmatch(name)
    if match is None or int(match.group(1)) > MAX_HOSTS:
        raise SpecError("HOST", f"{name!r} is not a hypervisor name; use hv1 to hv{MAX_HOSTS}")
    return Hypervisor(int(match.group(1)))


def root_links(hosts: Iterable[Hypervisor]) -> tuple[str, ...]:
    """Every interface `hosts up` makes in the root namespace for these hypervisors."""
    names = [MGMT_BRIDGE, UNDERLAY_BRIDGE]
    for host in hosts:
        names += [host.mgmt_veth, host.underlay_veth]
    return tuple(names)


# ---- conflicts with this machine's own networks --------------------------------------------


def route_conflicts(routes: Iterable[tuple[str, str]], own: Iterable[str] = ()) -> list[str]:
    """Which of this machine's routes overlap MGMT_NET or UNDERLAY_NET.

    `routes` are (destination CIDR, device) pairs; default routes and routes through our own
    interfaces (`own`) do not count. Each conflict is one line naming route and subnet.
    """
    mine = set(own)
    found: dict[tuple[str, IPv4Network], str] = {}  # one line per device and subnet
    for dst, dev in routes:
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if net.version != 4 or net.prefixlen == 0 or dev in mine:
            continue
        for ours, use in ((MGMT_NET, "management"), (UNDERLAY_NET, "underlay")):
            if net.overlaps(ours) and (dev, ours) not in found:
                found[dev, ours] = f"route {net} dev {dev or '?'} overlaps the {use} subnet {ours}"
    return list(found.values())


# ---- bridged traffic and the firewall ------------------------------------------------------


def nft_forward_drops(ruleset: str) -> list[str]:
    """Chains of an `nft list ruleset` listing that hook `forward` and may drop: with
    br_netfilter (bridge-nf-call-iptables=1) bridged IPv4 between hypervisors passes them."""
    problems = []
    table, chain, hooked = "", "", False
    for raw in ruleset.splitlines():
        line = raw.strip()
        if line.startswith("table "):
            table = line.removeprefix("table ").removesuffix("{").strip()
        elif line.startswith("chain "):
            chain, hooked = line.removeprefix("chain ").removesuffix("{").strip(), False
        elif "hook forward" in line:
            hooked = True
            if "policy drop" in line:
                problems.append(f"nft {table} chain {chain}: policy drop")
        elif hooked and re.search(r"\b(drop|reject)\b", line):
            problems.append(f"nft {table} chain {chain}: rule `{line}`")
    return problems


def iptables_forward_drops(listing: str) -> list[str]:
    """Policy and rules of an `iptables -S FORWARD` listing that may drop bridged traffic."""
    problems = []
    for line in listing.splitlines():
        if line.startswith("-P FORWARD") and line.split()[-1] in ("DROP", "REJECT"):
            problems.append(f"iptables FORWARD policy {line.split()[-1]}")
        elif line.startswith("-A FORWARD") and re.search(r"-j (DROP|REJECT)\b", line):
            problems.append(f"iptables rule `{line}`")
    return problems
