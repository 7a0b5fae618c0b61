"""Fuzz budget (hypothesis profiles), the host snapshot every module is checked against, an
address-space cap for in-process runs, and the paths command lines point at.

Profiles, chosen by ``VIRTIO_LAB_FUZZ`` (``ci`` by default, ``long`` for ``make fuzz``):

- ``ci``: derandomized. The examples are a function of each test's source, so a CI run is
  reproducible and a red build means the code changed, not the dice; the budget keeps all of
  tests/fuzz at about a minute on a 2-core machine. No example database: a clean clone
  remembers nothing anyway. No shrinking, first failure only (shrinking in-process CLI runs
  takes minutes).
- ``shrink``: the same examples as ``ci``, shrunk, every distinct failure reported: run it
  to turn a red CI run into minimal examples.
- ``long``: ten times the examples, shrunk, and a fresh random seed each run, so it keeps
  finding new inputs. Hypothesis prints the seed and a ``@reproduce_failure`` blob with every
  failure, and saves failing examples in tests/fuzz/.hypothesis (git-ignored), so the next
  long run replays them first. A failure found there is pinned as an ``@example`` in the
  test, and CI has it.
"""

from __future__ import annotations

import json
import os
import re
import resource
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.database import DirectoryBasedExampleDatabase

from . import strategies as s

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]  # the worktree this file is in: subprocesses import its provision

PROFILE = os.environ.get("VIRTIO_LAB_FUZZ", "ci")
# Hypothesis's own files (caches, the long profile's examples) stay here, git-ignored.
set_hypothesis_home_dir(str(HERE / ".hypothesis"))
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=5_000,  # ms per example in-process; a process run has its own timeout
    # No shrinking and stop at the first failure: a red CI run stays within its time budget.
    # The example is printed as found; VIRTIO_LAB_FUZZ=shrink minimises it (same examples).
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    report_multiple_bugs=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
settings.register_profile(
    "shrink",
    parent=settings.get_profile("ci"),
    phases=tuple(Phase),
    report_multiple_bugs=True,
)
settings.register_profile(
    "long",
    parent=settings.get_profile("shrink"),
    # Exploration only: the pinned @examples are CI's; a failing one would stop a test
    # before it generates anything new.
    phases=tuple(p for p in Phase if p is not Phase.explicit),
    derandomize=False,
    database=DirectoryBasedExampleDatabase(str(HERE / ".hypothesis" / "examples")),
)
settings.load_profile(PROFILE)
SCALE = {"long": 10}.get(PROFILE, 1)


def budget(examples: int) -> int:
    """A test's number of examples under the selected profile."""
    return examples * SCALE


# -- no change on the host -----------------------------------------------------------------

# While this is developed, someone else brings labs up and down on the same machine (names
# starting `vlt`), so by default a snapshot keeps only what a fuzz lab could own: names, OVS
# external_ids or tap aliases containing "fz" (every generated lab and bridge is fz...; taps
# too long for <lab>-<vm>-<n> are hashed, but their alias names the lab). In CI nothing else
# runs beside the tests: VIRTIO_LAB_FUZZ_HOST=all compares everything.
ALL_HOST = os.environ.get("VIRTIO_LAB_FUZZ_HOST") == "all"
FUZZ_OBJECT = re.compile(s.PREFIX, re.IGNORECASE)
RUNDIR = Path(os.environ.get("VIRTIO_LAB_RUNDIR", "/run/virtio-lab"))
IMAGE_CACHE = Path(os.environ.get("VIRTIO_LAB_CACHE", "/var/cache/virtio-lab/images"))


def _keep(line: str) -> bool:
    return ALL_HOST or bool(FUZZ_OBJECT.search(line))


def _lines(*argv: str) -> list[str] | str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {exc}"
    if proc.returncode != 0:
        return f"unavailable: {proc.stderr.strip()}"
    return sorted(line for line in proc.stdout.splitlines() if line.strip() and _keep(line))


def _files(directory: Path, keep: bool = True) -> list[str] | str:
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        return f"unavailable: {exc.strerror}"
    # kvm-probe.json is a cache any lab command may refresh; it is not a lab's object.
    return [f"{p.name} -> {os.readlink(p)}" if p.is_symlink() else p.name for p in entries
            if p.name != "kvm-probe.json" and (not keep or _keep(p.name))]


def _links() -> list[str] | str:
    """Interface names with their alias (a lab's taps carry their owner there)."""
    try:
        proc = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                              timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"
    links = (f"{link['ifname']} {link.get('ifalias', '')}".strip()
             for link in json.loads(proc.stdout))
    return sorted(line for line in links if _keep(line))


def host_snapshot() -> dict[str, Any]:
    """What a lab command could have changed: OVS rows, links, domains, run and cache files."""
    vsctl = ("ovs-vsctl", "--timeout=10", "--format=csv", "--data=bare", "--no-headings")
    return {
        "ovs bridges": _lines(*vsctl, "--columns=name,external_ids", "list", "Bridge"),
        "ovs ports": _lines(*vsctl, "--columns=name,tag,trunks,external_ids", "list", "Port"),
        "ovs interfaces": _lines(*vsctl, "--columns=name,type,external_ids", "list",
                                 "Interface"),
        "links": _links(),
        "domains": _lines("virsh", "-q", "list", "--all", "--name"),
        "run directory": _files(RUNDIR),
        "image cache": _files(IMAGE_CACHE, keep=False),
    }


def _settled_snapshot() -> dict[str, Any]:
    """A snapshot in which every part could be read: a daemon being restarted (an integration
    test stops one on purpose) is waited for, up to about 20 s."""
    for _ in range(10):
        snap = host_snapshot()
        if not any(isinstance(v, str) for v in snap.values()):
            break
        time.sleep(2)
    return snap


@pytest.fixture(scope="module", autouse=True)
def host_unchanged() -> Iterator[None]:
    before = _settled_snapshot()
    yield
    after = _settled_snapshot()
    changed = {k: {"before": before[k], "after": after[k]} for k in before
               if before[k] != after[k]}
    assert not changed, f"the fuzzed commands changed the host: {changed}"


# -- bounded memory in-process -------------------------------------------------------------

IN_PROCESS_HEADROOM = 2 << 30  # bytes of address space an in-process example may add


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(autouse=True)
def memory_cap() -> Iterator[None]:
    """Cap this process's address space while a test runs: an input that makes the loader or
    the CLI allocate without bound fails with MemoryError instead of taking the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space() + IN_PROCESS_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# -- paths that command lines name ---------------------------------------------------------

@dataclass(frozen=True)
class LabPaths:
    """What the @placeholders of cli_inputs.command_lines stand for."""

    root: Path
    valid: Path  # a valid fz lab, which is not on the host
    invalid: Path  # a lab file the loader rejects (unknown key)

    def resolve(self, token: str) -> str:
        table = {
            "@valid": str(self.valid),
            "@invalid": str(self.invalid),
            "@missing": str(self.root / "missing.yml"),
            "@dir": str(self.root),
            "@devnull": os.devnull,
            "@empty": str(self.root / "empty.yml"),
            "@nonutf8": str(self.root / "nonutf8.yml"),
            "@unicode-name": str(self.root / "ünïcødé lab.yml"),
            "@bytes-name": str(self.root / BYTES_NAME),
            "@long-name": str(self.root / ("l" * 300 + ".yml")),
            "@relative": os.path.relpath(self.valid),
            "@outmissing": str(self.root / "no" / "such" / "dir" / "report.out"),
            "@outdir": str(self.root),
            "@out": str(self.root / "out" / "report.out"),
        }
        for key in sorted(table, key=len, reverse=True):  # @outdir before @out
            token = token.replace(key, table[key])
        return token

    def is_bad_output(self, path: str) -> bool:
        """An output path nothing can be written to: a directory, or one in a missing one."""
        p = Path(path)
        if path in ("-", os.devnull):
            return False
        return p.is_dir() or not p.parent.is_dir()


BYTES_NAME = os.fsdecode(b"\xff\xfe lab.yml")  # a file name that is not UTF-8
VALID_LAB = s.inventory({
    "name": "fzcli",
    "bridges": [{"name": "fzclibr"}],
    "vms": [{"name": "vm1", "vcpus": 2,
             "nics": [{"bridge": "fzclibr", "vlan": 100, "ip": "10.99.0.1/24"}]}],
}, ("hv1",))


@pytest.fixture(scope="module")
def lab_paths(tmp_path_factory: pytest.TempPathFactory) -> LabPaths:
    root = tmp_path_factory.mktemp("fuzz-paths")
    (root / "out").mkdir()
    valid = root / "valid.yml"
    valid.write_bytes(s.dump(VALID_LAB))
    invalid = root / "invalid.yml"
    bad = s.inventory({**VALID_LAB["all"]["vars"]["lab"], "colour": "red"})
    invalid.write_bytes(s.dump(bad))
    (root / "empty.yml").write_bytes(b"")
    (root / "nonutf8.yml").write_bytes(s.SPECIAL_FILES["non-utf8"])
    (root / "ünïcødé lab.yml").write_bytes(s.dump(VALID_LAB))
    (root / BYTES_NAME).write_bytes(s.dump(VALID_LAB))
    return LabPaths(root=root, valid=valid, invalid=invalid)


def out_files(root: Path) -> list[str]:
    """Files an example wrote under root/out (reports of a lab that is not there: none)."""
    out = root / "out"
    return sorted(p.name for p in out.iterdir() if stat.S_ISREG(p.stat().st_mode))


# -- slowest examples ----------------------------------------------------------------------

SLOWEST: dict[str, tuple[float, str]] = {}


def record_time(kind: str, seconds: float, what: Any) -> None:
    if seconds > SLOWEST.get(kind, (0.0, ""))[0]:
        SLOWEST[kind] = (seconds, repr(what)[:160])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SLOWEST:
        return
    terminalreporter.section(f"fuzz: slowest example per kind (profile {PROFILE})")
    for kind, (seconds, what) in sorted(SLOWEST.items()):
        terminalreporter.write_line(f"{seconds:7.3f} s  {kind}: {what}")
