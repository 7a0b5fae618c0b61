"""virtio-lab: multiqueue virtio-net labs on Open vSwitch and libvirt, from one file."""

__version__ = "0.1.0"
