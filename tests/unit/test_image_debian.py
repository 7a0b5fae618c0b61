"""The debian image's pure parts: the input key, the mmdebstrap command line, dpkg's status,
the deb cache, the tree's clean-up and times, and the files written into the guest. (Its
cache entry: test_image_cache.py; the disk's bytes: test_image_disk.py. A whole build is
too slow for unit tests.)"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.cli.main import main
from provision.errors import HostError, SpecError
from provision.image import debian, guestconf, rootfs

# -- the input key ---------------------------------------------------------------------------
RELEASE = b"Origin: Debian\nSuite: oldstable\nCodename: bookworm\n" \
          b"Date: Sat, 11 Jul 2026 10:16:37 UTC\n"
INPUTS = debian.DebianInputs("bookworm", "http://deb.debian.org/debian", ("a", "b"), RELEASE,
                             {"mmdebstrap": "1.3.5-7", "e2fsprogs": "1.47.0-2"})


def changed(**changes: Any) -> debian.DebianInputs:
    fields = {**vars(INPUTS), **changes}
    return debian.DebianInputs(**fields)


def test_the_same_inputs_give_the_same_key() -> None:
    assert debian.input_key(INPUTS) == debian.input_key(changed())
    assert debian.input_key(INPUTS) == debian.input_key(changed(packages=("b", "a")))
    assert debian.input_key(INPUTS) == debian.input_key(
        changed(tools=dict(reversed(INPUTS.tools.items()))))


@pytest.mark.parametrize("change", [
    {"suite": "trixie"},
    {"mirror": "http://ftp.de.debian.org/debian"},
    {"packages": ("a", "b", "c")},
    {"release": RELEASE.replace(b"10:16:37", b"10:16:38")},  # a new mirror state
    {"tools": {"mmdebstrap": "1.4.0-1", "e2fsprogs": "1.47.0-2"}},
], ids=lambda c: next(iter(c)))
def test_each_input_changes_the_key(change: dict[str, Any]) -> None:
    assert debian.input_key(changed(**change)) != debian.input_key(INPUTS)


def test_the_release_date_is_the_epoch() -> None:
    assert INPUTS.epoch == 1783764997  # 2026-07-11 10:16:37 UTC
    with pytest.raises(HostError, match="no valid Date"):
        debian.release_epoch("Origin: Debian\n")
    with pytest.raises(HostError, match="no valid Date"):
        debian.release_epoch("Date: yesterday\n")


@pytest.mark.parametrize("mirror", ["ftp://deb.debian.org/debian", "deb.debian.org/debian",
                                    "http://deb debian.org/", "file:///srv/mirror"])
def test_a_mirror_must_be_http(mirror: str) -> None:
    with pytest.raises(SpecError, match=r"^--mirror: .* is not the http\(s\):// URL"):
        debian.check_mirror(mirror)
    assert debian.check_mirror("https://mirror.example/debian/") == "https://mirror.example/debian"


def test_the_kernel_boots_the_root_by_uuid_on_the_serial_console() -> None:
    assert debian.CMDLINE.startswith(f"root=UUID={debian.LAYOUT.fs_uuid} ro console=ttyS0 ")
    assert "lpj=" not in debian.CMDLINE  # host-specific: not in a reproducible image


# -- mmdebstrap and the tree -----------------------------------------------------------------
def test_mmdebstrap_gets_the_packages_the_overlay_and_keeps_debs(tmp_path: Path) -> None:
    overlay = tmp_path / "over lay"  # a space: the special hook is split like a shell
    argv = rootfs.mmdebstrap_argv("bookworm", "http://m/debian", ("cloud-init", "iperf3"),
                                  tmp_path / "root", overlay)
    assert argv[0] == "mmdebstrap" and argv[-3:] == ["bookworm", str(tmp_path / "root"),
                                                     "http://m/debian"]
    assert "--include=cloud-init,iperf3" in argv and "--mode=root" in argv
    hook = next(a for a in argv if a.startswith("--setup-hook="))
    assert shlex.split(hook.partition("=")[2]) == ["sync-in", str(overlay), "/"]
    skips = next(a for a in argv if a.startswith("--skip=")).partition("=")[2].split(",")
    assert {"essential/unlink", "cleanup/apt/cache", "cleanup/apt/lists"} <= set(skips)
    assert "--dpkgopt=path-include=/usr/share/doc/*/copyright" in argv


STATUS = """\
Package: cloud-init
Status: install ok installed
Version: 22.4.2-1+deb12u4
Description: initialization for cloud instances
 Cloud-init is the de facto standard.
 Version: not a field

Package: old-kernel
Status: deinstall ok config-files
Version: 1.0

Package: bsdutils
Status: install ok installed
Architecture: amd64
Version: 1:2.38.1-5+deb12u3
"""


def test_installed_packages_from_dpkg_status() -> None:
    assert rootfs.installed_packages(STATUS) == {
        "bsdutils": "1:2.38.1-5+deb12u3", "cloud-init": "22.4.2-1+deb12u4"}


def test_the_deb_cache_keeps_only_what_was_installed(tmp_path: Path) -> None:
    assert rootfs.deb_file_name("bsdutils", "1:2.38.1-5", "amd64") == \
        "bsdutils_1%3a2.38.1-5_amd64.deb"
    for name in ("bsdutils_1%3a2.38.1-5_amd64.deb", "bsdutils_1%3a2.38.1-4_amd64.deb",
                 "cloud-init_22.4.2-1_all.deb", "gone_1.0_amd64.deb"):
        (tmp_path / name).write_bytes(b"")
    rootfs.prune_debs(tmp_path, {"bsdutils": "1:2.38.1-5", "cloud-init": "22.4.2-1"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bsdutils_1%3a2.38.1-5_amd64.deb", "cloud-init_22.4.2-1_all.deb"]


def test_scrub_removes_keys_logs_and_backups(tmp_path: Path) -> None:
    rootfs.write_files(tmp_path, {
        "etc/ssh/ssh_host_ed25519_key": "k", "etc/ssh/sshd_config": "c", "etc/passwd-": "",
        "etc/passwd": "root", "var/log/apt/history.log": "", "var/lib/dpkg/status-old": "",
        "var/lib/apt/lists/x_InRelease": "", "var/cache/apt/archives/a_1_all.deb": "",
    })
    rootfs.scrub(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["etc/passwd", "etc/ssh/sshd_config"]


def test_settled_mtimes_keep_package_times_and_settle_the_build_s(tmp_path: Path) -> None:
    epoch, packaged = 1_700_000_000, 1_600_000_000
    rootfs.write_files(tmp_path, {"usr/lib/x.py": "", "etc/new": "", "etc/future": ""})
    os.utime(tmp_path / "usr/lib/x.py", (packaged, packaged))
    os.utime(tmp_path / "etc/future", (epoch + 5, epoch + 5))
    started = time.time() - 60  # etc/new was written by "the build"
    (tmp_path / "etc/link").symlink_to("new")
    rootfs.settle_mtimes(tmp_path, epoch, started)
    assert (tmp_path / "usr/lib/x.py").stat().st_mtime == packaged
    for path in ("etc/new", "etc/future", "usr/lib", "etc", "."):
        assert (tmp_path / path).stat().st_mtime == epoch, path
    assert (tmp_path / "etc/link").lstat().st_mtime == epoch
    assert (tmp_path / "usr/lib/x.py").stat().st_atime == epoch


# -- what goes into the guest ----------------------------------------------------------------
def test_cloud_init_uses_nocloud_and_netplan() -> None:
    cfg = yaml.safe_load(guestconf.CLOUD_CFG)
    assert cfg["datasource_list"] == ["NoCloud", "None"]
    assert cfg["system_info"]["network"]["renderers"] == ["netplan"]
    assert cfg["growpart"]["mode"] == "off" and cfg["locale"] == "C.UTF-8"


def test_guest_files_boot_by_uuid_with_no_menu_and_no_host_identity() -> None:
    files = guestconf.guest_files("u-u-i-d", "root=UUID=u-u-i-d ro console=ttyS0")
    assert "UUID=u-u-i-d\t/\text4" in files["etc/fstab"]
    grub = files["boot/grub/grub.cfg"]
    assert "set timeout=0" in grub and "linux /vmlinuz root=UUID=u-u-i-d ro console=ttyS0\n" \
        in grub and "initrd /initrd.img" in grub
    assert files["etc/machine-id"] == "" and files["etc/resolv.conf"] == ""
    dropin = files["etc/systemd/system/systemd-networkd-wait-online.service.d/virtio-lab.conf"]
    assert "--timeout=30" in dropin


def test_the_initramfs_lists_the_disk_drivers() -> None:
    files = guestconf.preinstall_files()
    assert files["etc/initramfs-tools/conf.d/virtio-lab.conf"].strip().endswith("MODULES=list")
    assert "virtio_blk" in files["usr/share/initramfs-tools/modules.d/virtio-lab"].split()


# -- the command line ------------------------------------------------------------------------
@pytest.mark.parametrize("argv, named", [
    (["image", "build", "debian", "--mirror", "ftp://deb.debian.org/debian"], "--mirror: "),
    (["image", "build", "--mirror", "http://deb.debian.org/debian"], "--mirror: only the debian"),
    (["image", "build", "bionic"], "invalid choice: 'bionic'"),
])
def test_bad_image_build_arguments_are_one_line_exit_3(
    capsys: pytest.CaptureFixture[str], argv: list[str], named: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIRTIO_LAB_CACHE", str(tmp_path / "cache"))
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and err[0].startswith("provision: error: ")
    assert not (tmp_path / "cache").exists()  # nothing built, nothing fetched


def test_a_build_tree_with_a_mount_inside_is_not_removed(tmp_path: Path) -> None:
    """A build killed inside mmdebstrap can leave /proc or /dev mounted in its tree."""
    inside = tmp_path / ".debian-build-x" / "root" / "proc"
    inside.mkdir(parents=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "none", str(inside)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and tmpfs mounts")
    try:
        (inside / "keep").write_text("host file")
        with pytest.raises(HostError, match=rf"{inside} is still mounted .*`umount -R "):
            rootfs.remove_tree(tmp_path / ".debian-build-x")
        assert (inside / "keep").read_text() == "host file"
    finally:
        subprocess.run(["umount", str(inside)], check=True)
    rootfs.remove_tree(tmp_path / ".debian-build-x")
    assert not (tmp_path / ".debian-build-x").exists()
