"""Rendering: domain XML from the Jinja templates in ``templates/``. Pure, no I/O but reading
the templates.

The environment escapes every value (autoescape) and fails on any undefined variable
(StrictUndefined), so a spec value can never inject XML and a template typo never renders an
empty attribute.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

if TYPE_CHECKING:
    from provision.core.desired import GuestNic
    from provision.core.spec import VmSpec
    from provision.image.build import GuestImage

OWNER_NS = "https://virtio-lab.dev/xmlns/owner/1"


def templates_dir() -> Path:
    """``templates/`` at the repository root, or $VIRTIO_LAB_TEMPLATES."""
    override = os.environ.get("VIRTIO_LAB_TEMPLATES")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "templates"


@cache
def _env(directory: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_template(template: str, **context: Any) -> str:
    return _env(str(templates_dir())).get_template(template).render(**context)


def driver_name(backend: str) -> str:
    """libvirt's ``<driver name>``: ``vhost`` asks for vhost-net, ``qemu`` for userspace.

    Without an explicit name libvirt falls back to userspace silently; naming it makes
    QEMU fail loudly instead when vhost-net is missing.
    """
    return "vhost" if backend == "vhost-net" else "qemu"


def domain_xml(
    *,
    lab: str,
    name: str,
    vm: VmSpec,
    taps: list[str],
    nics: tuple[GuestNic, ...],
    userspace_bridge: list[bool],
    image: GuestImage,
    cmdline: str,
    domain_type: str,
    backend: str,
    spec_hash: str,
    emulator: str,
    machine: str,
) -> str:
    """The libvirt domain XML of one lab VM.

    ``emulator`` and ``machine`` come from libvirt's domain capabilities for ``domain_type``
    (``HostCaps.emulator``, ``HostCaps.machine``): the QEMU binary and machine differ between
    distributions.

    ``userspace_bridge[i]``: NIC i is on an OVS ``netdev`` bridge. OVS's userspace datapath
    does not complete checksums a guest leaves to the NIC (TCP then dies with bad checksums
    while ping works), so such NICs do not offer checksum offload to the guest.
    """
    nic_ctx = [
        {
            "mac": nic.mac,
            "tap": tap,
            "queues": nic.queues,
            "rx_queue_size": spec.rx_queue_size,
            "tx_queue_size": spec.tx_queue_size,
            "host_csum": not userspace,
        }
        for nic, tap, spec, userspace in zip(nics, taps, vm.nics, userspace_bridge, strict=True)
    ]
    return render_template(
        "domain.xml.j2",
        lab=lab,
        name=name,
        vm=vm,
        nics=nic_ctx,
        image=image,
        cmdline=cmdline,
        domain_type=domain_type,
        backend=backend,
        driver_name=driver_name(backend),
        spec_hash=spec_hash,
        owner_ns=OWNER_NS,
        machine=machine,
        emulator=emulator,
    )
