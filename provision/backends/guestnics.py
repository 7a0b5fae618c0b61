"""The guest's NICs as a shell script inside the guest prints them, and how the host reads
that: the scripts (constant text, run through the guest agent by ``agent``) and their
parsers, pure.

VLAN sub-interfaces share their parent's MAC, so the reports also print the guest's
/proc/net/vlan/config ("vlan NAME VID PARENT"): NICs stay keyed by MAC, and each carries
its VLAN sub-interfaces, matched by interface name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from provision.core.observed import ObservedGuestNic, ObservedGuestVlan

# Builtins only: the VLAN sub-interfaces as "vlan NAME VID PARENT" (nothing when the guest
# has none: 8021q is loaded on demand and /proc/net/vlan exists only then).
_VLAN_LIST = r"""
[ -r /proc/net/vlan/config ] && while IFS='| ' read -r n v p; do
  case "$v" in [0-9]*) echo "vlan $n $v $p" ;; esac
done < /proc/net/vlan/config
"""

# One round trip reads every NIC: name, MAC, operstate, flags, driver, channels, IPv4
# addresses. Shell builtins but for one `ethtool -l` per device and one `ip` in all (a fork
# costs ~10 ms under TCG, several times that on a loaded host: the pipes to awk and the
# cat/readlink/basename of each NIC took 0.4-0.6 s of a 3-VM verify's per-VM phase). The
# driver is the device's uevent DRIVER=, which is what device/driver links to; ethtool's and
# ip's own lines are parsed on the host. Constant text run by the guest's own shell; nothing
# from the spec is interpolated.
NIC_REPORT = _VLAN_LIST + r"""
for d in /sys/class/net/*; do
  n=${d##*/}; [ "$n" = lo ] && continue
  { read -r a < "$d/address" && read -r o < "$d/operstate" && read -r f < "$d/flags"; } \
    2> /dev/null || continue  # gone while read: no line, not the last NIC's values
  drv=none
  if [ -r "$d/device/uevent" ]; then
    while IFS== read -r k v; do [ "$k" = DRIVER ] && drv=$v; done < "$d/device/uevent"
  fi
  echo "nic $n $a $o $f $drv"
  [ -e "$d/device" ] && ethtool -l "$n" 2>/dev/null
done
ip -o -4 addr show
"""


# The convergence read: shell builtins only (a fork costs ~10 ms under TCG). The count of
# queues/rx-* directories is the device's real RX queue count, which virtio_net sets to the
# current combined channels.
NIC_STATE = _VLAN_LIST + r"""
for d in /sys/class/net/*; do
  n=${d##*/}; [ "$n" = lo ] && continue
  { read -r a < "$d/address" && read -r f < "$d/flags"; } 2> /dev/null || continue
  c=0; for q in "$d"/queues/rx-*; do c=$((c+1)); done
  echo "nic $n $a $f $c"
done
"""


def parse_nic_report(text: str) -> dict[str, ObservedGuestNic]:
    """Parse ``NIC_REPORT`` output into NICs keyed by MAC, VLAN sub-interfaces attached.
    Channels: each ``Combined:`` line of ``ethtool -l`` (or ``combined N``) after a NIC's
    line, maximum first, then current; addresses: ``ip -o -4 addr`` lines matched by name
    (or ``addr A/P`` after a NIC's line)."""
    links: dict[str, dict[str, Any]] = {}
    cur: dict[str, Any] | None = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "nic" and len(parts) >= 6:
            cur = {
                "ifname": parts[1],
                "mac": parts[2].lower(),
                "up": int(parts[4], 16) & 1 == 1,
                "driver": None if parts[5] == "none" else parts[5],
                "combined": [],
                "addresses": [],
            }
            links[cur["ifname"]] = cur
        elif cur is not None and parts[0] in ("combined", "Combined:") and len(parts) == 2:
            cur["combined"].append(int(parts[1]) if parts[1].isdigit() else None)
        elif cur is not None and parts[0] == "addr" and len(parts) == 2:
            cur["addresses"].append(parts[1])
        elif parts[0].endswith(":") and len(parts) >= 4 and parts[2] == "inet":
            link = links.get(parts[1].split("@", 1)[0])
            if link is not None:
                link["addresses"].append(parts[3])
    observed = {}
    for name, n in links.items():
        combined = n["combined"] + [None, None]  # ethtool prints maximum first, then current
        observed[name] = ObservedGuestNic(
            n["mac"], name, combined[1], combined[0], tuple(n["addresses"]), n["up"], n["driver"]
        )
    return _by_mac(observed, _parse_vlans(text))


def parse_nic_state(text: str, interfaces: list[dict[str, Any]]) -> dict[str, ObservedGuestNic]:
    """Parse ``NIC_STATE`` output and the ``guest-network-get-interfaces`` answer into NICs
    keyed by MAC; addresses are matched by interface name (a VLAN shares its parent's MAC)."""
    addresses = {
        i.get("name", ""): tuple(
            f"{a['ip-address']}/{a['prefix']}" for a in i.get("ip-addresses", [])
            if a.get("ip-address-type") == "ipv4"
        )
        for i in interfaces
    }
    observed = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "nic":
            name = parts[1]
            observed[name] = ObservedGuestNic(
                parts[2].lower(), name, int(parts[4]), None, addresses.get(name, ()),
                int(parts[3], 16) & 1 == 1,
            )
    return _by_mac(observed, _parse_vlans(text))


def _parse_vlans(text: str) -> dict[str, tuple[int, str]]:
    """The ``_VLAN_LIST`` lines: VLAN interface name -> (VLAN id, parent name)."""
    vlans = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "vlan" and parts[2].isdigit():
            vlans[parts[1]] = (int(parts[2]), parts[3])
    return vlans


def _by_mac(
    links: dict[str, ObservedGuestNic], vlans: dict[str, tuple[int, str]]
) -> dict[str, ObservedGuestNic]:
    """Every interface that is not a VLAN, keyed by MAC, with its VLANs sorted by id."""
    subs: dict[str, list[ObservedGuestVlan]] = {}
    for name, (vid, parent) in vlans.items():
        if name in links:
            link = links[name]
            subs.setdefault(parent, []).append(
                ObservedGuestVlan(vid, name, link.addresses, link.up)
            )
    return {
        link.mac: replace(link, vlans=tuple(sorted(subs.get(name, []), key=lambda v: v.vid)))
        for name, link in links.items()
        if name not in vlans
    }
