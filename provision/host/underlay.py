"""The underlay of a hypervisor whose OVS runs the userspace (``netdev``) datapath.

Tunnels between hypervisors are OVS ports (``core/tunnels``). On the kernel datapath the
host's routing table carries them and nothing is to be set up. On the userspace datapath
OVS sends tunnel packets itself, so the underlay address must sit on an OVS bridge that holds
the underlay NIC (OVS's "Connecting VMs Using Tunnels (Userspace)": ``br-phy``): this module
makes that bridge, ``vlab-underlay``, moves the NIC into it and the address from the NIC to
it. It changes a NIC the host owns, so it runs only when asked (``provision host prepare
--underlay NIC=ADDRESS/PREFIX``, or the inventory's ``virtio_lab_underlay_interface``), and
it is idempotent: a second run finds everything in place and does nothing.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Callable

from pyroute2 import IPRoute

from provision.backends.ovs import Ovs
from provision.errors import HostError, OperationError, SpecError

UNDERLAY_BRIDGE = "vlab-underlay"
OWNER_KEY = "virtio-lab-underlay"  # Bridge.external_ids: the NIC it was made for


def parse_underlay(text: str) -> tuple[str, ipaddress.IPv4Interface]:
    """``NIC=ADDRESS/PREFIX`` as given to ``--underlay``."""
    nic, sep, address = text.partition("=")
    try:
        if not sep or not nic or "/" not in address:
            raise ValueError
        return nic, ipaddress.IPv4Interface(address)
    except ValueError:
        raise SpecError("--underlay", f"{text!r} is not NIC=ADDRESS/PREFIX; write e.g. "
                        "--underlay eth1=192.168.251.1/24") from None


def ensure_underlay(nic: str, address: ipaddress.IPv4Interface, kernel_datapath: bool,
                    log: Callable[[str], None] = lambda s: None) -> list[str]:
    """Make ``nic`` the port of the underlay bridge holding ``address``; the actions taken:
    none when all is in place, or when this host has the OVS kernel datapath (lab bridges
    are then `system`, whose tunnels the routing table carries; a lab that forces `netdev`
    bridges on such a host sets the underlay up by hand)."""
    if kernel_datapath:
        return []
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=nic):
            raise HostError(f"underlay NIC {nic} does not exist on this host; name one that "
                            "`ip link` shows")
    actions = _ensure_bridge(nic)
    actions += _move_address(nic, address)
    actions += _ensure_ovs_route(address.network)
    for action in actions:
        log(action)
    return actions


def _ensure_bridge(nic: str) -> list[str]:
    ovs = Ovs()
    try:
        bridges = ovs.bridges()
        ports = ovs.ports()
        seen = bridges.get(UNDERLAY_BRIDGE)
        owner = _owner(ovs)
        if seen is not None and owner is None:
            raise HostError(f"OVS bridge {UNDERLAY_BRIDGE} exists and virtio-lab did not make "
                            "it; remove it or set the underlay up by hand")
        if nic in ports and ports[nic].bridge != UNDERLAY_BRIDGE:
            raise HostError(f"underlay NIC {nic} is a port of OVS bridge {ports[nic].bridge}; "
                            "take it out first")
        api, actions = ovs.api, []
        try:
            with api.transaction(check_error=True) as txn:
                if seen is None:
                    txn.add(api.add_br(UNDERLAY_BRIDGE, datapath_type="netdev"))
                    txn.add(api.db_set("Bridge", UNDERLAY_BRIDGE,
                                       ("external_ids", {OWNER_KEY: nic})))
                    actions.append(f"created OVS bridge {UNDERLAY_BRIDGE} (netdev)")
                if nic not in ports:
                    txn.add(api.add_port(UNDERLAY_BRIDGE, nic))
                    actions.append(f"added {nic} to {UNDERLAY_BRIDGE}")
        except Exception as exc:  # ovsdbapp raises bare Exception subclasses
            raise OperationError(f"OVSDB transaction for the underlay failed: {exc}") from None
        return actions
    finally:
        ovs.close()


def _owner(ovs: Ovs) -> str | None:
    for row in ovs.api.tables["Bridge"].rows.values():
        if row.name == UNDERLAY_BRIDGE:
            return dict(row.external_ids).get(OWNER_KEY)
    return None


def _move_address(nic: str, address: ipaddress.IPv4Interface) -> list[str]:
    """The address on the bridge's internal interface (up), and no longer on the NIC."""
    actions = []
    with IPRoute() as ipr:
        br = ipr.link_lookup(ifname=UNDERLAY_BRIDGE)
        if not br:
            raise OperationError(f"ovs-vswitchd made no interface {UNDERLAY_BRIDGE}; see its log")
        link = ipr.get_links(br[0])[0]
        if not link["flags"] & 1:  # IFF_UP; before the address, so its route comes with it
            ipr.link("set", index=br[0], state="up")
            actions.append(f"set {UNDERLAY_BRIDGE} up")
        on_nic = _has(ipr, nic, address)
        if not _has(ipr, UNDERLAY_BRIDGE, address):
            if on_nic:
                ipr.addr("del", index=ipr.link_lookup(ifname=nic)[0], address=str(address.ip),
                         prefixlen=address.network.prefixlen)
                actions.append(f"removed {address} from {nic}")
            ipr.addr("add", index=br[0], address=str(address.ip),
                     prefixlen=address.network.prefixlen)
            actions.append(f"moved {address} to {UNDERLAY_BRIDGE}")
    return actions


def _ensure_ovs_route(network: ipaddress.IPv4Network) -> list[str]:
    """OVS's own route to the underlay (``ovs/route/show``), which userspace tunnels use.
    It mirrors the kernel's, but one of three fresh hypervisors here missed the subnet
    route of a just-made bridge: add it where it is missing."""
    entry = f"{network} dev {UNDERLAY_BRIDGE}"
    for _ in range(20):  # ovs-vswitchd re-reads the kernel's table after a change
        shown = _appctl("ovs/route/show")
        if entry in shown:
            return []
        time.sleep(0.1)
    _appctl("ovs/route/add", str(network), UNDERLAY_BRIDGE)
    return [f"added OVS route {entry}"]


def _appctl(*args: str) -> str:
    proc = subprocess.run(["ovs-appctl", *args], capture_output=True, text=True, timeout=30,
                          check=False)
    if proc.returncode != 0:
        raise OperationError(f"ovs-appctl {' '.join(args)} failed: "
                             f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _has(ipr: IPRoute, ifname: str, address: ipaddress.IPv4Interface) -> bool:
    index = ipr.link_lookup(ifname=ifname)
    if not index:
        return False
    return any(a.get_attr("IFA_ADDRESS") == str(address.ip)
               and a["prefixlen"] == address.network.prefixlen
               for a in ipr.get_addr(index=index[0], family=2))
