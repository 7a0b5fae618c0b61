"""Pure parsers for what the verifier reads: QEMU's command line, /proc fd and thread facts,
and the guest's ``ethtool -S``, ``/proc/interrupts``, ``/proc/net/snmp``, ping and iperf3
output. No I/O here, so every parser has a unit test with real captured text.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

TUN_DEVICE = "/dev/net/tun"
VHOST_DEVICE = "/dev/vhost-net"


@dataclass(frozen=True)
class QemuNic:
    """A virtio-net device on QEMU's command line and the tap netdev behind it."""

    mac: str
    device_id: str  # -device id, e.g. "net0"
    netdev: str  # -netdev id, e.g. "hostnet0"
    netdev_type: str  # "tap" for the lab's NICs
    tap_fds: tuple[int, ...]  # fds=a:b:c (or fd=a): one per queue
    vhost: bool  # vhost=on was asked for
    vhost_fds: tuple[int, ...]  # vhostfds=a:b:c (or vhostfd=a)


def split_keyval(text: str, implied: str) -> dict[str, str]:
    """QEMU's ``key=value,key=value`` option syntax (``,,`` is a literal comma).

    The first item may omit its key (``tap,id=x`` means ``type=tap``): it gets ``implied``.
    """
    items: list[str] = []
    cur = ""
    i = 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                cur += ","
                i += 2
                continue
            items.append(cur)
            cur = ""
        else:
            cur += text[i]
        i += 1
    items.append(cur)
    out: dict[str, str] = {}
    for n, item in enumerate(items):
        key, eq, value = item.partition("=")
        if not eq and n == 0:
            out[implied] = key
        elif eq:
            out[key] = value
    return out


def _option(value: str, implied: str) -> dict[str, Any]:
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}
    return dict(split_keyval(value, implied))


def _fds(value: Any) -> tuple[int, ...]:
    if value is None or value == "":
        return ()
    parts = str(value).split(":")
    return tuple(int(p) for p in parts if p.isdigit())


def _on(value: Any) -> bool:
    return value is True or str(value).lower() in ("on", "true", "yes", "1")


def qemu_nics(argv: list[str]) -> dict[str, QemuNic]:
    """virtio-net NICs on a QEMU command line (``/proc/PID/cmdline``), keyed by MAC."""
    netdevs: dict[str, dict[str, Any]] = {}
    devices: list[dict[str, Any]] = []
    for flag, value in itertools.pairwise(argv):
        if flag == "-netdev":
            nd = _option(value, "type")
            if "id" in nd:
                netdevs[str(nd["id"])] = nd
        elif flag == "-device":
            dev = _option(value, "driver")
            if str(dev.get("driver", "")).startswith("virtio-net") and dev.get("mac"):
                devices.append(dev)
    out: dict[str, QemuNic] = {}
    for dev in devices:
        nd = netdevs.get(str(dev.get("netdev", "")), {})
        mac = str(dev["mac"]).lower()
        out[mac] = QemuNic(
            mac=mac,
            device_id=str(dev.get("id", "")),
            netdev=str(dev.get("netdev", "")),
            netdev_type=str(nd.get("type", "")),
            tap_fds=_fds(nd.get("fds", nd.get("fd"))),
            vhost=_on(nd.get("vhost", False)),
            vhost_fds=_fds(nd.get("vhostfds", nd.get("vhostfd"))),
        )
    return out


def split_cmdline(raw: bytes) -> list[str]:
    """``/proc/PID/cmdline``: NUL-separated arguments."""
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def fdinfo_iff(text: str) -> str | None:
    """The interface a tun fd is attached to (``iff:`` in ``/proc/PID/fdinfo/FD``)."""
    m = re.search(r"^iff:\s*(\S+)", text, re.MULTILINE)
    return m.group(1) if m else None


def vhost_thread_count(comms: list[str], pid: int) -> int:
    """vhost-net workers of a QEMU: threads (Linux >= 6.4) or kernel threads ``vhost-PID``."""
    return sum(1 for c in comms if c.strip() == f"vhost-{pid}")


def nic_backend(nic: QemuNic, fd_links: dict[int, str]) -> str:
    """The backend a NIC really uses: ``vhost-net`` when every queue has a vhost fd open on
    /dev/vhost-net, ``userspace`` when none has, ``partial`` otherwise."""
    if not nic.vhost_fds:
        return "userspace"
    vhost = [fd for fd in nic.vhost_fds if fd_links.get(fd) == VHOST_DEVICE]
    if len(vhost) == len(nic.tap_fds) == len(nic.vhost_fds):
        return "vhost-net"
    return "partial"


def combine_backends(paths: list[str]) -> str:
    """One word for several NICs or VMs: the common path, ``mixed``, or ``unknown``."""
    seen = set(paths)
    if not seen:
        return "unknown"
    return seen.pop() if len(seen) == 1 else "mixed"


def backend_problem(spec: str, resolved: str, actual: str) -> str | None:
    """Why the path QEMU uses is wrong for the lab, or None when it is right.

    ``spec`` is the lab file's backend (auto | vhost-net | userspace); ``resolved`` what
    ``auto`` chose on this host; ``actual`` what QEMU's fds show.
    """
    wanted = resolved if spec == "auto" else spec
    if actual == wanted:
        return None
    if wanted == "vhost-net":
        return (f"lab.backend is {spec} but QEMU uses {actual}: it fell back from vhost-net "
                "(no vhost fds open on /dev/vhost-net)")
    return f"lab.backend is {spec} (wants {wanted}) but QEMU uses {actual}"


# -- guest text ------------------------------------------------------------------------
def sections(text: str) -> dict[str, str]:
    """Split guest script output on ``@@ header`` lines into {header: body}."""
    out: dict[str, str] = {}
    key: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("@@ "):
            if key is not None:
                out[key] = "\n".join(body)
            key, body = line[3:].strip(), []
        elif key is not None:
            body.append(line)
    if key is not None:
        out[key] = "\n".join(body)
    return out


def ethtool_stats(text: str) -> dict[str, int]:
    """``ethtool -S`` output as {counter: value}."""
    out = {}
    for m in re.finditer(r"^\s*([\w.\-]+):\s*(-?\d+)\s*$", text, re.MULTILINE):
        out[m.group(1)] = int(m.group(2))
    return out


def queue_packets(stats: dict[str, int]) -> tuple[dict[int, int], dict[int, int]]:
    """Per-queue packet counters from virtio_net's ``ethtool -S``: (rx, tx) by queue index."""
    rx: dict[int, int] = {}
    tx: dict[int, int] = {}
    for key, value in stats.items():
        m = re.fullmatch(r"(rx|tx)_queue_(\d+)_packets", key)
        if m:
            (rx if m.group(1) == "rx" else tx)[int(m.group(2))] = value
    return rx, tx


def interrupts(text: str) -> dict[str, int]:
    """``/proc/interrupts``: {action name: total over CPUs}, e.g. ``virtio0-input.0``."""
    lines = text.splitlines()
    if not lines:
        return {}
    ncpu = len(lines[0].split())
    out = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) < ncpu + 2 or not parts[0].endswith(":"):
            continue
        counts = parts[1 : ncpu + 1]
        if all(c.isdigit() for c in counts):
            out[parts[-1]] = sum(int(c) for c in counts)
    return out


def interrupt_queues(irqs: dict[str, int], device: str) -> tuple[dict[int, int], dict[int, int]]:
    """(rx, tx) interrupt totals per queue of one virtio device (``virtio0``)."""
    rx: dict[int, int] = {}
    tx: dict[int, int] = {}
    for name, total in irqs.items():
        m = re.fullmatch(re.escape(device) + r"-(input|output)\.(\d+)", name)
        if m:
            (rx if m.group(1) == "input" else tx)[int(m.group(2))] = total
    return rx, tx


def snmp(text: str) -> dict[str, dict[str, int]]:
    """``/proc/net/snmp``: {"Tcp": {"InCsumErrors": 0, ...}, ...}."""
    out: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        h, v = head.split(), values.split()
        if h and v and h[0] == v[0] and len(h) == len(v):
            proto = h[0].rstrip(":")
            out[proto] = {k: int(x) for k, x in zip(h[1:], v[1:], strict=True)
                          if x.lstrip("-").isdigit()}
    return out


def ping_rounds(text: str) -> list[tuple[int, int]]:
    """(transmitted, received) of each of ping's summary lines (one per round of probes)."""
    found = re.findall(r"(\d+) packets transmitted, (\d+) (?:packets )?received", text)
    return [(int(s), int(r)) for s, r in found]


def ping_counts(text: str) -> tuple[int, int]:
    """(transmitted, received) summed over ping's summary lines (one per round of probes);
    (0, 0) when there is none."""
    rounds = ping_rounds(text)
    return sum(s for s, _ in rounds), sum(r for _, r in rounds)


def ping_rtts(text: str) -> tuple[float, ...]:
    """Each reply's round trip in ms (``time=X ms`` of busybox and iputils alike)."""
    return tuple(float(m) for m in re.findall(r"\btime=([\d.]+) ?ms", text))


def iperf_summary(text: str) -> dict[str, Any]:
    """An ``iperf3 -J`` run: bytes sent and received, the receiver's rate, and any error
    (iperf3 3.12 exits 0 after an error when writing JSON, so the JSON decides)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        tail = text.strip()[-200:]
        return {"error": tail or "no output", "sent_bytes": 0, "received_bytes": 0,
                "bits_per_second": None}
    end = data.get("end") or {}
    sent = end.get("sum_sent") or end.get("sum") or {}
    received = end.get("sum_received") or end.get("sum") or {}
    return {
        "error": data.get("error"),
        "sent_bytes": int(sent.get("bytes") or 0),
        "received_bytes": int(received.get("bytes") or 0),
        "bits_per_second": received.get("bits_per_second"),
    }


def deltas(before: dict[int, int], after: dict[int, int], queues: int) -> list[int | None]:
    """Per-queue increase for queues 0..queues-1; None where a counter is missing."""
    return [
        (after[q] - before[q]) if q in before and q in after else None for q in range(queues)
    ]


def size_and_md5(text: str) -> tuple[int, str]:
    """``wc -c`` then ``md5sum`` output: (bytes, hex digest); (0, "") when absent."""
    words = text.split()
    size = int(words[0]) if words and words[0].isdigit() else 0
    digest = words[1] if len(words) > 1 and len(words[1]) == 32 else ""
    return size, digest
