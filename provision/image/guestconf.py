"""What virtio-lab writes into the `debian` image's tree, and why: pure text, no I/O.

Two sets of files. ``preinstall_files`` go in before any package is installed, so that the
kernel package's own initramfs run already uses them; ``guest_files`` go in after, replacing
what the packages or mmdebstrap left (the build host's hostname and resolv.conf, an empty
fstab).

Networking: cloud-init renders the seed's network-config (version 2) with **netplan**, whose
configuration systemd-networkd then applies. cloud-init 22.4's own networkd renderer has no
VLANs, and netplan takes a v2 config as it is: NICs matched by MAC (``match: {macaddress}``
with ``set-name``), static addresses, ``mtu``, and ``vlans:`` sub-interfaces.
"""

from __future__ import annotations

# Loaded by the initramfs to find the root disk (MODULES=list: nothing else goes in, which
# keeps the initramfs a few MB and quick to unpack under TCG). ext4 is built into the
# cloud kernel. virtio-blk is how labs attach disks; SCSI and AHCI for other domains.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci")

# Started by systemd at boot; qemu-guest-agent needs nothing here: its udev rule starts it
# as soon as the org.qemu.guest_agent.0 port appears.
ENABLED_UNITS = ("systemd-networkd.service",)
# Timers and services a short-lived lab guest has no use for, masked (not just disabled) so
# that no preset run enables them again: apt's daily runs, dpkg's database backup, ext4
# scrubbing and trimming.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
    "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
)  # fmt: skip

CLOUD_CFG = """\
# virtio-lab: the debian image is configured by a NoCloud seed (a filesystem labelled
# cidata); probing for other clouds would only cost boot time.
datasource_list: [NoCloud, None]
system_info:
  network:
    # netplan renders network-config v2 (MAC matches, static addresses, VLANs, MTU) for
    # systemd-networkd; cloud-init 22.4's own networkd renderer has no VLANs.
    renderers: [netplan]
    activators: [netplan]
# C.UTF-8 is built into libc: no locale-gen (the image has no locale sources).
locale: C.UTF-8
# The root filesystem fills the disk as built; neither grows at boot.
growpart:
  mode: "off"
resize_rootfs: false
# Host keys are made at first boot, before qemu-ga starts: RSA and DSA keys take about 6 s
# under TCG, Ed25519 and ECDSA a fraction of that.
ssh_genkeytypes: [ed25519, ecdsa]
# GRUB is not a package here (virtio-lab wrote it): nothing for debconf to record.
grub_dpkg:
  enabled: false
"""

# cloud-init's network stage runs after systemd-networkd-wait-online and before
# sysinit.target, and qemu-ga after basic.target: so a guest-ping that succeeds means the
# seed's network is configured, as with tiny. A link that never comes up (no carrier, no
# DHCP answer, no NIC at all) delays that by 30 s instead of wait-online's 2 min.
WAIT_ONLINE_DROPIN = """\
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --timeout=30
"""

INITRAMFS_CONF = """\
# virtio-lab: only the modules listed in /usr/share/initramfs-tools/modules.d/virtio-lab
MODULES=list
"""

HOSTS = """\
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
"""


def preinstall_files() -> dict[str, str]:
    """Guest path -> content of the files in place before packages are installed."""
    return {
        "etc/initramfs-tools/conf.d/virtio-lab.conf": INITRAMFS_CONF,
        "usr/share/initramfs-tools/modules.d/virtio-lab": "".join(
            f"{module}\n" for module in INITRAMFS_MODULES
        ),
    }


def guest_files(fs_uuid: str, cmdline: str) -> dict[str, str]:
    """Guest path -> content of the files written once packages are installed; `cmdline`
    is the whole kernel command line (``kernel_cmdline``)."""
    return {
        "etc/fstab": fstab(fs_uuid),
        "boot/grub/grub.cfg": grub_cfg(cmdline),
        "etc/cloud/cloud.cfg.d/90_virtio_lab.cfg": CLOUD_CFG,
        "etc/systemd/system/systemd-networkd-wait-online.service.d/virtio-lab.conf":
            WAIT_ONLINE_DROPIN,
        "etc/default/locale": "LANG=C.UTF-8\n",
        "etc/hostname": "debian\n",
        "etc/hosts": HOSTS,
        "etc/resolv.conf": "",  # not the build host's; no resolver in the image sets it
        "etc/machine-id": "",  # empty: systemd makes one at first boot
    }


def fstab(fs_uuid: str) -> str:
    # Pass 0: no fsck at boot (the journal recovers the filesystem; fsck costs seconds
    # under TCG).
    return (
        "# virtio-lab: the root filesystem by UUID, no fsck at boot\n"
        f"UUID={fs_uuid}\t/\text4\terrors=remount-ro\t0\t0\n"
    )


def kernel_cmdline(fs_uuid: str, base: str) -> str:
    """The guest kernel's command line: the root filesystem by UUID, then `base` (which
    has console=ttyS0)."""
    return f"root=UUID={fs_uuid} ro {base}"


def grub_cfg(cmdline: str) -> str:
    """Boot the one kernel at once (no menu, no timeout), with GRUB on the serial port
    as well as the screen so that a boot failure shows in the serial log. /vmlinuz and
    /initrd.img are the kernel package's links to the current kernel."""
    return (
        "# virtio-lab: boot at once; GRUB speaks on the serial port and the screen\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "set timeout_style=hidden\n"
        "set timeout=0\n"
        'menuentry "Debian GNU/Linux" {\n'
        f"\tlinux /vmlinuz {cmdline}\n"
        "\tinitrd /initrd.img\n"
        "}\n"
    )
