"""virtio_lab.lab.verify: prove a lab's virtio-net data path hop by hop (an adapter over the
``provision`` verifier; it observes only)."""

# ruff: noqa: E402  (Ansible's layout: DOCUMENTATION, EXAMPLES, RETURN come before the imports)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: verify
short_description: Prove a virtio-lab lab's data path end to end, with evidence per hop
version_added: "0.1.0"
description:
  - Runs virtio-lab's verifier (C(provision verify)) on the lab and returns its report, one
    check per hop and object, from the spec to packets moving on every queue inside the guests
    (live domain XML, QEMU's tap fds and vhost threads, taps, OVS ports, guest NICs and channels,
    L2/L3 reachability and VLAN isolation, per-queue counters under load).
  - Observes only, never repairs; C(changed) is always false.
  - The task fails when any check fails; the full report is in the result either way.
options:
  host:
    description:
      - The inventory host this task runs for, normally C("{{ inventory_hostname }}"); only the
        lab's VMs placed on it (their C(host), default C(localhost)) are verified.
      - Omitted, every VM of the lab is verified on this host.
    type: str
  perf:
    description:
      - Also measure iperf3 throughput between the guests (informational checks, slower).
    type: bool
    default: false
  report_path:
    description:
      - Also write the report as JSON to this file on the managed host (what
        C(provision verify LAB --json FILE) writes).
    type: path
  junit_path:
    description:
      - Also write JUnit XML, one testcase per check (C(provision verify LAB --junit FILE)).
    type: path
attributes:
  check_mode:
    support: full
    description: The verifier only observes, so it runs in check mode too.
  diff_mode:
    support: none
    description: Nothing to compare before and after.
extends_documentation_fragment:
  - virtio_lab.lab.lab_options
  - virtio_lab.lab.provision
notes:
  - Failures of the verifier itself (bad spec, daemon unreachable) carry C(exit_code) 3 or 4
    like the CLI; a failed check fails the task with C(exit_code) 1.
seealso:
  - module: virtio_lab.lab.lab
author:
  - virtio-lab developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Prove the lab's data path
  virtio_lab.lab.verify:
    spec: "{{ lab }}"
    host: "{{ inventory_hostname }}"
    report_path: /tmp/verify-{{ lab.name }}.json
  register: report

- name: Keep going when a check fails, and look at the failures
  virtio_lab.lab.verify:
    path: inventory/demo.yml
  register: report
  failed_when: false

- name: Show the failed checks
  ansible.builtin.debug:
    msg: "{{ report.checks | selectattr('status', 'equalto', 'fail') | list }}"
"""

RETURN = r"""
passed:
  description: True when no check failed.
  returned: always
  type: bool
lab:
  description: The lab's name.
  returned: always
  type: str
backend:
  description:
    - The virtio-net backend found in use, e.g. C(vhost-net) or C(userspace) (observed, never
      assumed).
  returned: always
  type: str
datapath:
  description: Deprecated alias of RV(backend), kept for one release.
  returned: always
  type: str
spec_backend:
  description: The lab file's C(backend) (C(auto), C(vhost-net) or C(userspace)).
  returned: always
  type: str
counts:
  description: Number of checks per status.
  returned: always
  type: dict
  sample: {pass: 40, fail: 0, skip: 2}
seconds:
  description: Wall time of the verification.
  returned: always
  type: float
checks:
  description: One entry per hop and object.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The check, e.g. C(domain.queues), C(tap.multi_queue), C(ovs.tag).
      type: str
    target:
      description: The object checked (domain, tap, port, NIC pair).
      type: str
    status:
      description: C(pass), C(fail) or C(skip).
      type: str
    hop:
      description: The hop, the part of the name before the first dot.
      type: str
    detail:
      description: One line for humans, the problem on fail, the reason on skip.
      type: str
    evidence:
      description: What was observed.
      type: raw
summary:
  description: Counts of checks by status, e.g. C(42 passed, 0 failed, 3 skipped).
  returned: always
  type: str
failed_checks:
  description: The checks that failed (same shape as RV(checks) entries).
  returned: always
  type: list
  elements: dict
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.virtio_lab.lab.plugins.module_utils.provision_common import (
    LAB_OPTIONS,
    LAB_SOURCE_RULES,
    jsonable,
    lab_source,
    require_provision,
    run_or_fail,
)


def run_verifier(source: Any, host: str | None, perf: bool,
                 underlay: dict[str, str] | None) -> Any:
    """The verifier's report for the lab's VMs on this host (a ``VerifyReport``): their hops,
    this host's tunnels, and the pairs whose source VM runs here, peers elsewhere included."""
    from provision import verify
    from provision.core.tunnels import UNDERLAY_VAR
    from provision.engine import lab
    inv = lab.lab_inventory(source)
    if underlay:
        inv = inv.with_var(UNDERLAY_VAR, underlay)
    return verify.verify_lab(inv, perf=perf, host=host)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **LAB_OPTIONS,
            "host": {"type": "str"},
            "perf": {"type": "bool", "default": False},
            "report_path": {"type": "path"},
            "junit_path": {"type": "path"},
        },
        supports_check_mode=True,
        **LAB_SOURCE_RULES,
    )
    require_provision(module)
    try:
        from provision.verify import output
    except ImportError:
        module.fail_json(msg="this provision library has no verifier (provision.verify); update "
                         "virtio-lab", exit_code=4)  # fmt: skip
    p = module.params
    source = run_or_fail(module, lab_source, module)
    report = run_or_fail(module, run_verifier, source, p["host"], p["perf"], p["underlay"])
    if p["report_path"]:
        output.write_json(report, p["report_path"])
    if p["junit_path"]:
        output.write_junit(report, p["junit_path"])
    result = jsonable(report.to_dict())
    n = report.counts()
    result["summary"] = f"{n['pass']} passed, {n['fail']} failed, {n['skip']} skipped"
    result["failed_checks"] = [c for c in result["checks"] if c["status"] == "fail"]
    if not report.passed:
        names = "; ".join(f"{c['name']} {c['target']}: {c['detail']}"
                          for c in result["failed_checks"][:5])  # fmt: skip
        module.fail_json(msg=f"lab {report.lab}: {result['summary']}: {names}", exit_code=1,
                         changed=False, **result)  # fmt: skip
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
