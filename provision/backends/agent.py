"""Inside the guests, through the QEMU guest agent as libvirt exposes it (guest-exec and
friends): wait for the agent, read the NICs and their VLAN sub-interfaces, set channels and
addresses, create VLAN sub-interfaces.

VLAN sub-interfaces share their parent's MAC, so the reports below also print the guest's
/proc/net/vlan/config ("vlan NAME VID PARENT"): NICs stay keyed by MAC, and each carries
its VLAN sub-interfaces, matched by interface name.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import time
from typing import Any

import libvirt
import libvirt_qemu

from provision.backends.guestnics import NIC_REPORT, NIC_STATE, parse_nic_report, parse_nic_state
from provision.core.desired import GuestNic
from provision.core.observed import ObservedGuestNic
from provision.core.render import console_log
from provision.errors import OperationError, SpecError

# Loads 802.1Q: tiny lists its modules in /etc/vlab/modules-vlan (provision/image/init does
# the same at boot when the command line has VLANs); a full distribution has modprobe.
# Constant text; nothing from the spec is interpolated.
_LOAD_VLAN_MODULES = r"""
if [ -r /etc/vlab/modules-vlan ]; then
  while read -r m; do insmod "/lib/modules/$m" || exit 1; done < /etc/vlab/modules-vlan
else
  modprobe 8021q
fi
"""
IFNAMSIZ = 15  # the longest interface name Linux accepts


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
                    f"{timeout:.0f} s ({exc}); {console_hint(dom.name())}"
                ) from None
            time.sleep(0.05)


def console_hint(domain: str) -> str:
    """Where to look when a guest did not come up: its console log, with the last line it
    printed when that log is readable here."""
    path = console_log(domain)
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [x.strip() for x in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return f"its console: {path}"
    last = next((x for x in reversed(lines) if x), "")
    return f"its console: {path}" + (f" (last line: {last[-160:]!r})" if last else " (empty)")


def wait_cloud_init(dom: libvirt.virDomain, timeout: float) -> float:
    """Wait until cloud-init has finished in the guest (``cloud-init status --wait``);
    return the seconds waited. AgentError naming the VM when it failed or did not finish:
    a guest whose seed was not applied is not the lab."""
    start = time.monotonic()
    try:
        code, out, err = guest_exec(dom, "/bin/sh", ["-c", _CLOUD_INIT_WAIT], timeout=timeout)
    except AgentError as exc:
        raise AgentError(f"{exc}; cloud-init did not finish: see /var/log/cloud-init.log "
                         "in the guest") from None
    if code == 127:
        raise AgentError(f"{dom.name()}: the image has no cloud-init, so its seed (network, "
                         "channels, agent) cannot be applied; use an image with cloud-init")
    # 0: done; 2: done with recoverable errors (warnings, e.g. a deprecated key): the lab's
    # settings are checked by reading the NICs back, not by trusting cloud-init.
    if code not in (0, 2):
        detail = " ".join((out + err).split())[-300:]
        raise AgentError(f"{dom.name()}: cloud-init failed (exit {code}): {detail}; see "
                         "/var/log/cloud-init.log in the guest")
    return time.monotonic() - start


# cloud-init --wait polls every 0.25 s; `command -v` tells an image without cloud-init.
_CLOUD_INIT_WAIT = r"""
command -v cloud-init > /dev/null 2>&1 || exit 127
cloud-init status --wait > /dev/null
rc=$?
cloud-init status --long
exit $rc
"""


# Polling guest-exec-status: from 5 ms doubling to every 0.1 s; the NIC reads (``fast``)
# are polled every 5 ms for their first 0.2 s, since they finish within a few polls (each
# poll is an agent round trip of 10 ms or more, so this is no busy loop). Longer scripts
# (cloud-init, verify's pings, run by many guests at once) keep the back-off: every poll
# also wakes qemu-ga on the guest's vCPU that the script is waiting for.
FAST_POLL_S = 0.2
FIRST_DELAY_S = 0.005
MAX_DELAY_S = 0.1


def next_poll_delay(delay: float, elapsed: float, fast: bool = False) -> float:
    """The pause before the next guest-exec-status, after ``delay`` and ``elapsed`` seconds
    since the first poll: for a ``fast`` script the same while it is young; else (and then)
    doubling to the cap."""
    return delay if fast and elapsed < FAST_POLL_S else min(delay * 2, MAX_DELAY_S)


def guest_exec(
    dom: libvirt.virDomain, path: str, args: list[str], timeout: float = 30.0,
    fast: bool = False,
) -> tuple[int, str, str]:
    """Run a program in the guest; return (exit code, stdout, stderr). ``fast``: it
    finishes within a few polls (``next_poll_delay``)."""
    return exec_wait(dom, exec_start(dom, path, args), [path, *args], timeout, fast)


def exec_start(dom: libvirt.virDomain, path: str, args: list[str]) -> int:
    """Start a program in the guest, its output captured; its pid for ``exec_wait``."""
    return int(agent(dom, "guest-exec", {"path": path, "arg": args,
                                         "capture-output": True})["pid"])


def exec_wait(dom: libvirt.virDomain, pid: int, argv: list[str], timeout: float = 30.0,
              fast: bool = False) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the program ``exec_start`` started as ``argv``;
    AgentError naming it when it has not finished within ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    delay = FIRST_DELAY_S
    while time.monotonic() < deadline:
        status = agent(dom, "guest-exec-status", {"pid": pid})
        if status.get("exited"):
            out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
            err = base64.b64decode(status.get("err-data", "")).decode(errors="replace")
            return int(status.get("exitcode", -1)), out, err
        time.sleep(delay)
        delay = next_poll_delay(delay, time.monotonic() - start, fast)
    command = " ".join(argv).split()  # a script's lines folded, then shortened
    shown = " ".join(command)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise AgentError(f"{dom.name()}: `{shown}` did not finish in {timeout:.0f} s; "
                     f"{console_hint(dom.name())}")




def observe_nics(dom: libvirt.virDomain) -> dict[str, ObservedGuestNic]:
    code, out, err = guest_exec(dom, "/bin/sh", ["-c", NIC_REPORT], fast=True)
    if code != 0:
        raise AgentError(f"{dom.name()}: reading the guest's NICs failed: {err.strip()}")
    return parse_nic_report(out)


def observe_nics_fast(dom: libvirt.virDomain) -> dict[str, ObservedGuestNic]:
    """NICs keyed by MAC with channels, addresses, link state and VLAN sub-interfaces, in
    two agent round trips (no driver, no maximum channels: ``observe_nics`` reads those).
    The addresses are asked for while the script runs: its first poll comes that much
    later, and finds it done sooner."""
    argv = ["/bin/sh", "-c", NIC_STATE]
    pid = exec_start(dom, argv[0], argv[1:])
    interfaces = agent(dom, "guest-network-get-interfaces") or []
    code, out, err = exec_wait(dom, pid, argv, fast=True)
    if code != 0:
        raise AgentError(f"{dom.name()}: reading the guest's NICs failed: {err.strip()}")
    return parse_nic_state(out, interfaces)


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


def vlan_ifname(parent_ifname: str, vid: int) -> str:
    """The name the guest gives a VLAN sub-interface (as provision/image/init does)."""
    return f"{parent_ifname}.{vid}"


def configure_vlan(
    dom: libvirt.virDomain, parent_ifname: str, vid: int, address: str | None
) -> None:
    """Make sure the guest has VLAN `vid` on `parent_ifname` as PARENT.VID, with `address`
    ("ip/prefix") as its only address of that family, link-local aside (None: addresses
    left as they are), and its link up.  Loads 8021q first if the guest has not yet.

    Idempotent: a sub-interface with the right VLAN and address is left as it is; a wrong
    address is replaced; an interface of that name on another VLAN or parent is recreated.
    """
    name = vlan_ifname(parent_ifname, vid)
    if not 1 <= vid <= 4094:
        raise SpecError("vlan", f"{vid} is not a VLAN id in 1..4094")
    if len(name) > IFNAMSIZ:
        raise SpecError("vlan", f"interface name {name!r} is over {IFNAMSIZ} characters")
    wanted = _interface(address) if address is not None else None

    def run(*argv: str) -> tuple[int, str, str]:
        return guest_exec(dom, argv[0], list(argv[1:]))

    def check(*argv: str) -> str:
        code, out, err = run(*argv)
        if code != 0:
            raise AgentError(f"{dom.name()}: `{' '.join(argv)}` failed: {err.strip()}")
        return out

    code, out, _err = run("cat", f"/proc/net/vlan/{name}")
    exists = code == 0
    if exists and _vlan_of(out) != (vid, parent_ifname):
        check("ip", "link", "del", name)
        exists = False
    if not exists:
        if run("cat", "/proc/net/vlan/config")[0] != 0:  # 8021q not loaded yet
            check("/bin/sh", "-c", _LOAD_VLAN_MODULES)
        check("ip", "link", "add", "link", parent_ifname, "name", name, "type", "vlan", "id",
              str(vid))
    if wanted is not None and not exists:  # created just now: no address yet
        check("ip", "addr", "add", str(wanted), "dev", name)
    elif wanted is not None:
        family = f"-{wanted.version}"
        shown = check("ip", "-o", family, "addr", "show", "dev", name)
        current = [_interface(a) for a in re.findall(r"\binet6? (\S+)", shown)]
        if [a for a in current if not a.is_link_local] != [wanted]:
            check("ip", family, "addr", "flush", "dev", name)
            check("ip", "addr", "add", str(wanted), "dev", name)
    check("ip", "link", "set", name, "up")


def _interface(address: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        if "/" not in address:
            raise ValueError(f"{address!r} needs a /prefix")
        return ipaddress.ip_interface(address)
    except ValueError as exc:
        raise SpecError("vlan.ip", str(exc)) from None


def _vlan_of(proc_vlan: str) -> tuple[int, str] | None:
    """(VLAN id, parent) from the text of /proc/net/vlan/NAME."""
    vid = re.search(r"\bVID:\s*(\d+)", proc_vlan)
    parent = re.search(r"^Device:\s*(\S+)", proc_vlan, re.MULTILINE)
    return (int(vid.group(1)), parent.group(1)) if vid and parent else None
