"""The hypervisors' networks in the root namespace, through pyroute2: a management bridge
(with this machine's only new address), an underlay bridge (no address), and per hypervisor
one veth pair into each, whose far ends (`mgmt0`, `underlay0`) live in its namespace.

Every interface made here carries ``OWNER_TAG`` as its alias; removal goes by that tag only.
Nothing here changes a firewall, a sysctl or an interface of this machine: a Linux bridge
forwards without ip_forward, and what br_netfilter would do to bridged traffic is reported
(``forward_warnings``), not changed.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.errors import HostError, OperationError
from provision.hypervisors.plan import (
    MGMT_BRIDGE,
    MGMT_GATEWAY,
    MGMT_IFNAME,
    OWNER_TAG,
    UNDERLAY_BRIDGE,
    UNDERLAY_IFNAME,
    Hypervisor,
    iptables_forward_drops,
    nft_forward_drops,
    root_links,
    route_conflicts,
)

if TYPE_CHECKING:
    from pyroute2 import IPRoute

BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


@contextlib.contextmanager
def _ipr() -> Iterator[IPRoute]:
    """pyroute2, imported on first use: importing this package must not cost its ~130 ms,
    since `host.statedir` asks ``daemons`` on every `up` whether it runs in a hypervisor."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        yield ipr


def _links(ipr: IPRoute) -> dict[str, tuple[int, str | None]]:
    """name -> (index, alias) of every link in the root namespace."""
    return {
        link.get_attr("IFLA_IFNAME"): (link["index"], link.get_attr("IFLA_IFALIAS"))
        for link in ipr.get_links()
    }


def owned_links() -> list[str]:
    """Names of the interfaces in the root namespace that carry our tag."""
    with _ipr() as ipr:
        return [name for name, (_, alias) in _links(ipr).items() if alias == OWNER_TAG]


def check_conflicts(hosts: Iterable[Hypervisor]) -> None:
    """HostError (exit 4) when this machine already routes our subnets, or has an interface
    of our names that is not ours; nothing is changed either way."""
    hosts = tuple(hosts)
    with _ipr() as ipr:
        links = _links(ipr)
        names = {index: name for name, (index, _) in links.items()}
        routes = [
            (f"{r.get_attr('RTA_DST')}/{r['dst_len']}", names.get(r.get_attr("RTA_OIF"), ""))
            for r in ipr.route("dump", family=socket.AF_INET)
            if r.get_attr("RTA_DST") is not None
        ]  # fmt: skip
    problems = route_conflicts(routes, own=[n for n, (_, a) in links.items() if a == OWNER_TAG])
    problems += [f"interface {name} exists and is not virtio-lab's (no alias {OWNER_TAG})"
                 for name in root_links(hosts)
                 if name in links and links[name][1] != OWNER_TAG]  # fmt: skip
    if problems:
        raise HostError("cannot make the hypervisors' networks: " + "; ".join(problems) +
                        "; free these or run on a machine without them")  # fmt: skip


def _create(ipr: IPRoute, ifname: str, **kind: Any) -> int:
    """Create a link and tag it at once (the kernel ignores an alias given on creation)."""
    from pyroute2.netlink.exceptions import NetlinkError

    ipr.link("add", ifname=ifname, **kind)
    index = ipr.link_lookup(ifname=ifname)[0]
    try:
        ipr.link("set", index=index, ifalias=OWNER_TAG)
    except NetlinkError:
        ipr.link("del", index=index)
        raise
    return index


def ensure_bridges() -> None:
    """Both bridges, up; the management one with this machine's address MGMT_GATEWAY."""
    with _ipr() as ipr:
        links = _links(ipr)
        for name in (MGMT_BRIDGE, UNDERLAY_BRIDGE):
            index = links[name][0] if name in links else _create(ipr, name, kind="bridge")
            ipr.link("set", index=index, state="up")
            if name != MGMT_BRIDGE:
                continue
            have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index)}
            want = (str(MGMT_GATEWAY.ip), MGMT_GATEWAY.network.prefixlen)
            if want not in have:
                ipr.addr("add", index=index, address=want[0], prefixlen=want[1])


def plug(host: Hypervisor, init_pid: int) -> None:
    """Two veth pairs from the bridges into the hypervisor's network namespace, where their
    ends are called mgmt0 and underlay0 (`inside.py` addresses them)."""
    from pyroute2.netlink.exceptions import NetlinkError

    unplug(host)
    with _ipr() as ipr:
        bridges = _links(ipr)
        for name, peer, bridge in ((host.mgmt_veth, MGMT_IFNAME, MGMT_BRIDGE),
                                   (host.underlay_veth, UNDERLAY_IFNAME, UNDERLAY_BRIDGE)):
            try:
                index = _create(ipr, name, kind="veth",
                                peer={"ifname": peer, "net_ns_pid": init_pid})
                ipr.link("set", index=index, master=bridges[bridge][0], state="up")
            except NetlinkError as exc:
                raise OperationError(f"{host.name}: cannot create veth {name}: "
                                     f"{exc.args[-1]}") from None  # fmt: skip
        # The new mgmt0 has a new MAC: forget the old one, or this machine keeps sending to
        # it until its neighbour entry goes stale (sshd "did not answer" for 20 s, 1 run in 3)
        with contextlib.suppress(NetlinkError):
            ipr.neigh("del", dst=str(host.mgmt_ip.ip), ifindex=bridges[MGMT_BRIDGE][0])


def plugged(host: Hypervisor) -> bool:
    """Whether both of the hypervisor's veths are here, ours, up and on their bridges."""
    with _ipr() as ipr:
        links = _links(ipr)
        for name, bridge in ((host.mgmt_veth, MGMT_BRIDGE), (host.underlay_veth, UNDERLAY_BRIDGE)):
            if name not in links or links[name][1] != OWNER_TAG or bridge not in links:
                return False
            link = ipr.get_links(links[name][0])[0]
            if link.get_attr("IFLA_MASTER") != links[bridge][0] or link["flags"] & 1 == 0:
                return False
    return True


def unplug(host: Hypervisor) -> None:
    """Remove the hypervisor's veths (ours only) from the root namespace."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr() as ipr:
        links = _links(ipr)
        for name in (host.mgmt_veth, host.underlay_veth):
            if name in links and links[name][1] == OWNER_TAG:
                with contextlib.suppress(NetlinkError):  # gone with its namespace meanwhile
                    ipr.link("del", index=links[name][0])


def remove_all() -> list[str]:
    """Remove every interface carrying our tag, veths before bridges; return their names."""
    from pyroute2.netlink.exceptions import NetlinkError

    removed = []
    with _ipr() as ipr:
        owned = [(n, i) for n, (i, a) in _links(ipr).items() if a == OWNER_TAG]
        for name, index in sorted(owned, key=lambda o: o[0] in (MGMT_BRIDGE, UNDERLAY_BRIDGE)):
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=index)
                removed.append(name)
    return removed


def forward_warnings() -> list[str]:
    """What may drop traffic bridged between hypervisors: with br_netfilter on
    (bridge-nf-call-iptables=1) it passes the FORWARD hooks of nftables and iptables."""
    try:
        if BRIDGE_NF.read_text().strip() != "1":
            return []
    except OSError:
        return []  # br_netfilter not loaded: bridged frames skip the IP firewall
    problems = []
    if shutil.which("nft"):
        problems += nft_forward_drops(_output(["nft", "list", "ruleset"]))
    legacy = Path("/proc/net/ip_tables_names")
    if shutil.which("iptables-legacy") and legacy.exists() and legacy.read_text().strip():
        problems += iptables_forward_drops(_output(["iptables-legacy", "-S", "FORWARD"]))
    return [
        f"bridge-nf-call-iptables=1 sends traffic between hypervisors through the firewall, "
        f"where {p}; if hypervisors cannot reach each other, allow bridged traffic (e.g. "
        "`iptables -I FORWARD -m physdev --physdev-is-bridged -j ACCEPT`); virtio-lab "
        "changes no firewall"
        for p in problems
    ]


def _output(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=20)
    return proc.stdout if proc.returncode == 0 else ""
