"""Lock files under the run directory: one writer per lab (``engine.lab.lab_lock``) and one
`provision hosts` run at a time. A lock file is removed when its holder is done.

Unlinking a lock file others may open needs care: each taker checks, once it holds the
flock, that the path still names the file it locked (else the holder before it removed it,
and it tries again), and the holder unlinks the path before it lets go of the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from provision.errors import HostError, OperationError

RUNDIR_ENV = "VIRTIO_LAB_RUNDIR"
DEFAULT_RUNDIR = "/run/virtio-lab"


def run_dir() -> Path:
    """Where locks live: $VIRTIO_LAB_RUNDIR, else /run/virtio-lab."""
    return Path(os.environ.get(RUNDIR_ENV) or DEFAULT_RUNDIR)


@contextlib.contextmanager
def file_lock(path: Path, owner: str, busy: str) -> Iterator[None]:
    """Hold ``path`` exclusively; a second taker fails fast with OperationError ``busy``
    (plus the holder's pid). ``owner`` names what the lock guards, for errors."""
    fd = _take(path, owner, busy)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if _names(path, fd):  # else someone removed it by hand; the path is not ours
                path.unlink()
        os.close(fd)  # releases the flock


def _take(path: Path, owner: str, busy: str) -> int:
    _make_run_dir(path.parent)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise HostError(f"cannot open the lock file {path} of {owner}: "
                            f"{exc.strerror}; check {RUNDIR_ENV} or remove the file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OperationError(f"{busy}{holder} and holds {path}; wait for it to finish"
                                 ) from None
        if _names(path, fd):
            with contextlib.suppress(OSError):  # the pid only informs a second taker
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the previous holder removed the file we locked: take the new one


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the file open as ``fd``."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return False


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f" (pid {pid})"
    return ""


def _make_run_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise HostError(f"{directory} is not a directory, and locks live there: "
                        f"remove it, or set {RUNDIR_ENV} to a directory") from None
    except OSError as exc:
        raise HostError(f"cannot create {directory} for locks: {exc.strerror}; "
                        f"set {RUNDIR_ENV} to a directory you can write") from None
