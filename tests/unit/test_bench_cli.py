"""benchmarks/bench_cli.py's pure parts: the lab files it writes are labs the spec accepts,
and its reading of `provision status --json`."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from provision.core.inventory import load_lab
from provision.core.spec import LAB_NAME, nic_queues
from provision.core.switchspec import BRIDGE_NAME

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cli.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_cli", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_cli = _load()


@pytest.mark.parametrize("vms", [1, 4, 32, 300])
@pytest.mark.parametrize(("vcpus", "queues"), [(1, None), (4, None), (4, 2)])
def test_written_lab_parses(tmp_path: Path, vms: int, vcpus: int, queues: int | None) -> None:
    lab = load_lab(bench_cli.write_lab(tmp_path, vms, vcpus, queues))
    assert re.fullmatch(LAB_NAME, lab.name) and lab.name.startswith(f"vlb{vms}x")
    assert [b.name for b in lab.bridges] == [f"br-{lab.name}"]
    assert re.fullmatch(BRIDGE_NAME, lab.bridges[0].name)
    assert len(lab.vms) == vms
    nics = [vm.nics[0] for vm in lab.vms]
    assert {nic_queues(vm, vm.nics[0]) for vm in lab.vms} == {queues or vcpus}
    assert {vm.vcpus for vm in lab.vms} == {vcpus}
    assert [nic.vlan for nic in nics[:3]] == [100, 200, 100][:vms]
    networks = {nic.ip.network for nic in nics}  # type: ignore[union-attr]
    assert len(networks) == 1, "one subnet, so VLAN isolation is observable"
    assert networks.pop().prefixlen == (24 if vms <= 254 else 16)


def test_names_fit_and_differ_between_runs() -> None:
    names = {bench_cli.lab_name(9999) for _ in range(20)}
    assert all(re.fullmatch(LAB_NAME, name) for name in names)
    assert len(names) > 1


def test_too_many_vms_is_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        bench_cli.lab_document("vlb1x0000", 65535)


def _status(state: str = "absent", tap_up: bool | None = None,
            bridges: list[dict] | None = None) -> dict:
    nic = {"tap_up": tap_up, "bridge": None}
    return {"lab": "demo", "bridges": bridges or [], "vms": [
        {"vm": "vm1", "state": "absent", "nics": [dict(nic, tap_up=None)]},
        {"vm": "vm2", "state": state, "nics": [nic]}]}


@pytest.mark.parametrize(("status", "present"), [
    (_status(), False),
    (_status(state="running"), True),
    (_status(state="shut off"), True),
    (_status(tap_up=False), True),
    (_status(bridges=[{"name": "br-demo", "owned": True}]), True),
])
def test_lab_present(status: dict, present: bool) -> None:
    assert bench_cli.lab_present(status) is present


def test_per_vm_ratio() -> None:
    rows = [{"vms": 32, "up_s": 64.0}, {"vms": 4, "up_s": 8.0},
            {"vms": 16, "up_s": 1.0, "error": "x"}]
    assert bench_cli.per_vm(rows, ("up",)) == {"up": {"ratio": 1.0, "marginal_s_per_vm": 2.0}}
    assert bench_cli.per_vm(rows[:1], ("up",)) == {}
