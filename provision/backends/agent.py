"""Inside the guests, through the QEMU guest agent as libvirt exposes it (guest-exec and
friends): wait for the agent, read the NICs, set channels and addresses.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import libvirt
import libvirt_qemu

from provision.core.desired import GuestNic
from provision.core.observed import ObservedGuestNic
from provision.errors import OperationError

# One round trip reads every NIC: name, MAC, operstate, driver, channels, IPv4 addresses.
# Constant text run by the guest's own shell; nothing from the spec is interpolated.
_NIC_REPORT = r"""
for d in /sys/class/net/*; do
  n=${d##*/}; [ "$n" = lo ] && continue
  drv=$(basename "$(readlink "$d/device/driver" 2>/dev/null)" 2>/dev/null)
  echo "nic $n $(cat "$d/address") $(cat "$d/operstate") $(cat "$d/flags") ${drv:-none}"
  ethtool -l "$n" 2>/dev/null | awk '/^Combined:/{print "combined", $2}'
  ip -o -4 addr show dev "$n" | awk '{print "addr", $4}'
done
"""


# The convergence read: shell builtins only (a fork costs ~10 ms under TCG). The count of
# queues/rx-* directories is the device's real RX queue count, which virtio_net sets to the
# current combined channels.
_NIC_STATE = r"""
for d in /sys/class/net/*; do
  n=${d##*/}; [ "$n" = lo ] && continue
  read -r a < "$d/address"; read -r f < "$d/flags"
  c=0; for q in "$d"/queues/rx-*; do c=$((c+1)); done
  echo "nic $n $a $f $c"
done
"""


class AgentError(OperationError):
    """The guest agent did not answer or a command in the guest failed."""


def agent(
    dom: libvirt.virDomain, command: str, arguments: dict | None = None, timeout: int = 5
) -> Any:
    """Run one guest agent command; return its ``return`` value."""
    msg: dict[str, Any] = {"execute": command}
    if arguments:
        msg["arguments"] = arguments
    try:
        reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(msg), timeout, 0)
    except libvirt.libvirtError as exc:
        raise AgentError(f"{dom.name()}: guest agent: {exc.get_error_message()}") from None
    return json.loads(reply).get("return")


def wait_agent(dom: libvirt.virDomain, timeout: float) -> float:
    """Wait until the guest agent answers; return the seconds waited."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            agent(dom, "guest-ping", timeout=1)
            return time.monotonic() - start
        except AgentError as exc:
            if time.monotonic() >= deadline:
                raise AgentError(
                    f"{dom.name()}: the guest agent did not answer within "
                    f"{timeout:.0f} s ({exc}); see `virsh console {dom.name()}`"
                ) from None
            time.sleep(0.05)


def guest_exec(
    dom: libvirt.virDomain, path: str, args: list[str], timeout: float = 30.0
) -> tuple[int, str, str]:
    """Run a program in the guest; return (exit code, stdout, stderr)."""
    pid = agent(dom, "guest-exec", {"path": path, "arg": args, "capture-output": True})["pid"]
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        status = agent(dom, "guest-exec-status", {"pid": pid})
        if status.get("exited"):
            out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
            err = base64.b64decode(status.get("err-data", "")).decode(errors="replace")
            return int(status.get("exitcode", -1)), out, err
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise AgentError(f"{dom.name()}: {path} {' '.join(args)} did not finish in {timeout:.0f} s")


def parse_nic_report(text: str) -> dict[str, ObservedGuestNic]:
    """Parse ``_NIC_REPORT`` output into NICs keyed by MAC."""
    nics: dict[str, dict[str, Any]] = {}
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
            nics[cur["mac"]] = cur
        elif cur is not None and parts[0] == "combined" and len(parts) == 2:
            cur["combined"].append(int(parts[1]) if parts[1].isdigit() else None)
        elif cur is not None and parts[0] == "addr" and len(parts) == 2:
            cur["addresses"].append(parts[1])
    out = {}
    for mac, n in nics.items():
        combined = n["combined"] + [None, None]  # ethtool prints maximum first, then current
        out[mac] = ObservedGuestNic(
            mac, n["ifname"], combined[1], combined[0], tuple(n["addresses"]), n["up"], n["driver"]
        )
    return out


def observe_nics(dom: libvirt.virDomain) -> dict[str, ObservedGuestNic]:
    code, out, err = guest_exec(dom, "/bin/sh", ["-c", _NIC_REPORT])
    if code != 0:
        raise AgentError(f"{dom.name()}: reading the guest's NICs failed: {err.strip()}")
    return parse_nic_report(out)


def observe_nics_fast(dom: libvirt.virDomain) -> dict[str, ObservedGuestNic]:
    """NICs keyed by MAC with channels, addresses and link state, in two agent round trips
    (no driver, no maximum channels: ``observe_nics`` reads those)."""
    code, out, err = guest_exec(dom, "/bin/sh", ["-c", _NIC_STATE])
    if code != 0:
        raise AgentError(f"{dom.name()}: reading the guest's NICs failed: {err.strip()}")
    addresses = {
        i.get("hardware-address", "").lower(): tuple(
            f"{a['ip-address']}/{a['prefix']}" for a in i.get("ip-addresses", [])
            if a.get("ip-address-type") == "ipv4"
        )
        for i in agent(dom, "guest-network-get-interfaces") or []
    }
    nics = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "nic":
            mac = parts[2].lower()
            nics[mac] = ObservedGuestNic(mac, parts[1], int(parts[4]), None,
                                         addresses.get(mac, ()), int(parts[3], 16) & 1 == 1)
    return nics


def configure_nic(dom: libvirt.virDomain, ifname: str, nic: GuestNic) -> None:
    """Set channels, the address and the link state of one guest NIC."""
    steps = [["ethtool", "-L", ifname, "combined", str(nic.queues)]]
    if nic.ip:
        steps.append(["ip", "addr", "flush", "dev", ifname])
        steps.append(["ip", "addr", "add", nic.ip, "dev", ifname])
    steps.append(["ip", "link", "set", ifname, "up"])
    for argv in steps:
        code, _out, err = guest_exec(dom, argv[0], argv[1:])
        # ethtool -L exits non-zero when the count is already set; the read-back decides.
        if code != 0 and argv[0] != "ethtool":
            raise AgentError(f"{dom.name()}: `{' '.join(argv)}` failed: {err.strip()}")
