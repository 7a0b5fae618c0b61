"""Where virtio-lab keeps state on this host (/var/lib/virtio-lab/<kind>), and where inside a
namespace hypervisor of `provision hosts`: those share the machine's /var/lib, so each keeps
its state under its own state directory, or two hypervisors' labs would meet in one place.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from provision.errors import SpecError

DEFAULT_ROOT = Path("/var/lib/virtio-lab")
# Written by `hypervisors/inside.py` in a hypervisor's private /run: its name.
HYPERVISOR_MARKER = Path("/run/virtio-lab/hypervisor")


def inside_hypervisor() -> str | None:
    """The hypervisor this process runs in (`inside.py` leaves its name in the private
    /run), None on the machine itself."""
    with contextlib.suppress(OSError):
        return HYPERVISOR_MARKER.read_text().strip() or None
    return None


def state_dir(kind: str) -> Path:
    """``<root>/<kind>``: the machine's /var/lib/virtio-lab, or the hypervisor's own."""
    name = inside_hypervisor()
    if name:
        # Only in a hypervisor: importing the package costs every `up` on the machine 15 ms.
        from provision.hypervisors.plan import parse_name

        with contextlib.suppress(SpecError):  # not a hypervisor's name: not one of ours
            return parse_name(name).state_dir / kind
    return DEFAULT_ROOT / kind
