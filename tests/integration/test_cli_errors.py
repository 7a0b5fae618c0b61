"""Bad input and incapable hosts: one line, the right exit code, and no change on the host."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest

from .conftest import link, unique_name, vsctl, write_lab

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def provision(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI of this checkout (`python -m provision.cli`), whichever copy of virtio-lab
    the virtual environment installed; ``env`` adds variables."""
    environ = {**os.environ, **env,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                           os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "provision.cli", *args], capture_output=True,
                          text=True, check=False, timeout=900, env=environ)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line on stderr, which every failure is."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("provision: error: "), proc.stderr
    return lines[0]


def small_lab(name: str, **overrides: object) -> dict:
    lab = {"name": name, "bridges": [{"name": f"br-{name}"}],
           "vms": [{"name": "vm1", "vcpus": 2, "nics": [{"bridge": f"br-{name}", "queues": 2}]}]}
    lab.update(overrides)
    return lab


def assert_nothing_created(conn: libvirt.virConnect, name: str) -> None:
    assert f"br-{name}" not in vsctl("list-br").split()
    assert link(f"{name}-vm1-0") is None
    assert f"{name}-vm1" not in {d.name() for d in conn.listAllDomains()}


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda lab: lab["vms"][0]["nics"][0].update(queues=3), "lab.vms[0].nics[0].queues"),
        (lambda lab: lab["vms"][0].update(cpus=2), "lab.vms[0].cpus"),
        (lambda lab: lab["vms"][0].update(name="vm1;rm -rf"), "lab.vms[0].name"),
    ],
)
def test_bad_spec_exits_3_with_one_line_and_no_change(
    tmp_path: Path, conn: libvirt.virConnect, mutate: object, key: str
) -> None:
    name = unique_name()
    lab = small_lab(name)
    mutate(lab)  # type: ignore[operator]
    path = write_lab(tmp_path / "bad.yml", lab)
    for command in ("render", "plan", "up"):
        proc = provision(command, str(path), check=False)
        assert proc.returncode == 3, (command, proc.stdout, proc.stderr)
        assert key in error_line(proc)
    assert_nothing_created(conn, name)


@pytest.mark.skipif(Path("/dev/vhost-net").exists(), reason="this host has vhost-net")
def test_vhost_net_on_a_host_without_it_exits_4_before_any_change(
    tmp_path: Path, conn: libvirt.virConnect
) -> None:
    name = unique_name()
    path = write_lab(tmp_path / "vhost.yml", small_lab(name, backend="vhost-net"))
    proc = provision("up", str(path), check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "vhost-net" in proc.stderr and "modprobe vhost_net" in proc.stderr
    assert_nothing_created(conn, name)


def test_bad_arguments_exit_3(tmp_path: Path, conn: libvirt.virConnect) -> None:
    proc = provision("up", check=False)
    assert proc.returncode == 3 and "arguments" in error_line(proc)
    proc = provision("plan", str(tmp_path / "missing.yml"), check=False)
    assert proc.returncode == 3 and "cannot read the lab file" in error_line(proc)
    name = unique_name()
    path = str(write_lab(tmp_path / "lab.yml", small_lab(name)))
    for argv, says in (
        (["--frobnicate"], "--frobnicate"),
        (["up", "--frobnicate", path], "`provision up` has no option --frobnicate"),
        (["up", path, "--timeout", "nan"], "--timeout: 'nan' is not a number of seconds"),
        (["up", path, "--timeout", "0"], "more than 0 and at most 86400"),
        (["up", path, "--host", ""], "--host: '' is not a host of the inventory"),
        (["status", str(tmp_path)], "is a directory"),
        (["down", ""], "LAB"),
    ):
        proc = provision(*argv, check=False)
        assert proc.returncode == 3 and says in error_line(proc), (argv, proc.stderr)
    assert_nothing_created(conn, name)


def empty_lab(tmp_path: Path, name: str) -> Path:
    """A lab of one bridge and no VM: `up` of it boots nothing."""
    return write_lab(tmp_path / "empty.yml", {"name": name, "bridges": [{"name": f"br-{name}"}]})


def test_a_held_lab_lock_fails_fast_and_every_lock_file_goes_away(tmp_path: Path) -> None:
    name = unique_name()
    path = str(empty_lab(tmp_path, name))
    lock = Path(os.environ.get("VIRTIO_LAB_RUNDIR") or "/run/virtio-lab") / f"lab-{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(lock, "w") as held:  # another `up` of this lab, for all provision knows
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for command in ("up", "down"):
                proc = provision(command, path, check=False)
                line = error_line(proc)
                assert proc.returncode == 1, proc.stderr
                assert f"lab {name}: another" in line and str(lock) in line
            assert f"br-{name}" not in vsctl("list-br").split()
        # that holder left its file behind; the next one takes it over and removes it
        assert "nothing on this host" in provision("down", path).stdout
        assert not lock.exists()
        provision("up", path)
        assert f"br-{name}" in vsctl("list-br").split() and not lock.exists()
        provision("down", path)
        assert f"br-{name}" not in vsctl("list-br").split() and not lock.exists()
    finally:
        provision("down", path, check=False)
        lock.unlink(missing_ok=True)


def test_verify_errors_are_json_on_stdout_and_a_failed_write_is_one_line(
    tmp_path: Path,
) -> None:
    name = unique_name()
    path = str(empty_lab(tmp_path, name))
    for json_args in (["--json=-"], ["--json", "-"]):
        proc = provision("verify", path, *json_args, check=False)
        line = error_line(proc)
        assert proc.returncode == 4 and f"lab {name} is not on this host" in line
        assert json.loads(proc.stdout) == {"error": line.removeprefix("provision: error: "),
                                           "exit_code": 4}
    proc = provision("verify", path, "--json", str(tmp_path / "no" / "r.json"), check=False)
    assert proc.returncode == 3 and "--json: cannot write" in error_line(proc)
    try:
        provision("up", path)
        assert json.loads(provision("verify", path, "--json", "-").stdout)["passed"] is True
        for flag in ("--json", "--junit", "--html"):  # checks pass, then the write fails
            proc = provision("verify", path, flag, "/dev/full", check=False)
            line = proc.stderr.splitlines()[-1]  # after the run's progress
            assert "Traceback" not in proc.stderr and line.startswith("provision: error: ")
            assert proc.returncode == 1 and f"{flag}: cannot write /dev/full" in line
            assert "verify passed" in line and "PASSED" in proc.stdout
    finally:
        provision("down", path, check=False)


def test_a_damaged_image_cache_says_rebuild_and_build_rebuilds(
    tmp_path: Path, conn: libvirt.virConnect
) -> None:
    cache = tmp_path / "cache[/]"  # printed by rich, which must not read it as markup
    env = {"VIRTIO_LAB_CACHE": str(cache)}
    assert json.loads(provision("image", "build", "--json", **env).stdout)["built"] is True
    manifest = cache / "tiny" / "image.json"
    good = json.loads(manifest.read_text())
    name = unique_name()
    path = str(write_lab(tmp_path / "lab.yml", small_lab(name)))
    for damaged in ("{not json", json.dumps({k: v for k, v in good.items() if k != "cmdline"}),
                    json.dumps({**good, "kernel_version": 6})):
        manifest.write_text(damaged)
        for command in ("render", "plan", "up"):
            proc = provision(command, path, check=False, **env)
            line = error_line(proc)
            assert proc.returncode == 4, (command, proc.stderr)
            assert str(cache) in line and "provision image build --force" in line
        assert_nothing_created(conn, name)
        proc = provision("image", "build", "--json", **env)  # not --force: damaged is absent
        assert json.loads(proc.stdout)["built"] is True
        assert json.loads(manifest.read_text())["cmdline"] == good["cmdline"]
    provision("render", path, **env)
    assert f"up to date: {cache}/tiny-" in provision("image", "build", **env).stdout


def test_missing_templates_are_exit_4_naming_the_directory(
    tmp_path: Path, conn: libvirt.virConnect
) -> None:
    missing = tmp_path / "templates"
    name = unique_name()
    path = str(write_lab(tmp_path / "lab.yml", small_lab(name)))
    for command in ("render", "plan", "up"):
        proc = provision(command, path, check=False, VIRTIO_LAB_TEMPLATES=str(missing))
        line = error_line(proc)
        assert proc.returncode == 4, (command, proc.stderr)
        assert f"not found in {missing}" in line and "reinstall" in line
    assert_nothing_created(conn, name)


def test_plan_without_host_says_where_vms_go(tmp_path: Path) -> None:
    name = unique_name()
    lab = small_lab(name)
    vm = lab["vms"][0]
    lab["vms"] = [vm, {**vm, "name": "vm2"}, {**vm, "name": "vm3", "host": "hv2"}]
    doc = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}, "hv2": {}},
                   "vars": {"lab": lab}}}
    path = tmp_path / "spread.yml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    note = ("placing every VM on this host (--host not given): vm1 and vm2 (host localhost), "
            "vm3 (host hv2); use --host NAME to place one host's VMs")
    proc = provision("plan", str(path), "--json", check=False)
    assert proc.returncode == 2 and note in json.loads(proc.stdout)["notes"]
    proc = provision("plan", str(path), check=False)
    assert proc.returncode == 2 and note in " ".join(proc.stdout.split())
    proc = provision("plan", str(path), "--host", "localhost", "--json", check=False)
    assert proc.returncode == 2
    assert not any("placing" in note for note in json.loads(proc.stdout)["notes"])
