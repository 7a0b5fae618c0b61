"""What the virtio_lab.lab modules share: importing the ``provision`` library with a message
that says how to fix a wrong interpreter, the lab source (``spec`` dict or ``path``), typed
library errors turned into ``fail_json`` with design.md's exit code, and JSON-safe results.

The modules are adapters: every decision (plan, apply, verify) is the library's.
"""

from __future__ import annotations

import json
import traceback
import warnings
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    # the virtio-lab library, installed in the project's venv
    from provision.errors import ProvisionError
except ImportError:
    PROVISION_IMPORT_ERROR: str | None = traceback.format_exc()

    class ProvisionError(Exception):  # type: ignore[no-redef]  # never raised without provision
        exit_code = 1

else:
    PROVISION_IMPORT_ERROR = None

try:
    import yaml
except ImportError:  # only the diff text needs it; JSON is the fallback
    yaml = None

# Options every module that acts on a lab takes (documented once, in the doc fragment
# virtio_lab.lab.lab_options): where the lab comes from, and each host's underlay address.
LAB_OPTIONS: dict[str, dict[str, Any]] = {
    "spec": {"type": "dict", "aliases": ["lab"]},
    "path": {"type": "path", "aliases": ["lab_file"]},
    "underlay": {"type": "dict"},
}
LAB_SOURCE_RULES: dict[str, list[Any]] = {
    "mutually_exclusive": [("spec", "path")],
    "required_one_of": [("spec", "path")],
}


def require_provision(module: AnsibleModule) -> None:
    """Fail the task with a fix when the module's interpreter cannot import ``provision``."""
    if PROVISION_IMPORT_ERROR is None:
        return
    module.fail_json(
        msg=missing_required_lib("provision (virtio-lab)")
        + " Run the playbook with virtio-lab's .venv/bin/ansible-playbook and set"
        " ansible_python_interpreter to '{{ ansible_playbook_python }}' (the playbooks in"
        " playbooks/ do), or `pip install -e .` virtio-lab into the target's Python.",
        exception=PROVISION_IMPORT_ERROR,
        exit_code=4,
    )


def lab_source(module: AnsibleModule) -> Any:
    """The lab the task names: a validated ``Lab`` from ``spec``, or the ``path`` of a lab file.

    A bad spec raises SpecError (exit 3) naming the key path, before anything is touched.
    """
    from provision.core import spec
    if module.params["spec"] is not None:
        return spec.parse_lab(module.params["spec"])
    return module.params["path"]


def run_or_fail(module: AnsibleModule, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the library; an expected failure (ProvisionError) fails the task with its one-line
    message and exit code. Anything else is a bug and keeps its traceback."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn(*args, **kwargs)
    except ProvisionError as exc:
        module.fail_json(msg=str(exc), exit_code=exc.exit_code, error=type(exc).__name__)
    for warning in caught:  # e.g. a deprecated lab key: shown in the play's output
        module.warn(str(warning.message))
    return result


def jsonable(data: Any) -> Any:
    """Plain JSON types only (tuples become lists, paths and addresses strings)."""
    return json.loads(json.dumps(data, default=str))


def _text(value: Any) -> str:
    """One side of a diff: YAML of the observed or desired values, empty when absent."""
    if value is None:
        return ""
    if yaml is None:
        return json.dumps(value, indent=2, sort_keys=True) + "\n"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True)


def plan_diff(changes: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Ansible's ``diff`` for a plan: before/after per changed object, in plan order."""
    return [
        {
            "before_header": f"{c['kind']} {c['target']}",
            "after_header": f"{c['kind']} {c['target']}: {c['action']} ({c['reason']})",
            "before": _text(c["before"]),
            "after": _text(c["after"]),
        }
        for c in changes
    ]
