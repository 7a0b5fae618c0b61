"""libvirt's domain capabilities read into what a lab domain needs: the emulator binary and
the machine type. Pure: parses the XML of ``virConnect.getDomainCapabilities()``; asking
libvirtd for it is ``provision.host.probe.domain_caps``.

Distributions differ here: Debian runs /usr/bin/qemu-system-x86_64 with i440fx (``pc``) as
the default machine, Fedora and RHEL /usr/libexec/qemu-kvm with versioned q35 machines only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

# i440fx: the embedded guest reaches its agent as fast as on q35 under TCG (2.02 vs 2.07 s
# median, bench_guest_boot.py), and it has PCI slots enough for a lab VM.
PREFERRED_MACHINE = "pc"
PREFERRED_MACHINE_FAMILY = "pc-i440fx-"  # what the alias `pc` stands for


@dataclass(frozen=True)
class DomainCaps:
    """The parts of <domainCapabilities> a lab domain is rendered from."""

    emulator: str  # <path>: the QEMU binary libvirt runs for this domain type and arch
    domain: str  # <domain>: the virt type asked for, kvm | qemu
    arch: str  # <arch>
    machines: tuple[str, ...]  # every <machine>, in document order (libvirt lists its default)

    @property
    def machine(self) -> str:
        """The <type machine=...> lab domains get."""
        return choose_machine(self.machines)


def parse_domain_caps(xml: str) -> DomainCaps:
    """Parse <domainCapabilities>; ValueError when it names no emulator or no machine."""
    root = ET.fromstring(xml)
    if root.tag != "domainCapabilities":
        raise ValueError(f"<{root.tag}> is not <domainCapabilities>")
    emulator = (root.findtext("path") or "").strip()
    machines = tuple(m.text.strip() for m in root.findall("machine") if m.text and m.text.strip())
    if not emulator:
        raise ValueError("no <path>: libvirt found no QEMU binary for this domain type")
    if not machines:
        raise ValueError(f"no <machine> for {emulator}")
    return DomainCaps(
        emulator=emulator,
        domain=(root.findtext("domain") or "").strip(),
        arch=(root.findtext("arch") or "").strip(),
        machines=machines,
    )


def choose_machine(machines: Sequence[str]) -> str:
    """``pc`` when listed, else an i440fx machine (``pc`` is its alias), else the first.

    Domain capabilities name the default machine by its canonical name (pc-i440fx-7.2 on
    Debian 12), so the family is what usually matches there.
    """
    if not machines:
        raise ValueError("no machine types to choose from")
    if PREFERRED_MACHINE in machines:
        return PREFERRED_MACHINE
    family = [m for m in machines if m.startswith(PREFERRED_MACHINE_FAMILY)]
    return family[0] if family else machines[0]
