"""virtio_lab.lab.host: prepare a hypervisor for labs (an adapter over ``provision.host.prepare``,
``provision.host`` and ``provision.image``)."""

# ruff: noqa: E402  (Ansible's layout: DOCUMENTATION, EXAMPLES, RETURN come before the imports)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host
short_description: Prepare a hypervisor for virtio-lab labs (packages, daemons, embedded guest)
version_added: "0.1.0"
description:
  - Installs the missing Debian packages, loads the openvswitch and vhost_net kernel modules
    when the kernel has them, starts ovsdb-server, ovs-vswitchd, virtlogd and libvirtd when they
    are not running (through systemd when it is PID 1, directly otherwise), and builds the
    embedded default guest (the C(tiny) image) unless the cache holds a build of the same inputs.
  - The same code as C(provision host prepare) and C(provision image build). A running daemon is
    never restarted, so a second run reports no change.
options:
  install:
    description:
      - Install missing Debian packages with apt-get. When false, missing packages fail the
        task (exit code 4) and name the packages.
    type: bool
    default: true
  image:
    description:
      - Build the embedded default guest when it is missing or its inputs changed (the host's
        kernel, busybox, qemu-ga, the init script).
    type: bool
    default: true
  debian:
    description:
      - Also build the Debian 12 disk image (the C(debian) image of a lab's VMs) from Debian's
        mirror, unless the cache holds a build of the same inputs (C(provision image build debian)).
      - In check mode, reported as a change when the cache holds no debian build at all (its
        inputs include the mirror's current release file, which check mode does not fetch).
    type: bool
    default: false
  smoke_test:
    description:
      - After the daemons answer, start and destroy a transient QEMU domain with a 4-queue NIC on
        a multi_queue tap, to prove libvirtd can run lab domains. Not a change of the host.
      - Skipped in check mode.
    type: bool
    default: true
  underlay:
    description:
      - C(NIC=ADDRESS/PREFIX), e.g. C(eth1=192.168.251.1/24). On a host whose OVS runs the
        userspace (netdev) datapath, tunnels between hypervisors need the underlay address on
        an OVS bridge that holds the underlay NIC; this makes the bridge C(vlab-underlay), adds
        the NIC to it and moves the address from the NIC to it. On the kernel datapath nothing
        is done (the routing table carries tunnels).
      - It changes the NIC, so it is done only when given (C(playbooks/host.yml) passes it when
        the host sets C(virtio_lab_underlay_interface)). Skipped in check mode.
    type: str
attributes:
  check_mode:
    support: full
    description:
      - Reports what is missing (packages, kernel modules, daemons, guest image) and would be
        installed, loaded, started or built, without changing anything. The host part is the
        library's host plan, the same as C(provision host prepare --check --json) reports.
  diff_mode:
    support: none
    description: Nothing to compare before and after.
extends_documentation_fragment:
  - virtio_lab.lab.provision
requirements:
  - Debian 12 (apt-get), root.
notes:
  - The guest image cache is C($VIRTIO_LAB_CACHE), else C(/var/cache/virtio-lab/images); set it
    with the task's C(environment) keyword or in the controller's environment for local runs.
  - Failures carry C(exit_code), 1 operation failed, 4 host not capable or a daemon did not start.
seealso:
  - module: virtio_lab.lab.lab
author:
  - virtio-lab developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Prepare the hypervisor and build the embedded guest
  virtio_lab.lab.host:

- name: What is missing? (touches nothing)
  virtio_lab.lab.host:
  check_mode: true
  register: missing

- name: Only start daemons; fail if packages are missing
  virtio_lab.lab.host:
    install: false
    image: false
"""

RETURN = r"""
changed:
  description:
    - True when a package was installed, a module loaded, a daemon started or the guest built
      (in check mode, when a real run would do one of these).
  returned: always
  type: bool
actions:
  description:
    - What was done (check mode, what would be done), in order; the same actions as
      C(provision host prepare [--check] --json) reports, plus the guest image build.
  returned: always
  type: list
  elements: dict
  contains:
    kind: {description: "install, load-module, start-daemon, install-file, build-image", type: str}
    target: {description: "The package, kernel module, daemon, file or image", type: str}
    reason: {description: "Why, in one line", type: str}
  sample: [{kind: start-daemon, target: ovsdb-server, reason: "not running; ..."}]
missing_packages:
  description: Debian packages that were missing before the task.
  returned: always
  type: list
  elements: str
daemons:
  description: Daemon name to running, as observed before the task.
  returned: always
  type: dict
  sample: {libvirtd: true, ovs-vswitchd: true, ovsdb-server: true, virtlogd: true}
image:
  description: The embedded guest, when O(image=true) and not in check mode.
  returned: when built or found current
  type: dict
  contains:
    name: {description: Image name, type: str, sample: tiny}
    built: {description: True when built by this task, type: bool}
    content_hash: {description: sha256 of kernel and initrd, type: str}
    kernel_version: {description: The guest kernel, type: str}
    path: {description: The build directory in the cache, type: str}
caps:
  description:
    - What this host can do after the task, as C(provision host check --json) reports it (the KVM
      answer is the one lab commands use, probed once per boot and QEMU build).
  returned: always
  type: dict
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.virtio_lab.lab.plugins.module_utils.provision_common import (
    jsonable,
    require_provision,
    run_or_fail,
)


def image_action(image: bool) -> list[dict[str, str]]:
    """The guest image build a real run would add to the host plan (check mode)."""
    from provision.errors import HostError
    from provision.host.plan import HostAction
    from provision.image import build as guest_image

    if not image:
        return []
    try:
        if guest_image.image_current("tiny"):
            return []
        reason = "the cache holds no build of this host's current inputs"
    except HostError:  # an input (kernel, busybox, qemu-ga) is missing until packages land
        reason = "its inputs come with the packages to install"
    return [HostAction("build-image", "tiny", reason).to_dict()]


def debian_action(debian: bool) -> list[dict[str, str]]:
    """The debian build a real run would do, as far as check mode can tell."""
    from provision.host.plan import HostAction
    from provision.image.cache import default_cache_dir, read_manifest

    if not debian or read_manifest(default_cache_dir() / "debian") is not None:
        return []
    return [HostAction("build-image", "debian", "the cache holds no debian build").to_dict()]


def check(install: bool, image: bool, caps: Any, debian: bool = False
          ) -> list[dict[str, str]]:  # fmt: skip
    """What a real run would do: the library's host plan, plus the guest images."""
    from provision.host.plan import plan_host

    return ([a.to_dict() for a in plan_host(caps, install).actions] + image_action(image)
            + debian_action(debian))  # fmt: skip


def prepare(install: bool, image: bool, smoke_test: bool, caps: Any, debian: bool = False
            ) -> tuple[list[dict[str, str]], dict[str, Any]]:  # fmt: skip
    from provision.host import prepare as hostprep
    from provision.host.plan import HostAction
    from provision.image import build as guest_image

    result = hostprep.prepare_host(caps, install=install, smoke_test=smoke_test)
    actions = [a.to_dict() for a in result.actions]
    facts: dict[str, Any] = {}
    if image:
        img, built = guest_image.build_image("tiny")
        if built:
            actions.append(HostAction("build-image", "tiny",
                                      f"built ({img.content_hash[:16]})").to_dict())
        facts = {"name": img.name, "built": built, "content_hash": img.content_hash,
                 "kernel_version": img.kernel_version, "path": str(img.initrd.parent)}  # fmt: skip
    if debian:
        from provision.image import debian as debian_image

        disk, built = debian_image.build_debian()
        if built:
            actions.append(HostAction("build-image", "debian",
                                      f"built ({disk.content_hash[:16]})").to_dict())
    return actions, facts


def underlay(text: str) -> list[dict[str, str]]:
    """The underlay NIC and address on the OVS bridge vlab-underlay (userspace datapath)."""
    from provision.host.probe import probe_ovs_kernel_datapath
    from provision.host.underlay import UNDERLAY_BRIDGE, ensure_underlay, parse_underlay

    nic, address = parse_underlay(text)
    done = ensure_underlay(nic, address, probe_ovs_kernel_datapath()[0])
    return [{"kind": "underlay", "target": UNDERLAY_BRIDGE, "reason": d} for d in done]


def host_caps(probe: Any = None) -> dict[str, Any]:
    """``provision host check --json``, with the KVM answer lab commands use (cached per boot),
    so emulator and machine are the ones labs get."""
    from provision.host.probe import probe_host

    return (probe or probe_host(refresh=False)).to_dict()


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "install": {"type": "bool", "default": True},
            "image": {"type": "bool", "default": True},
            "debian": {"type": "bool", "default": False},
            "smoke_test": {"type": "bool", "default": True},
            "underlay": {"type": "str"},
        },
        supports_check_mode=True,
    )
    require_provision(module)
    from provision.host.probe import probe_host

    p = module.params
    before = run_or_fail(module, probe_host, refresh=False)
    out: dict[str, Any] = {
        "missing_packages": list(before.missing_packages),
        "daemons": dict(before.daemons),
    }
    if module.check_mode:
        actions = run_or_fail(module, check, p["install"], p["image"], before, p["debian"])
        caps = run_or_fail(module, host_caps, before)
    else:
        actions, out["image"] = run_or_fail(module, prepare, p["install"], p["image"],
                                            p["smoke_test"], before, p["debian"])  # fmt: skip
        if p["underlay"]:
            actions += run_or_fail(module, underlay, p["underlay"])
        caps = run_or_fail(module, host_caps, None if actions else before)
        if not out["image"]:
            del out["image"]
    module.exit_json(changed=bool(actions), actions=actions, caps=jsonable(caps), **out)


if __name__ == "__main__":
    main()
