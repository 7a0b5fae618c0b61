"""The inventory side of a lab file: a VM's `host` and `--host` must name inventory hosts,
or a typo would filter every VM out and `up` would remove the running ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.core.inventory import inventory_hosts, load_inventory
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
    inv = load_inventory(write(tmp_path, dict(HOSTS), vm2="hv3"))
    lab, hosts = inv.lab, inv.hosts
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


def test_host_variables_come_from_groups_then_the_host_and_from_extra_inventories(
        tmp_path: Path) -> None:
    lab_file = write(tmp_path, {
        "vars": {"virtio_lab_underlay_ip": "192.0.2.99", "colour": "all"},
        "hosts": {"localhost": None},
        "children": {"hv": {"vars": {"colour": "hv"},
                            "hosts": {"hv2": {"virtio_lab_underlay_ip": "192.0.2.2"},
                                      "hv3": None}}},
    }, vm2="hv3")
    inv = load_inventory(lab_file)
    assert inv.var("hv2", "virtio_lab_underlay_ip") == "192.0.2.2"  # the host's own wins
    assert inv.var("hv3", "virtio_lab_underlay_ip") == "192.0.2.99"  # from all.vars
    assert inv.var("hv3", "colour") == "hv" and inv.var("localhost", "colour") == "all"
    assert inv.var("hv3", "lab") is None  # the lab is not a host variable
    # `provision up -i hosts.yml LAB`: hosts and their variables from another inventory
    hosts_file = tmp_path / "hosts.yml"
    hosts_file.write_text(yaml.safe_dump({"all": {"hosts": {
        "hv3": {"virtio_lab_underlay_ip": "192.0.2.3"}, "hv4": {"x": 1}}}}))
    inv = load_inventory(lab_file, extra=[hosts_file])
    assert inv.hosts == ("hv3", "hv4", "localhost", "hv2")
    # a host variable outranks the lab file's all.vars, whichever file holds it (Ansible)
    assert inv.var("hv3", "virtio_lab_underlay_ip") == "192.0.2.3"
    assert inv.var("hv4", "x") == 1 and inv.var("hv4", "colour") is None
    with pytest.raises(SpecError, match=r"all\.vars\.lab: is missing from"):
        load_inventory(hosts_file)
