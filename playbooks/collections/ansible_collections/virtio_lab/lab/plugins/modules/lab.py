"""virtio_lab.lab.lab: converge a hypervisor to a virtio-lab lab, or remove it (an adapter over
``provision.lab``: plan_lab, up_lab, down_lab)."""

# ruff: noqa: E402  (Ansible's layout: DOCUMENTATION, EXAMPLES, RETURN come before the imports)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lab
short_description: Converge a multiqueue virtio-net lab (OVS bridges, taps, libvirt VMs)
version_added: "0.1.0"
description:
  - Brings the hypervisor to the lab described by a virtio-lab lab spec (the C(lab) variable of
    a lab file in C(inventory/)), or removes everything the lab owns from it.
  - A thin adapter over the C(provision) library, so the CLI (C(provision plan|up|down)) and this
    module compute the same plan. Objects are found by ownership tags (OVS C(external_ids),
    domain C(<metadata>), tap ifalias), never by guessing names; objects the lab does not own are
    never changed.
  - C(changed) is true exactly when the plan was not empty. A second run reports no change.
  - Options that the lab spec sets (VLAN tags, trunks, queues, addresses, definition) are
    converged on every run, not only at creation. Drift made from outside (a port's tag changed,
    a VM destroyed) is planned and repaired.
options:
  state:
    description:
      - C(present) converges the host to the lab (C(provision up)).
      - C(absent) removes every domain, tap, port and bridge the lab owns on this host, and
        nothing else (C(provision down)). A bridge the lab names but did not create is kept.
    type: str
    choices: [present, absent]
    default: present
  host:
    description:
      - The inventory host this task runs for, normally C("{{ inventory_hostname }}").
      - With O(state=present) only the lab's VMs whose C(host) equals this value are placed here
        (a VM's C(host) defaults to C(localhost)); owned VMs of the lab found here that belong
        elsewhere are removed. Every bridge of the lab is created on every host.
      - Omitted, every VM of the lab is placed on this host (what the CLI does).
      - Ignored with O(state=absent), which removes all the lab owns on this host.
    type: str
  agent_timeout:
    description:
      - Seconds to wait for each guest's agent to answer after a VM (re)starts.
    type: float
    default: 300
attributes:
  check_mode:
    support: full
    description: Returns the plan (the exact changes a real run would make) and touches nothing.
  diff_mode:
    support: full
    description: One before/after entry per changed object (bridge, port, tap, domain, guest NIC).
extends_documentation_fragment:
  - virtio_lab.lab.lab_options
  - virtio_lab.lab.provision
requirements:
  - ovsdb-server, ovs-vswitchd and libvirtd running, and the embedded guest built
    (M(virtio_lab.lab.host) does both).
notes:
  - Failures carry C(exit_code) with the CLI's meaning, 1 operation failed, 3 bad spec,
    4 host not capable or a daemon unreachable.
  - The guest image cache is C($VIRTIO_LAB_CACHE), else C(/var/cache/virtio-lab/images).
seealso:
  - module: virtio_lab.lab.verify
  - module: virtio_lab.lab.host
author:
  - virtio-lab developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Converge this hypervisor to the lab of the inventory
  virtio_lab.lab.lab:
    spec: "{{ lab }}"
    host: "{{ inventory_hostname }}"
    state: present

- name: Same, from a lab file
  virtio_lab.lab.lab:
    path: inventory/demo.yml

- name: What would change? (run the play with --check --diff)
  virtio_lab.lab.lab:
    spec: "{{ lab }}"
  check_mode: true
  diff: true
  register: plan

- name: Show the planned changes
  ansible.builtin.debug:
    msg: "{{ plan.changes | map(attribute='target') | list }}"

- name: Remove everything the lab owns from this host
  virtio_lab.lab.lab:
    spec: "{{ lab }}"
    state: absent
"""

RETURN = r"""
changed:
  description:
    - True exactly when the plan was not empty (in check mode, when a real run would change).
  returned: always
  type: bool
lab:
  description: The lab's name.
  returned: always
  type: str
  sample: demo
in_sync:
  description: True when the host already matched the lab before this task.
  returned: always
  type: bool
changes:
  description:
    - The plan, in apply order; in a real run the changes made, in check mode the changes a real
      run would make. Empty when in sync.
  returned: always
  type: list
  elements: dict
  contains:
    phase:
      description: Apply phase, one of domains-remove, taps, ovs, taps-remove, domains, guests.
      type: str
    action:
      description: create, modify, delete, start, replace, restart or configure.
      type: str
    kind:
      description: bridge, port, tap, domain, guest or guest-nic.
      type: str
    target:
      description: The object's name (a guest NIC is C(<domain>/<mac>)).
      type: str
    before:
      description: The observed values that differ (null when the object is absent).
      type: raw
    after:
      description: The desired values (null when the object is removed).
      type: raw
    reason:
      description: Why, for a human.
      type: str
  sample:
    - {phase: ovs, action: modify, kind: port, target: demo-vm1-0, before: {tag: 999},
       after: {tag: 100}, reason: "differs: tag"}
notes:
  description: What the plan left alone and why (e.g. a bridge the lab uses but does not own).
  returned: always
  type: list
  elements: str
backend:
  description: The virtio-net backend the lab uses on this host, C(vhost-net) or C(userspace).
  returned: when O(state=present)
  type: str
  sample: userspace
domain_type:
  description: The libvirt domain type, C(kvm) or C(qemu) (TCG) when KVM is not usable.
  returned: when O(state=present)
  type: str
vms:
  description: The lab's VMs placed on this host (after the O(host) filter).
  returned: when O(state=present)
  type: list
  elements: str
agent_seconds:
  description: Per (re)started domain, seconds until its guest agent answered.
  returned: always
  type: dict
seconds:
  description: Wall time of the operation.
  returned: always
  type: float
readback_seconds:
  description:
    - Of RV(seconds), the time spent reading the host back after applying (observing and
      planning again). A read-back that still finds differences fails the task, one line per
      object in C(msg).
  returned: always
  type: float
diff:
  description:
    - With C(--diff), one entry per change, before_header, after_header, before and after (YAML
      text of the observed and desired values; empty for an absent object).
  returned: when diff mode is on
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.virtio_lab.lab.plugins.module_utils.provision_common import (
    LAB_OPTIONS,
    LAB_SOURCE_RULES,
    jsonable,
    lab_source,
    plan_diff,
    require_provision,
    run_or_fail,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **LAB_OPTIONS,
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "host": {"type": "str"},
            "agent_timeout": {"type": "float", "default": 300.0},
        },
        supports_check_mode=True,
        **LAB_SOURCE_RULES,
    )
    require_provision(module)
    from provision.core.tunnels import UNDERLAY_VAR
    from provision.engine import lab
    p = module.params
    present = p["state"] == "present"
    source = run_or_fail(module, lab.lab_inventory, run_or_fail(module, lab_source, module))
    if p["underlay"]:
        source = source.with_var(UNDERLAY_VAR, p["underlay"])
    host = p["host"] if present else None
    wanted = run_or_fail(module, source.placed, host)  # what `vms` reports
    if not present:
        result = run_or_fail(module, lab.down_lab, source, check=module.check_mode)
    elif module.check_mode:
        result = run_or_fail(module, lab.plan_lab, source, host)
    else:
        result = run_or_fail(module, lab.up_lab, source, agent_timeout=p["agent_timeout"],
                             host=host)
    out = jsonable(result.to_dict())
    if present:
        out["vms"] = [vm.name for vm in wanted.vms]
    else:
        out.pop("backend", None)
        out.pop("domain_type", None)
    if module._diff:
        out["diff"] = plan_diff(out["changes"])
    module.exit_json(**out)


if __name__ == "__main__":
    main()
