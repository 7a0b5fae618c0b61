"""Options of the modules that act on a lab (lab, verify): where the lab comes from (``spec``
or ``path``) and each host's underlay address for the lab's tunnels. Their argument spec is
``module_utils.provision_common.LAB_OPTIONS``."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  spec:
    description:
      - The lab as a mapping (name, backend, bridges, vms), usually C("{{ lab }}"), the variable
        every lab file in C(inventory/) defines under C(all.vars).
      - Validated like a lab file; a bad key fails the task with the key path (exit code 3),
        before anything on the host is looked at.
      - Mutually exclusive with O(path); one of the two is required.
    type: dict
    aliases: [lab]
  path:
    description:
      - A lab file (an Ansible inventory carrying C(all.vars.lab)), e.g. C(inventory/demo.yml).
      - Mutually exclusive with O(spec).
    type: path
    aliases: [lab_file]
  underlay:
    description:
      - The underlay (tunnel) address of each inventory host, as a mapping of host to address,
        normally built from every host's C(virtio_lab_underlay_ip) (see C(playbooks/up.yml)).
      - With O(host), every bridge that has VMs on this host and on others has one tunnel port
        to each of those hosts (lab C(tunnels.type), geneve by default), keyed by a VNI derived
        from lab and bridge; a peer missing here fails with exit code 3.
      - Added to (and overriding) the host variables of a lab file given as O(path).
    type: dict
"""
