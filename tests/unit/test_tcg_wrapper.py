"""The TCG wrapper (provision/host/tcg.py), run for real in front of a stand-in QEMU that
prints the arguments it got, one per line."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from provision.core import domxml
from provision.host.tcg import MARK, install_wrapper, installed_wrapper, wrapper_script

from .helpers import caps


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Path:
    qemu = tmp_path / "qemu bin"  # a space: the wrapper must quote the real path
    qemu.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    qemu.chmod(0o755)
    return qemu


def run(wrapper: Path, *args: str) -> tuple[list[str], str]:
    proc = subprocess.run([str(wrapper), *args], capture_output=True, text=True, check=True)
    return proc.stdout.splitlines(), proc.stderr


@pytest.mark.parametrize(("accel", "expected", "noted"), [
    ("tcg", "tcg,thread=single", True),
    ("tcg,tb-size=64", "tcg,tb-size=64,thread=single", True),
    ("tcg,thread=multi", "tcg,thread=multi", False),  # an explicit choice is kept
    ("kvm", "kvm", False),
])  # fmt: skip
def test_only_tcg_without_a_thread_mode_becomes_single_threaded(
        tmp_path: Path, fake_qemu: Path, accel: str, expected: str, noted: bool) -> None:
    wrapper = tmp_path / "libexec" / "qemu-tcg-single"
    assert install_wrapper(str(fake_qemu), wrapper)
    argv = ["-name", "guest=a b", "-accel", accel, "-append", "x -accel tcg", "-smp", "4"]
    got, stderr = run(wrapper, *argv)
    assert got == [expected if a == accel else a for a in argv]
    assert (f"{MARK}: -accel {expected}" in stderr) is noted


def test_install_is_idempotent_and_follows_the_emulator(tmp_path: Path, fake_qemu: Path
                                                        ) -> None:
    wrapper = tmp_path / "qemu-tcg-single"
    assert installed_wrapper(str(fake_qemu), wrapper) == ""
    assert install_wrapper(str(fake_qemu), wrapper) is True
    assert install_wrapper(str(fake_qemu), wrapper) is False
    assert installed_wrapper(str(fake_qemu), wrapper) == str(wrapper)
    assert wrapper.stat().st_mode & 0o777 == 0o755
    assert installed_wrapper("/usr/bin/other-qemu", wrapper) == ""  # stale for another QEMU
    assert install_wrapper("/usr/bin/other-qemu", wrapper) is True
    assert "real=/usr/bin/other-qemu" in wrapper.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_lab_domains_use_the_wrapper_only_under_tcg() -> None:
    wrapped = dataclasses.replace(caps(), tcg_wrapper="/w/qemu-tcg-single")
    assert (wrapped.domain_emulator, wrapped.accel) == ("/w/qemu-tcg-single",
                                                        "tcg single-threaded")
    assert (caps().domain_emulator, caps().accel) == ("/usr/bin/qemu-system-x86_64",
                                                      "tcg multi-threaded")
    kvm = dataclasses.replace(caps(kvm=True), tcg_wrapper="/w/qemu-tcg-single")
    assert (kvm.domain_emulator, kvm.accel) == ("/usr/bin/qemu-system-x86_64", "kvm")


def test_the_script_names_its_qemu() -> None:
    assert wrapper_script("/usr/bin/qemu-system-x86_64").startswith("#!/bin/bash\n")
    assert "real=/usr/bin/qemu-system-x86_64\n" in wrapper_script("/usr/bin/qemu-system-x86_64")


def test_a_domain_defined_before_the_wrapper_differs_by_its_emulator() -> None:
    """`up` compares the emulator, so a lab defined before `host prepare` installed the
    wrapper is restarted onto it (and back, should the wrapper go)."""
    golden = (Path(__file__).parent / "golden" / "userspace-ut-vm1.xml").read_text()
    wrapped = golden.replace("<emulator>/usr/bin/qemu-system-x86_64</emulator>",
                             "<emulator>/w/qemu-tcg-single</emulator>")
    assert wrapped != golden
    diff = domxml.diff_facts(domxml.domain_facts(golden), domxml.domain_facts(wrapped))
    assert diff == {"emulator": ("/usr/bin/qemu-system-x86_64", "/w/qemu-tcg-single")}
