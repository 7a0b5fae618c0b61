"""The installed collection's lab module on the real daemons: a playbook outside the checkout,
with only the ansible-galaxy-installed virtio_lab.lab on its collections path, asks in check
mode what bringing up a lab that is not there would change (issue 12, part 2).

Check mode reads OVSDB, libvirt and the image cache and changes nothing, which the test
confirms on the host. tests/unit/test_galaxy.py covers the tarball and the calls that need no
daemon; this is the plan itself, from the installed module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import libvirt
import pytest

from .conftest import link, unique_name, vsctl

if TYPE_CHECKING:
    from conftest import Galaxy  # tests/conftest.py, which provides the fixture

pytestmark = pytest.mark.integration


def test_installed_lab_module_plans_a_lab_in_check_mode(galaxy: Galaxy, tmp_path: Path,
                                                        conn: libvirt.virConnect) -> None:
    name = unique_name()
    lab = {"name": name, "bridges": [{"name": f"br-{name}"}],
           "vms": [{"name": "vm1", "vcpus": 2, "memory_mib": 256, "image": "tiny",
                    "nics": [{"bridge": f"br-{name}", "vlan": 100, "queues": 2}]}]}
    play = [{
        "name": "Plan a lab with the installed collection",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [
            {"name": "Plan", "register": "plan", "check_mode": True, "diff": True,
             "virtio_lab.lab.lab": {"spec": lab, "state": "present"}},
            {"name": "Results", "ansible.builtin.debug": {"msg": "{{ plan }}"}},
        ],
    }]
    plan = galaxy.play(play, cwd=tmp_path)

    assert plan["changed"] is True and plan["in_sync"] is False, plan
    assert plan["lab"] == name and plan["vms"] == ["vm1"]
    planned = {(c["action"], c["kind"], c["target"]) for c in plan["changes"]}
    assert ("create", "bridge", f"br-{name}") in planned, planned
    assert ("create", "domain", f"{name}-vm1") in planned, planned
    assert len(plan["diff"]) == len(plan["changes"])
    # check mode touched nothing
    assert f"br-{name}" not in vsctl("list-br").split()
    assert f"{name}-vm1" not in [d.name() for d in conn.listAllDomains()]
    assert link(f"{name}-vm1-0") is None
