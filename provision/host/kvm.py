"""Whether KVM can really run a guest: decided by booting one, not by the device's existence.

``probe_accelerator("kvm")`` boots a one-sector guest under QEMU and times it;
``kvm_probe_cached()`` remembers the answer in /run until the boot, /dev/kvm or QEMU change,
so lab commands pay for it once. Read-only: nothing on the host changes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

# Real-mode busy loop the KVM probe guest runs before it reports through isa-debug-exit.
# Real KVM finishes it in well under 0.1 s; TCG in ~0.8 s; a /dev/kvm that emulates every
# guest instruction (kvm_pvm, or nested without hardware support) never does.
KVM_PROBE_LOOPS = 100_000_000
_DEBUG_EXIT_PORT = 0xF4
_DEBUG_EXIT_STATUS = (1 << 1) | 1  # the guest writes 1; QEMU exits with (value << 1) | 1


def _probe_key() -> dict[str, Any]:
    """What the KVM probe's answer depends on; a change of any part probes again."""
    key: dict[str, Any] = {"boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip()}
    for name, path in (("kvm", "/dev/kvm"), ("qemu", shutil.which("qemu-system-x86_64"))):
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        key[name] = [st.st_rdev, st.st_ino, st.st_mtime_ns] if st else None
    return key


def probe_cache_path() -> Path:
    return Path(os.environ.get("VIRTIO_LAB_RUNDIR", "/run/virtio-lab")) / "kvm-probe.json"


def kvm_probe_cached(timeout: float = 3.0, refresh: bool = False) -> tuple[bool, str]:
    """``probe_accelerator("kvm")``, remembered in /run until the host changes."""
    path, key = probe_cache_path(), _probe_key()
    if not refresh:
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(path.read_text())
            if data["key"] == key:
                return bool(data["usable"]), str(data["reason"])
    usable, reason = probe_accelerator("kvm", timeout)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "usable": usable, "reason": reason}))
        tmp.replace(path)
    return usable, reason


def _probe_boot_sector(loops: int) -> bytes:
    code = (
        b"\x66\xb9"
        + struct.pack("<I", loops)  # mov ecx, loops
        + b"\x66\x49"  # dec ecx
        + b"\x75\xfc"  # jnz (back to dec ecx)
        + b"\xb0\x01"  # mov al, 1
        + bytes([0xE6, _DEBUG_EXIT_PORT])  # out 0xf4, al: isa-debug-exit ends QEMU
        + b"\xfa\xf4\xeb\xfd"  # cli; hlt; jmp (back to hlt)
    )
    return code.ljust(510, b"\0") + b"\x55\xaa"


@functools.cache  # the answer does not change while a process runs; cache_clear() resets
def probe_accelerator(accel: str = "kvm", timeout: float = 3.0) -> tuple[bool, str]:
    """Boot a one-sector guest under QEMU with `accel` and report whether it ran to the end.

    `accel="tcg"` is the control that proves the probe itself is sound. Costs ~0.3 s where
    KVM works and `timeout` where it does not.
    """
    if accel == "kvm":
        try:
            os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        except OSError as exc:
            return False, f"/dev/kvm cannot be opened: {exc.strerror}"
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return False, "qemu-system-x86_64 not found (package qemu-system-x86)"
    with tempfile.TemporaryDirectory(prefix="virtio-lab-probe-") as tmp:
        image = Path(tmp) / "boot.img"
        image.write_bytes(_probe_boot_sector(KVM_PROBE_LOOPS))
        argv = [
            qemu, "-accel", accel, "-machine", "pc", "-m", "16", "-display", "none",
            "-nodefaults", "-no-reboot",
            "-device", f"isa-debug-exit,iobase={_DEBUG_EXIT_PORT:#x},iosize=0x04",
            "-drive", f"file={image},format=raw,if=ide",
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True, text=True,
        )  # fmt: skip
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return False, _slow_guest_reason(accel, timeout)
        elapsed = time.monotonic() - started
    if proc.returncode == _DEBUG_EXIT_STATUS:
        return True, f"a test guest ran {KVM_PROBE_LOOPS:.0e} loops under {accel} in {elapsed:.1f}s"
    last = err.strip().splitlines()[-1] if err.strip() else "no message"
    return False, f"QEMU -accel {accel} failed (exit {proc.returncode}): {last}"


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _slow_guest_reason(accel: str, timeout: float) -> str:
    reason = (
        f"a test guest under {accel} did not finish in {timeout:g}s (TCG needs ~1s): "
        f"/dev/kvm cannot run an ordinary guest at usable speed"
    )
    if Path("/sys/module/kvm_pvm").exists():
        reason += " (it is kvm_pvm, which runs only PVM-enabled guest kernels)"
    return reason + "; labs use domain type qemu (TCG)"

