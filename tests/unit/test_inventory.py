"""The inventory side of a lab file: a VM's `host` and `--host` must name inventory hosts,
or a typo would filter every VM out and `up` would remove the running ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.core.spec import load_inventory
from provision.core.yamlfile import inventory_hosts
from provision.engine.lab import lab_spec
from provision.errors import SpecError

from .helpers import lab_data


def write(tmp_path: Path, inventory: dict[str, Any], **vm_hosts: str) -> Path:
    data = lab_data()
    for vm in data["vms"]:
        vm["host"] = vm_hosts.get(vm["name"], "localhost")
    inventory.setdefault("vars", {})["lab"] = data
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump({"all": inventory}))
    return path


HOSTS = {"hosts": {"localhost": {"ansible_connection": "local"}},
         "children": {"hypervisors": {"hosts": {"hv2": {}, "hv3": {}}}}}


def test_hosts_of_all_groups_are_inventory_hosts(tmp_path: Path) -> None:
    assert inventory_hosts(HOSTS) == ("localhost", "hv2", "hv3")
    assert inventory_hosts(None) == () and inventory_hosts({"hosts": None}) == ()
    lab, hosts = load_inventory(write(tmp_path, dict(HOSTS), vm2="hv3"))
    assert hosts == ("localhost", "hv2", "hv3") and lab.vms[1].host == "hv3"


def test_a_vm_on_a_host_the_inventory_lacks_is_exit_3(tmp_path: Path) -> None:
    path = write(tmp_path, dict(HOSTS), vm2="hv9")
    with pytest.raises(SpecError, match=r"^lab\.vms\[1\]\.host: 'hv9' is not a host") as err:
        load_inventory(path)
    assert err.value.exit_code == 3


@pytest.mark.parametrize("host", ["nosuchhost", "", "HV2"])
def test_host_filter_must_name_an_inventory_host(tmp_path: Path, host: str) -> None:
    path = write(tmp_path, dict(HOSTS), vm2="hv2")
    with pytest.raises(SpecError, match=r"^--host: .* is not a host of the inventory"):
        lab_spec(path, host)
    assert [vm.name for vm in lab_spec(path, "hv2").vms] == ["vm2"]
    assert [vm.name for vm in lab_spec(path, "localhost").vms] == ["vm1"]
    assert [vm.name for vm in lab_spec(path, "hv3").vms] == []  # a real host with no VMs


def test_an_echoed_host_is_one_bounded_line(tmp_path: Path) -> None:
    path = tmp_path / "lab.yml"
    host = '"hv\\e[2J\\n' + "h" * 5000 + '"'
    path.write_text("all:\n  hosts: {localhost: }\n  vars:\n    lab:\n      name: ut\n"
                    "      bridges: [{name: br-ut}]\n"
                    f"      vms: [{{name: vm1, host: {host}}}]\n")
    with pytest.raises(SpecError) as info:
        load_inventory(path)
    message = str(info.value)
    assert message.startswith("lab.vms[0].host: 'hv\\x1b[2J\\nhhh")
    assert "... (5007 characters) is not a host of the inventory ('localhost')" in message
