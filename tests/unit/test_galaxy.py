"""The collection as Galaxy ships it: `ansible-galaxy collection build` makes the virtio_lab.lab
tarball, `ansible-galaxy collection install` puts it in a collections path of its own, and a
playbook in another directory runs its modules from there (issue 12, part 2).

Unit, not integration: the playbook calls only what needs no daemon and changes nothing on the
host. `report` merges two hosts' verify results (check mode, then a real run writing into the
temporary directory), and `lab` is given a lab with a bad key, which the library rejects
before it looks at the host. Both go through the installed module, its module_utils and the
`provision` library imported by the interpreter the playbooks use.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Galaxy  # tests/conftest.py, which provides the fixture

# One host's verify result as the verify module registers it (the parts report reads).
CHECK = {"name": "ovs.tag", "target": "demo-vm1-0", "evidence": {"tag": 100}, "detail": ""}
HV1 = {"lab": "demo", "backend": "vhost-net", "spec_backend": "auto", "seconds": 3.5,
       "checks": [{**CHECK, "status": "pass"}, {**CHECK, "target": "demo-vm2-0", "status": "pass"}]}
HV2 = {"lab": "demo", "backend": "vhost-net", "spec_backend": "auto", "seconds": 4.0,
       "checks": [{**CHECK, "target": "demo-vm3-0", "status": "fail", "detail": "tag 999"}]}
BAD_LAB = {"name": "demo", "bridges": [{"name": "br-demo"}],
           "vms": [{"name": "vm1", "vcpu": 2, "nics": [{"bridge": "br-demo"}]}]}


def _play(out: Path) -> list[dict[str, object]]:
    return [{
        "name": "The installed virtio_lab.lab, from a directory that is not the checkout",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [
            {"name": "Merge in check mode", "check_mode": True, "register": "merged_check",
             "virtio_lab.lab.report": {"json_path": str(out), "reports": {
                 "hv1": HV1, "hv2": HV2, "hv3": {"skipped": True}}}},
            {"name": "Merge", "register": "merged",
             "virtio_lab.lab.report": {"reports": {"hv1": HV1, "hv2": HV2}, "json_path": str(out)}},
            {"name": "Bad lab", "register": "bad", "ignore_errors": True,
             "virtio_lab.lab.lab": {"spec": BAD_LAB, "state": "present"}},
            {"name": "Results", "ansible.builtin.debug": {
                "msg": "{{ {'merged_check': merged_check, 'merged': merged, 'bad': bad} }}"}},
        ],
    }]


def test_tarball_holds_the_collection_and_no_caches(galaxy: Galaxy) -> None:
    with tarfile.open(galaxy.tarball) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    assert manifest["collection_info"]["namespace"] == "virtio_lab"
    assert manifest["collection_info"]["name"] == "lab"
    for module in ("host", "lab", "verify", "report"):
        assert f"plugins/modules/{module}.py" in names
    assert "plugins/module_utils/provision_common.py" in names
    assert "plugins/doc_fragments/lab_options.py" in names
    assert "meta/runtime.yml" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "tests/output" in n]


def test_installed_docs_resolve_the_shared_fragments(galaxy: Galaxy, tmp_path: Path) -> None:
    out = galaxy.run("ansible-doc", "--json", "virtio_lab.lab.lab", "virtio_lab.lab.verify",
                     cwd=tmp_path)  # fmt: skip
    docs = json.loads(out)
    for module in ("virtio_lab.lab.lab", "virtio_lab.lab.verify"):
        doc = docs[module]["doc"]
        assert Path(doc["filename"]).is_relative_to(galaxy.collections), doc["filename"]
        assert doc["options"]["spec"]["aliases"] == ["lab"]
        assert doc["options"]["path"]["type"] == "path"
        assert "underlay" in doc["options"]
        assert any("provision" in r for r in doc["requirements"])


def test_playbook_elsewhere_runs_the_installed_modules(galaxy: Galaxy, tmp_path: Path) -> None:
    out = tmp_path / "verify-demo.json"
    results = galaxy.play(_play(out), cwd=tmp_path)

    check = results["merged_check"]
    assert check["changed"] is False  # check mode writes no file
    assert check["missing"] == ["hv3"] and check["passed"] is False
    assert check["summary"] == "2 passed, 1 failed, 0 skipped"

    merged = results["merged"]
    assert merged["changed"] is True and merged["missing"] == []
    assert merged["passed"] is False  # hv2's failed check
    report = json.loads(out.read_text())
    assert report["lab"] == "demo"
    assert sorted(c["target"] for c in report["checks"]) == [
        "hv1: demo-vm1-0", "hv1: demo-vm2-0", "hv2: demo-vm3-0"]

    bad = results["bad"]
    assert bad["failed"] is True and bad["exit_code"] == 3, bad
    assert "vcpu" in bad["msg"], bad["msg"]
