"""Benchmark: QEMU start -> first guest-ping answered by the embedded default guest.

Boots the image `provision image build` makes (building it if needed) directly with
qemu-system-x86_64 (no libvirt), under TCG, 4 vCPUs, 256 MiB, a 4-queue virtio-net NIC on a
multi_queue tap (`-netdev user` when no tap can be made: then 1 queue) and a virtio-serial
channel for the guest agent.  After the first answer it runs `ethtool -l eth0` through
guest-exec to prove the queue count.  The baseline boots the same kernel and flags with an
init that only prints a line and powers off: QEMU start -> that line is what QEMU, the
firmware and the kernel cost on their own.

    python benchmarks/bench_guest_boot.py [--runs 5] [--machine pc] [--append FLAGS]
        [--kernel cloud|host] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provision.image import bootfiles
from provision.image import build as image
from provision.image.cache import GuestImage
from provision.image.cmdline import guest_cmdline

TAP = "vlbench0"
MAC = "52:54:00:be:0c:01"
GUEST_IP = "10.254.0.2/24"
AGENT = "org.qemu.guest_agent.0"


class Agent:
    """A minimal QGA client on QEMU's unix socket chardev (one JSON object per line)."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.deadline = deadline
        self.buffer = b""
        self.sync_ids: set[int] = set()
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(str(path))
                return
            except OSError:
                self.sock.close()
                self._check_time()
                time.sleep(0.005)

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError("the guest agent did not answer in time")

    def send(self, command: str, **arguments: object) -> None:
        message = {"execute": command, **({"arguments": arguments} if arguments else {})}
        # QEMU stops reading the socket while the guest has the port closed, so a send
        # may block until qemu-ga opens it.
        self.sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self, timeout: float) -> dict | None:
        end = min(time.monotonic() + timeout, self.deadline)
        while b"\n" not in self.buffer:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("the agent socket closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        line = line.strip(b"\xff \r")
        return json.loads(line) if line else self.receive(timeout)

    def sync(self) -> None:
        """guest-sync until the agent echoes one of our ids (early ones may sit queued)."""
        while True:
            self._check_time()
            sync_id = 1_000_000_000 + len(self.sync_ids)
            self.sync_ids.add(sync_id)
            self.send("guest-sync", id=sync_id)
            reply = self.receive(0.05)
            while reply is not None:
                if reply.get("return") in self.sync_ids:
                    return
                reply = self.receive(0.001)

    def call(self, command: str, **arguments: object) -> object:
        self.send(command, **arguments)
        while True:
            reply = self.receive(10)
            if reply is None:
                raise TimeoutError(f"{command}: no reply")
            if "error" in reply:
                raise RuntimeError(f"{command}: {reply['error']}")
            result = reply.get("return")
            if not (isinstance(result, int) and result in self.sync_ids):  # a late sync echo
                return result

    def run(self, path: str, *args: str) -> str:
        started = self.call("guest-exec", path=path, arg=list(args), **{"capture-output": True})
        while True:
            status = self.call("guest-exec-status", pid=started["pid"])
            if status["exited"]:
                return base64.b64decode(status.get("out-data", "")).decode()
            time.sleep(0.02)


def make_tap() -> bool:
    """Create the multi_queue tap; False when this host cannot (then -netdev user)."""
    subprocess.run(["ip", "link", "del", TAP], capture_output=True)
    add = ["ip", "tuntap", "add", "dev", TAP, "mode", "tap", "multi_queue"]
    if subprocess.run(add, capture_output=True).returncode != 0:
        return False
    subprocess.run(["ip", "link", "set", TAP, "up"], check=True)
    return True


def machine_argv(args: argparse.Namespace, kernel: Path, initrd: Path, cmdline: str) -> list[str]:
    argv = ["qemu-system-x86_64", "-accel", args.accel, "-machine", args.machine, "-cpu", args.cpu]
    argv += ["-smp", str(args.smp), "-m", str(args.memory), "-display", "none"]
    argv += ["-nodefaults", "-no-user-config"]
    argv += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline]
    return argv + (["-bios", str(args.bios)] if args.bios else [])


def devices_argv(args: argparse.Namespace, workdir: Path, tap: bool) -> list[str]:
    if tap:
        netdev = f"tap,id=n0,ifname={TAP},script=no,downscript=no,queues={args.queues}"
    else:
        netdev = "user,id=n0"
    nic = f"virtio-net-pci,netdev=n0,mac={MAC},mq=on,vectors={2 * args.queues + 2}"
    chardev = f"socket,id=qga0,path={workdir / 'qga.sock'},server=on,wait=off"
    return [
        *("-serial", f"file:{workdir / 'console.log'}"),
        *("-netdev", netdev, "-device", nic),
        *("-device", "virtio-serial-pci,id=vs0", "-chardev", chardev),
        *("-device", f"virtserialport,bus=vs0.0,chardev=qga0,name={AGENT}"),
    ]


def base_cmdline(args: argparse.Namespace, img: GuestImage) -> str:
    return " ".join(part for part in (args.cmdline or img.cmdline, args.append) if part)


def boot_once(args: argparse.Namespace, img: GuestImage, tap: bool, prove: bool) -> float:
    """QEMU start -> guest-ping answered, in seconds."""
    workdir = Path(tempfile.mkdtemp(prefix="vlbench-"))
    base = dataclasses.replace(img, cmdline=base_cmdline(args, img))
    cmdline = guest_cmdline(base, "bench", [(MAC, GUEST_IP, args.queues)])
    argv = machine_argv(args, img.kernel, img.initrd, cmdline) + devices_argv(args, workdir, tap)
    start = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        agent = Agent(workdir / "qga.sock", start + args.timeout)
        agent.sync()
        agent.call("guest-ping")
        elapsed = time.monotonic() - start
        if prove:
            listing = agent.run("ethtool", "-l", "eth0")
            combined = [ln.split()[-1] for ln in listing.splitlines() if ln.startswith("Combined")]
            print(f"  in the guest, ethtool -l eth0: combined {combined[-1]} (max {combined[0]})")
        return elapsed
    finally:
        qemu.kill()
        qemu.wait()
        if args.keep_console:
            shutil.copy(workdir / "console.log", args.keep_console)
        shutil.rmtree(workdir, ignore_errors=True)


def baseline_once(args: argparse.Namespace, img: GuestImage, initrd: Path) -> float:
    """The same kernel and flags, an init that prints a line: QEMU start -> that line."""
    argv = machine_argv(args, img.kernel, initrd, base_cmdline(args, img))
    argv += ["-serial", "stdio", "-no-reboot"]
    start = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        for line in qemu.stdout:
            if b"vlab-baseline-init" in line:
                return time.monotonic() - start
        raise RuntimeError("the baseline guest never reached its init")
    finally:
        qemu.kill()
        qemu.wait()


def baseline_initrd(directory: Path) -> Path:
    archive = bootfiles.Cpio()
    archive.char_device("dev/console", 5, 1)
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    script = b"#!/bin/busybox sh\necho vlab-baseline-init\n/bin/busybox poweroff -f\n"
    archive.file("init", script, 0o755)
    path = directory / "baseline.cpio"
    path.write_bytes(archive.pack())
    return path


def summary(label: str, samples: list[float]) -> str:
    return (
        f"{label}: median {statistics.median(samples):.2f} s, min {min(samples):.2f} s, "
        f"max {max(samples):.2f} s  (n={len(samples)})"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--machine", default="pc", help="pc (as the lab template) or q35")
    parser.add_argument("--cpu", default="qemu64", help="CPU model (qemu64: libvirt's TCG default)")
    parser.add_argument("--accel", default="tcg,thread=single",
                        help="as lab domains run under TCG (provision/host/tcg.py); "
                        "tcg: QEMU's default, one thread per vCPU")
    parser.add_argument("--smp", type=int, default=4)
    parser.add_argument("--memory", type=int, default=256, help="MiB")
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--cmdline", help="replace the image's base kernel command line")
    parser.add_argument("--append", default="", help="extra kernel command line flags")
    parser.add_argument("--bios", type=Path, help="e.g. /usr/share/qemu/qboot.rom")
    parser.add_argument("--timeout", type=float, default=60, help="per boot, seconds")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--keep-console", type=Path, help="copy the last serial log here")
    parser.add_argument("--cache-dir", type=Path, help="image cache (default: provision's)")
    parser.add_argument(
        "--kernel",
        default=image.GUEST_KERNEL,
        help=f"guest kernel flavour (default {image.GUEST_KERNEL}; host: the host's own)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    img, built = image.build_image(cache_dir=args.cache_dir, kernel=args.kernel)
    print(
        f"image {img.name} {img.content_hash[:16]}{' (built now)' if built else ''}, "
        f"kernel {img.kernel_version}; TCG, {args.machine}, -cpu {args.cpu}, "
        f"{args.smp} vCPUs, {args.memory} MiB{', -bios ' + str(args.bios) if args.bios else ''}"
    )
    print(f"cmdline: {base_cmdline(args, img)}")
    tap = make_tap()
    print(f"NIC: {'multi_queue tap ' + TAP if tap else '-netdev user'}, {args.queues} queues")
    try:
        samples = [boot_once(args, img, tap, prove=(run == 0)) for run in range(args.runs)]
    finally:
        if tap:
            subprocess.run(["ip", "link", "del", TAP], capture_output=True)
    print(summary("QEMU start -> guest-ping answered", samples))
    if not args.no_baseline:
        with tempfile.TemporaryDirectory() as directory:
            initrd = baseline_initrd(Path(directory))
            base = [baseline_once(args, img, initrd) for _ in range(args.runs)]
        print(summary("baseline, QEMU start -> a bare init runs (same kernel, flags)", base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
