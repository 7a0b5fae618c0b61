"""TCG domains run QEMU single-threaded, through a small wrapper `host prepare` installs.

Why: QEMU 7.2 (Debian 12) with multi-threaded TCG (one host thread per vCPU, its default)
now and then keeps executing code another vCPU has just rewritten.  The guest kernel patches
its own text at boot (static keys, through a temporary int3); a vCPU that still runs the old
translation of that int3 traps forever: kprobe_int3_handler finds no int3 in memory, rewinds
the instruction pointer, and the stale translation traps again.  Seen as a guest that never
reaches init, console empty, every vCPU at 90 % CPU in exc_int3 / kprobe_int3_handler
(`info registers -a`); about 1 boot in 70 with 5 guests booting together on 2 cores.  With
`-accel tcg,thread=single` (all vCPUs of a domain on one host thread, QEMU's round-robin
mode) cross-vCPU code changes are serialised and that race cannot happen; on these 2-core
hosts, where labs run more vCPUs than cores, it also boots groups of guests faster.

libvirt has no XML for TCG's thread mode and emits `-accel tcg` itself (the first -accel
wins, so a <qemu:commandline> one would be ignored).  The wrapper is the domain's
<emulator>: it appends `thread=single` to `-accel tcg` and execs the real QEMU, and says so
on stderr, which lands in the domain's log under /var/log/libvirt/qemu.  KVM domains never
use it.  It is a file of virtio-lab's own under /usr/local/libexec/virtio-lab, installed by
`provision host prepare` for the emulator libvirt reports, and found again by its content.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

WRAPPER = Path(os.environ.get("VIRTIO_LAB_TCG_WRAPPER",
                              "/usr/local/libexec/virtio-lab/qemu-tcg-single"))  # fmt: skip
MARK = "virtio-lab: TCG single-threaded"


def wrapper_script(emulator: str) -> str:
    """The wrapper's text for the real QEMU binary `emulator`."""
    return f"""#!/bin/bash
# {MARK} wrapper for {shlex.quote(emulator)!r} (installed by `provision host prepare`;
# see provision/host/tcg.py in virtio-lab for why).
real={shlex.quote(emulator)}
{single_threaded_args(MARK)}exec "$real" "${{args[@]}}"
"""


def single_threaded_args(mark: str) -> str:
    """Bash that copies "$@" into ``args`` with `thread=single` added to a `-accel tcg`
    that names no thread mode, saying so on stderr (the domain's log) after ``mark``."""
    return f"""args=() prev=
for a in "$@"; do
  if [ "$prev" = -accel ] && [[ $a == tcg || $a == tcg,* ]] && [[ $a != *thread=* ]]; then
    args+=("$a,thread=single")
    echo "{mark}: -accel $a,thread=single" >&2
  else
    args+=("$a")
  fi
  prev=$a
done
"""


def installed_wrapper(emulator: str, path: Path = WRAPPER) -> str:
    """`path` as a string when the wrapper there is the current one for `emulator` and
    executable, else ""."""
    try:
        current = path.read_text() == wrapper_script(emulator)
    except (OSError, UnicodeDecodeError):
        return ""
    return str(path) if current and os.access(path, os.X_OK) else ""


def install_wrapper(emulator: str, path: Path = WRAPPER) -> bool:
    """Write the wrapper for `emulator` (0755, readable by libvirt's QEMU user); True when
    it changed.  Atomic: a QEMU starting meanwhile sees the old file or the new one."""
    if installed_wrapper(emulator, path):
        return False
    _make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with tmp.open("w") as f:
            f.write(wrapper_script(emulator))
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o755)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _make_dirs(directory: Path) -> None:
    """`directory` and the parents it lacks, each 0755 whatever the umask: libvirt's QEMU
    user (libvirt-qemu on Debian) must reach the wrapper."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        d.chmod(0o755)
