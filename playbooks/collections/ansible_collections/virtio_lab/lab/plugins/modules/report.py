"""virtio_lab.lab.report: merge the verify reports of a lab's hypervisors into one JSON and one
JUnit file (an adapter over ``provision.verify.output.merge_reports``)."""

# ruff: noqa: E402  (Ansible's layout: DOCUMENTATION, EXAMPLES, RETURN come before the imports)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: report
short_description: Merge the per-host verify reports of a virtio-lab lab into one
version_added: "0.1.0"
description:
  - Each hypervisor verifies its own VMs, its tunnels, and the pairs whose source VM it runs
    (M(virtio_lab.lab.verify) with O(virtio_lab.lab.verify#module:host)). This merges those
    reports into one for the lab, every check's target prefixed with the host that made it,
    and writes it as JSON and/or JUnit XML where the task runs (normally the controller).
  - C(changed) is true when a file was written.
options:
  reports:
    description:
      - The registered result of M(virtio_lab.lab.verify) per inventory host (see the example
        and C(playbooks/verify.yml)).
      - Hosts whose result has no C(checks) (the verifier could not run) are listed in
        RV(missing) and make the merged report fail.
    type: dict
    required: true
  json_path:
    description: Where to write the merged report as JSON (the shape of C(provision verify --json)).
    type: path
  junit_path:
    description: Where to write the merged report as JUnit XML, one testcase per check.
    type: path
attributes:
  check_mode:
    support: full
    description: Merges and returns the report; writes no file.
  diff_mode:
    support: none
    description: Nothing to compare before and after.
extends_documentation_fragment:
  - virtio_lab.lab.provision
seealso:
  - module: virtio_lab.lab.verify
author:
  - virtio-lab developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: One report for the whole lab, on the controller
  virtio_lab.lab.report:
    reports: "{{ dict(ansible_play_hosts_all
                 | zip(ansible_play_hosts_all | map('extract', hostvars, 'virtio_lab_verify'))) }}"
    json_path: build/verify-wide.json
    junit_path: build/verify-wide.xml
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
passed:
  description: True when every host's verifier ran and no check failed.
  type: bool
  returned: always
summary:
  description: Counts of the merged report, e.g. C(60 passed, 0 failed, 5 skipped).
  type: str
  returned: always
missing:
  description: Hosts whose verifier did not produce a report.
  type: list
  elements: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.virtio_lab.lab.plugins.module_utils.provision_common import (
    require_provision,
    run_or_fail,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "reports": {"type": "dict", "required": True},
            "json_path": {"type": "path"},
            "junit_path": {"type": "path"},
        },
        supports_check_mode=True,
    )
    require_provision(module)
    from provision.verify import output

    p = module.params
    ran = {h: r for h, r in p["reports"].items() if isinstance(r, dict) and "checks" in r}
    missing = sorted(set(p["reports"]) - set(ran))
    if not ran:
        module.fail_json(msg=f"no host produced a verify report ({', '.join(missing)})",
                         missing=missing, exit_code=1)  # fmt: skip
    report = run_or_fail(module, output.merge_reports, ran)
    written = False
    if not module.check_mode:
        if p["json_path"]:
            output.write_json(report, p["json_path"])
            written = True
        if p["junit_path"]:
            output.write_junit(report, p["junit_path"])
            written = True
    n = report.counts()
    summary = f"{n['pass']} passed, {n['fail']} failed, {n['skip']} skipped"
    module.exit_json(changed=written, passed=report.passed and not missing, summary=summary,
                     missing=missing)  # fmt: skip


if __name__ == "__main__":
    main()
