"""Namespaces of the hypervisors: state directories, the init of each PID namespace, and
how to enter one.

A hypervisor is an `unshare`d set of mount, UTS, network and PID namespaces whose PID 1 is
`reaper.py`. Its private directories (``PRIVATE_DIRS``) live under its state directory and
are bind-mounted over the host's paths inside its mount namespace (by `inside.py`, which
runs in there), so its daemons use the usual paths and see only their own files. The init's
PID in the root namespace, with its start time against PID reuse, is kept in `init.json`.
Killing the init kills every process of the hypervisor, and with the last one its mounts and
its network namespace (and so the far ends of its veths) go.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from provision.errors import OperationError
from provision.host.kvm import probe_cache_path
from provision.hypervisors import config
from provision.hypervisors.plan import STATE_ROOT, Hypervisor

INIT_MARKER = "virtio-lab-hypervisor"  # argv of every hypervisor's init, after the script
REAPER = Path(__file__).with_name("reaper.py")
OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
LIBVIRT_CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")
KVM_PROBE = probe_cache_path()  # this machine's; the hypervisors' is in their own /run

# Host path -> state subdirectory bind-mounted over it inside the hypervisor, in mount
# order. /var/run is a symlink to /run on Debian. The image cache (/var/cache/virtio-lab)
# and the rest of the file system stay shared.
PRIVATE_DIRS: tuple[tuple[str, str], ...] = (
    ("/run", "run"),
    ("/etc/libvirt", "etc-libvirt"),  # a copy: domain, pool, secret definitions are state
    ("/var/lib/libvirt", "lib-libvirt"),
    ("/var/log/libvirt", "log-libvirt"),
    ("/var/cache/libvirt", "cache-libvirt"),
    ("/etc/openvswitch", "etc-openvswitch"),
    ("/var/lib/openvswitch", "lib-openvswitch"),
    ("/var/log/openvswitch", "log-openvswitch"),
)
RUN_DIRS = (("lock", 0o1777), ("sshd", 0o755), ("virtio-lab", 0o755))


@dataclass(frozen=True)
class Init:
    """The PID 1 of a hypervisor, as seen from the root namespace."""

    pid: int
    starttime: int  # /proc/PID/stat field 22: tells a reused PID apart

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[0] not in ("Z", "X") and int(stat[19]) == self.starttime


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, None if there is no such PID."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _own_pid_ns() -> str:
    return os.readlink("/proc/self/ns/pid")


def find_inits() -> dict[str, int]:
    """Every running hypervisor init on this machine, by name: the processes running our
    reaper with the marker, in a PID namespace other than ours (not the `unshare` above)."""
    found: dict[str, int] = {}
    ours = _own_pid_ns()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        if len(argv) < 3 or INIT_MARKER not in argv or Path(argv[0]).name == "unshare":
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{entry.name}/ns/pid") != ours:
                found[argv[argv.index(INIT_MARKER) + 1]] = int(entry.name)
    return found


def recorded_init(host: Hypervisor) -> Init | None:
    """The init recorded in the state directory, if it still runs."""
    try:
        data = json.loads((host.state_dir / "init.json").read_text())
        init = Init(int(data["pid"]), int(data["starttime"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return init if init.alive() and INIT_MARKER in _cmdline(init.pid) else None


def enter_argv(pid: int) -> list[str]:
    """The command prefix that runs a command inside the hypervisor whose init is `pid`."""
    return ["nsenter", f"--target={pid}", "--mount", "--uts", "--net", "--pid", "--"]


# ---- starting and stopping ---------------------------------------------------------------


def start_init(host: Hypervisor, python: str, timeout: float = 10.0) -> Init:
    """Create the namespaces with the reaper as PID 1; record and return it.

    `unshare` stays as its parent in the root namespace (it waits for it); the init is found
    as the child of `unshare` that runs the reaper.
    """
    argv = ["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--uts", "--net",
            "--propagation", "private", "--", python, "-I", "-S", str(REAPER),
            INIT_MARKER, host.name]  # fmt: skip
    log = host.state_dir / "init.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, cwd="/")  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = find_inits().get(host.name)
        if pid is not None and (stat := _stat(pid)) is not None and int(stat[1]) == proc.pid:
            init = Init(pid, int(stat[19]))
            (host.state_dir / "init.json").write_text(json.dumps(
                {"pid": init.pid, "starttime": init.starttime, "unshare": proc.pid}))
            return init
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    reason = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise OperationError(f"{host.name}: `unshare` did not start its namespaces: {reason[0]}")


def kill_init(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL a hypervisor's init, so the kernel kills all of its processes; wait for it."""
    start = _stat(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = _stat(pid)
        # A zombie init has outlived every process of its namespace (the kernel waits).
        if stat is None or stat[0] in ("Z", "X") or (start and stat[19] != start[19]):
            return
        time.sleep(0.02)
    raise OperationError(f"init {pid} of a hypervisor did not exit in {timeout:g}s after "
                         "SIGKILL")


# ---- state directories -----------------------------------------------------------------


def prepare_state(host: Hypervisor) -> None:
    """A fresh state directory: the private directories, each with the host's mode and
    owner, /etc/libvirt's configuration, libvirt's QEMU capability cache and an empty
    Open_vSwitch database."""
    remove_state(host)
    host.state_dir.mkdir(parents=True, mode=0o755)
    for target, sub in PRIVATE_DIRS:
        if target == "/etc/libvirt":
            copy_libvirt_config(Path(target), host.state_dir / sub)
        elif target == "/run":
            _make_run(host.state_dir / sub)
        else:
            mirror_dirs(Path(target), host.state_dir / sub)
    _copy_caps_cache(host.state_dir / "cache-libvirt")
    _create_ovsdb(host.state_dir / "etc-openvswitch" / "conf.db")


def remove_state(host: Hypervisor) -> None:
    """Remove a hypervisor's state directory (its init must be gone: no mount holds it)."""
    if host.state_dir.exists():
        shutil.rmtree(host.state_dir)


def mirror_dirs(src: Path, dst: Path, depth: int = 3) -> None:
    """Create `dst` with the directories (not the files) under `src`, `depth` levels deep,
    each with its source's mode and owner: libvirt and OVS expect theirs (libvirt-qemu owns
    /var/lib/libvirt/qemu)."""
    dst.mkdir(exist_ok=True)
    if src.is_dir():
        st = src.stat()
        os.chown(dst, st.st_uid, st.st_gid)
        os.chmod(dst, st.st_mode & 0o7777)
        if depth > 0:
            for child in src.iterdir():
                if child.is_dir() and not child.is_symlink():
                    mirror_dirs(child, dst / child.name, depth - 1)


def copy_libvirt_config(src: Path, dst: Path) -> None:
    """The host's /etc/libvirt without its state entries, with a qemu.conf that keeps QEMU
    out of the shared cgroup tree and a libvirtd.conf with the hypervisor's own UUID."""
    def state_entries(directory: str, names: list[str]) -> list[str]:
        here = Path(directory)
        return names if here.parent == src and here.name in config.LIBVIRT_STATE_ENTRIES else []

    shutil.copytree(src, dst, symlinks=True, ignore=state_entries)
    for name in config.LIBVIRT_STATE_ENTRIES:
        (dst / name).mkdir(mode=0o700, exist_ok=True)
    qemu_conf, libvirtd_conf = dst / "qemu.conf", dst / "libvirtd.conf"
    qemu_conf.write_text(config.private_qemu_conf(_read(qemu_conf)))
    libvirtd_conf.write_text(config.private_libvirtd_conf(_read(libvirtd_conf),
                                                          str(uuid.uuid4())))


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _make_run(run: Path) -> None:
    run.mkdir(mode=0o755)
    for name, mode in RUN_DIRS:
        (run / name).mkdir()
        os.chmod(run / name, mode)
    # The KVM probe's answer holds for every hypervisor on this machine (same boot, /dev/kvm
    # and QEMU, which its key checks): without it each one's first lab boots a probe guest.
    if KVM_PROBE.is_file():
        shutil.copy2(KVM_PROBE, run / "virtio-lab" / KVM_PROBE.name)


def _copy_caps_cache(cache: Path) -> None:
    """libvirtd probes QEMU (seconds of CPU) unless its cache is valid; the host's is, for
    the same binaries, and libvirtd checks it (QEMU's and its own ctime, kernel, CPU)."""
    if not LIBVIRT_CAPS_CACHE.is_dir():
        return
    dst = cache / "qemu" / "capabilities"
    dst.mkdir(parents=True, exist_ok=True)
    for xml in LIBVIRT_CAPS_CACHE.glob("*.xml"):
        shutil.copy2(xml, dst / xml.name)


def _create_ovsdb(db: Path) -> None:
    """An empty Open_vSwitch database, as `ovs-ctl` would create it."""
    proc = subprocess.run(["ovsdb-tool", "create", str(db), str(OVS_SCHEMA)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise OperationError(f"`ovsdb-tool create {db}` failed: {proc.stderr.strip()}")


def state_names() -> list[str]:
    """Names of the hypervisor state directories present, hv1 first."""
    if not STATE_ROOT.is_dir():
        return []
    names = [p.name for p in STATE_ROOT.iterdir() if p.is_dir() and p.name.startswith("hv")]
    return sorted(names, key=lambda n: (len(n), n))
