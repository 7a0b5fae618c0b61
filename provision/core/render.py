"""Rendering: domain XML from the Jinja templates the package ships (``templates/`` in the
repository). Pure, no I/O but reading the templates.

The environment escapes every value (autoescape) and fails on any undefined variable
(StrictUndefined), so a spec value can never inject XML and a template typo never renders an
empty attribute.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from provision.core.owner import OWNER_NS
from provision.errors import HostError

TEMPLATES_ENV = "VIRTIO_LAB_TEMPLATES"


def templates_dir() -> Path:
    """$VIRTIO_LAB_TEMPLATES, else the package's ``provision/templates``: in a checkout a
    symlink to the top-level ``templates/``, in an installed wheel a copy of it (package data,
    see pyproject.toml)."""
    override = os.environ.get(TEMPLATES_ENV)
    if override:
        return Path(override)
    # pip installs a wheel unpacked and the editable install maps the checkout, so the
    # package is a directory on disk and Jinja's FileSystemLoader can read it.
    return Path(str(resources.files("provision").joinpath("templates"))).resolve()


@cache
def _env(directory: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_template(template: str, **context: Any) -> str:
    """``template`` rendered; HostError (exit 4) when the templates are missing or broken:
    they ship with virtio-lab, so the installation is what needs repair."""
    directory = templates_dir()
    try:
        loaded = _env(str(directory)).get_template(template)
    except jinja2.TemplateNotFound:
        raise HostError(
            f"template {template} not found in {directory}: the installation of virtio-lab "
            f"is broken; reinstall it{_override_hint()}"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise HostError(
            f"template {directory / template} line {exc.lineno} is broken ({exc.message}): "
            f"the installation of virtio-lab is broken; reinstall it{_override_hint()}"
        ) from None
    return loaded.render(**context)


def _override_hint() -> str:
    if not os.environ.get(TEMPLATES_ENV):
        return ""
    return f" (or unset {TEMPLATES_ENV}, which names that directory)"


def driver_name(backend: str) -> str:
    """libvirt's ``<driver name>``: ``vhost`` asks for vhost-net, ``qemu`` for userspace.

    Without an explicit name libvirt falls back to userspace silently; naming it makes
    QEMU fail loudly instead when vhost-net is missing.
    """
    return "vhost" if backend == "vhost-net" else "qemu"


CONSOLE_LOG_DIR = "/var/log/libvirt/qemu"  # libvirt's own log directory for QEMU


def console_log(domain: str) -> str:
    """Where the guest's serial console is written (by virtlogd, replaced at each start):
    what a guest that never answered printed, there to read after the fact."""
    return f"{CONSOLE_LOG_DIR}/{domain}.console.log"


def domain_xml(*, nics: list[dict[str, Any]], backend: str, **context: Any) -> str:
    """The libvirt domain XML of one lab VM.

    ``nics``: per NIC its mac, tap, queues, rx/tx_queue_size and ``host_csum`` (False: do
    not offer checksum offload to the guest). ``context``: lab, name, vm, image, cmdline,
    domain_type, spec_hash, as the template uses them.

    ``context`` also carries ``emulator`` and ``machine``, from libvirt's domain capabilities
    for the domain type (``HostCaps.emulator``, ``HostCaps.machine``): the QEMU binary and
    machine differ between distributions.
    """
    return render_template(
        "domain.xml.j2",
        nics=nics,
        backend=backend,
        driver_name=driver_name(backend),
        owner_ns=OWNER_NS,
        console_log=console_log(context["name"]),
        **context,
    )
