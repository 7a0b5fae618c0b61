"""Record files: where the record of each lab lives on this host, reading one back (checked,
a SpecError naming the file and key when it is not a record), writing one atomically after
`up`, removing it after `down`. What a record holds: ``provision.engine.record``.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from provision.core.yamlfile import read_small_json
from provision.engine.record import FIX, check_record
from provision.errors import HostError
from provision.host.statedir import state_dir

RECORDDIR_ENV = "VIRTIO_LAB_RECORDDIR"
DEFAULT_RECORDDIR = "/var/lib/virtio-lab/records"
MAX_BYTES = 1 << 20  # a record is a few hundred bytes per VM


def read_record(path: str | Path, flag: str = "") -> dict[str, Any]:
    """The record in the file ``path``; SpecError naming the file (after ``flag``, the option
    that named it) and the key when it cannot be read, is not JSON, or is not a record."""
    source = f"{flag} {os.fspath(path)}" if flag else os.fspath(path)
    return check_record(read_small_json(path, source, "record", FIX, MAX_BYTES), source)


def record_dir() -> Path:
    """$VIRTIO_LAB_RECORDDIR; else, in a namespace hypervisor of `provision hosts`, its state
    directory's ``records`` (hypervisors on one machine share its /var/lib); else
    /var/lib/virtio-lab/records."""
    override = os.environ.get(RECORDDIR_ENV)
    return Path(override) if override else state_dir("records")


def record_path(lab: str) -> Path:
    return record_dir() / f"{lab}.json"


def load_record(lab: str, lab_file: str = "LAB") -> dict[str, Any]:
    """The record of ``lab`` as last brought up here; HostError (exit 4) when there is
    none, SpecError naming the file when it is not a record."""
    path = record_path(lab)
    if not path.exists():
        raise HostError(f"lab {lab} has no record on this host (no {path}): run "
                        f"`provision up {lab_file}` to bring it up and record it")
    return read_record(path)


class RecordWarning(UserWarning):
    """The record could not be written or removed; the lab itself is fine."""


def save_record(record: dict[str, Any]) -> None:
    """Write the record of its lab atomically (a whole file or the previous one, never part
    of one); a warning, not an error, when it cannot: the lab is up all the same."""
    path = record_path(record["lab"])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        warnings.warn(f"lab {record['lab']} is up, but its record was not written to {path}: "
                      f"{exc.strerror or exc}; set {RECORDDIR_ENV} to a directory you can "
                      "write", RecordWarning, stacklevel=2)


def remove_record(lab: str) -> None:
    """Forget the record of ``lab`` (it is down); a warning when it cannot be removed."""
    path = record_path(lab)
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"lab {lab} is down, but its record {path} was not removed: "
                      f"{exc.strerror or exc}; remove it by hand", RecordWarning, stacklevel=2)
