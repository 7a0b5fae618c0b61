"""Where virtio-lab keeps state on this host (/var/lib/virtio-lab/<kind>), and where inside a
namespace hypervisor of `provision hosts`: those share the machine's /var/lib, so each keeps
its state under its own state directory, or two hypervisors' labs would meet in one place.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from provision.errors import SpecError

DEFAULT_ROOT = Path("/var/lib/virtio-lab")


def state_dir(kind: str) -> Path:
    """``<root>/<kind>``: the machine's /var/lib/virtio-lab, or the hypervisor's own."""
    from provision.hypervisors.daemons import inside_hypervisor
    from provision.hypervisors.plan import parse_name

    name = inside_hypervisor()
    if name:
        with contextlib.suppress(SpecError):  # not a hypervisor's name: not one of ours
            return parse_name(name).state_dir / kind
    return DEFAULT_ROOT / kind
