"""The private QEMU tree (provision/host/qemu_private.py): the index parsing and checks, the
wrapper run for real in front of a stand-in QEMU, and unpacking real (tiny) .debs built here
with dpkg-deb.  Nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provision.errors import OperationError
from provision.host import qemu_private as qp

INDEX = """\
Package: qemu-system-x86
Version: 1:10.0.2+ds-2+deb13u1~bpo12+1
Depends: libaio1 (>= 0.3.93),
 seabios (>> 1.16.3-1~)
Filename: pool/main/q/qemu/qemu-system-x86_10.0.2+ds-2+deb13u1~bpo12+1_amd64.deb
Size: 10176912
SHA256: 4a6b1856c8b0d7df4ff8e70249e12c473ccf8d516aadb4ae14d3d938faed0c65

Package: qemu-system-x86
Version: 1:7.2+dfsg-7+deb12u18+b3
Filename: pool/main/q/qemu/qemu-system-x86_7.2+dfsg-7+deb12u18+b3_amd64.deb
Size: 1
SHA256: 0000000000000000000000000000000000000000000000000000000000000000

Package: seabios
Version: 1.16.3-2~bpo12+1
Filename: pool/main/s/seabios/seabios_1.16.3-2~bpo12+1_all.deb
Size: 164452
"""


@pytest.mark.parametrize(("version", "upstream"), [
    ("1:10.0.2+ds-2+deb13u1~bpo12+1", "10.0.2"),
    ("1:7.2+dfsg-7+deb12u18+b3", "7.2"),
    ("10.1.0-1", "10.1.0"),
    ("9.2.0~rc1-1", "9.2.0"),
])  # fmt: skip
def test_upstream_version_names_the_tree(version: str, upstream: str) -> None:
    assert qp.upstream_version(version) == upstream
    assert qp.tree_path(version, Path("/opt/x")) == Path(f"/opt/x/qemu-{upstream}")


@pytest.mark.parametrize("version", ["", "1:", "../1-1", "1:a.b-1", "1:10.0/../x-1"])
def test_a_version_that_is_no_release_number_names_no_directory(version: str) -> None:
    with pytest.raises(ValueError, match="not a QEMU release number"):
        qp.upstream_version(version)


def test_the_pins_are_one_qemu_release_with_every_module_package() -> None:
    qemu = {v for p, v in qp.PACKAGES.items() if p.startswith("qemu-")}
    assert qemu == {qp.QEMU_VERSION}
    # a module QEMU asks for and the tree lacks would be loaded from the host's 7.2: abort
    assert {"qemu-system-gui", "qemu-system-modules-opengl", "qemu-system-modules-spice",
            "qemu-block-extra", "seabios"} <= set(qp.PACKAGES)  # fmt: skip
    assert qp.tree_path() == qp.ROOT / "qemu-10.0.2"


def test_the_private_apt_state_lives_under_its_directory() -> None:
    conf = qp.apt_config(Path("/s"))
    assert conf.splitlines() == [
        'Dir::State "/s/state";', 'Dir::Cache "/s/cache";',
        'Dir::Etc::SourceList "/s/sources.list";', 'Dir::Etc::SourceParts "/s/sources.list.d";',
    ]  # fmt: skip
    sources = qp.parse_stanzas(qp.apt_sources())
    assert sources == [{"Types": "deb", "URIs": "http://deb.debian.org/debian",
                        "Suites": "bookworm-backports", "Components": "main",
                        "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg"}]  # fmt: skip


def test_stanzas_join_continuation_lines() -> None:
    stanzas = qp.parse_stanzas(INDEX)
    assert [s["Version"] for s in stanzas] == ["1:10.0.2+ds-2+deb13u1~bpo12+1",
                                               "1:7.2+dfsg-7+deb12u18+b3", "1.16.3-2~bpo12+1"]
    assert stanzas[0]["Depends"] == "libaio1 (>= 0.3.93),\nseabios (>> 1.16.3-1~)"
    assert qp.parse_stanzas("\n\n") == []


@pytest.mark.parametrize("text", [" orphan continuation", "Package qemu"])
def test_malformed_stanzas_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        qp.parse_stanzas(text)


def test_the_index_entry_of_the_pinned_version() -> None:
    entry = qp.index_entry(qp.parse_stanzas(INDEX), "qemu-system-x86",
                           "1:10.0.2+ds-2+deb13u1~bpo12+1")  # fmt: skip
    assert entry == qp.DebEntry(
        "qemu-system-x86", "1:10.0.2+ds-2+deb13u1~bpo12+1",
        "pool/main/q/qemu/qemu-system-x86_10.0.2+ds-2+deb13u1~bpo12+1_amd64.deb", 10176912,
        "4a6b1856c8b0d7df4ff8e70249e12c473ccf8d516aadb4ae14d3d938faed0c65")  # fmt: skip


def test_a_version_the_index_lacks_names_those_it_has() -> None:
    with pytest.raises(ValueError, match=r"1:10.0.3-1 is not in the index \(it has: "
                                         r"1:10.0.2\+ds.*, 1:7.2\+dfsg"):  # fmt: skip
        qp.index_entry(qp.parse_stanzas(INDEX), "qemu-system-x86", "1:10.0.3-1")
    with pytest.raises(ValueError, match=r"it has: none"):
        qp.index_entry(qp.parse_stanzas(INDEX), "qemu-utils", "1")


def test_an_entry_without_checksum_is_refused() -> None:
    with pytest.raises(ValueError, match="no SHA256 or Size"):
        qp.index_entry(qp.parse_stanzas(INDEX), "seabios", "1.16.3-2~bpo12+1")


def test_a_download_must_match_the_index(tmp_path: Path) -> None:
    deb = tmp_path / "a.deb"
    deb.write_bytes(b"x" * 100)
    good = qp.DebEntry("a", "1", "pool/a.deb", 100, hashlib.sha256(b"x" * 100).hexdigest())
    qp.check_deb(deb, good)
    with pytest.raises(ValueError, match="101 bytes"):
        deb.write_bytes(b"x" * 101)
        qp.check_deb(deb, good)
    with pytest.raises(ValueError, match=r"SHA256 .* the index says"):
        deb.write_bytes(b"y" * 100)
        qp.check_deb(deb, good)


def test_qemu_version_line() -> None:
    text = ("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n"
            "Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n")
    assert qp.parse_qemu_version(text) == "10.0.2"
    assert qp.parse_qemu_version("qemu-system-x86_64: not found") == ""


# ---- the wrapper and the tree, for real -----------------------------------------------

FAKE_QEMU = """#!/bin/sh
echo "QEMU_MODULE_DIR=$QEMU_MODULE_DIR"
for a in "$@"; do echo "$a"; done
"""


def make_deb(tmp: Path, package: str, files: dict[str, str], mode: int = 0o644) -> Path:
    """A real .deb of `package` holding `files` (path -> content)."""
    src = tmp / f"src-{package}"
    (src / "DEBIAN").mkdir(parents=True)
    (src / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\n"
        f"Description: test\n")  # fmt: skip
    for name, content in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)
    deb = tmp / f"{package}_1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(src), str(deb)],
                   check=True, capture_output=True)  # fmt: skip
    return deb


def entry_of(deb: Path, package: str) -> qp.DebEntry:
    return qp.DebEntry(package, "1", f"pool/{deb.name}", deb.stat().st_size,
                       hashlib.sha256(deb.read_bytes()).hexdigest())  # fmt: skip


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="no dpkg-deb")


@pytest.fixture
def debs(tmp_path: Path) -> tuple[list[Path], list[qp.DebEntry]]:
    work = tmp_path / "debs"
    work.mkdir()
    emulator = make_deb(work, "qemu-system-x86", {"usr/bin/qemu-system-x86_64": FAKE_QEMU},
                        mode=0o755)  # fmt: skip
    data = make_deb(work, "qemu-system-data", {"usr/share/qemu/kvmvapic.bin": "rom",
                                               "usr/lib/x86_64-linux-gnu/qemu/ui-gtk.so": ""})
    paths = [emulator, data]
    return paths, [entry_of(emulator, "qemu-system-x86"), entry_of(data, "qemu-system-data")]


@needs_dpkg
def test_unpack_makes_a_whole_tree_with_wrapper_and_manifest(
        tmp_path: Path, debs: tuple[list[Path], list[qp.DebEntry]]) -> None:
    paths, entries = debs
    tree = tmp_path / "opt dir" / "qemu-10.0.2"  # a space: the wrapper must quote the tree
    assert not qp.installed(tree, entries)
    qp.unpack(paths, entries, tree)
    assert qp.installed(tree, entries)
    assert (tree / "usr/share/qemu/kvmvapic.bin").read_text() == "rom"
    assert json.loads((tree / qp.MANIFEST).read_text())["packages"][0]["package"] == \
        "qemu-system-data"
    assert tree.stat().st_mode & 0o777 == 0o755
    assert os.stat(tree / qp.WRAPPER).st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tree.parent.iterdir()) == ["qemu-10.0.2"]  # no leftovers

    proc = subprocess.run([str(tree / qp.WRAPPER), "-name", "guest=a b", "-accel", "tcg",
                           "-append", "x -accel tcg"], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert proc.stdout.splitlines() == [
        f"QEMU_MODULE_DIR={tree}/usr/lib/x86_64-linux-gnu/qemu",
        "-L", f"{tree}/usr/share/qemu", "-L", f"{tree}/usr/share/seabios",
        "-name", "guest=a b", "-accel", "tcg,thread=single", "-append", "x -accel tcg",
    ]  # fmt: skip
    assert f"{qp.MARK}: -accel tcg,thread=single" in proc.stderr


@needs_dpkg
def test_an_explicit_thread_mode_and_other_accels_are_kept(
        tmp_path: Path, debs: tuple[list[Path], list[qp.DebEntry]]) -> None:
    tree = tmp_path / "qemu-10.0.2"
    qp.unpack(*debs, tree)
    for accel in ("tcg,thread=multi", "kvm"):
        out = subprocess.run([str(tree / qp.WRAPPER), "-accel", accel], capture_output=True,
                             text=True, check=True).stdout.splitlines()  # fmt: skip
        assert out[-2:] == ["-accel", accel]


@needs_dpkg
def test_unpacking_again_replaces_the_tree_whole(
        tmp_path: Path, debs: tuple[list[Path], list[qp.DebEntry]]) -> None:
    paths, entries = debs
    tree = tmp_path / "qemu-10.0.2"
    qp.unpack(paths, entries, tree)
    (tree / "stale").write_text("from the old tree")
    assert not qp.installed(tree, entries[:1])  # another package set: not this tree
    qp.unpack(paths[:1], entries[:1], tree)
    assert qp.installed(tree, entries[:1])
    assert not (tree / "stale").exists() and not (tree / "usr/share/qemu").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@needs_dpkg
def test_a_bad_deb_leaves_no_tree(tmp_path: Path,
                                  debs: tuple[list[Path], list[qp.DebEntry]]) -> None:
    paths, entries = debs
    broken = tmp_path / "broken.deb"
    broken.write_bytes(b"not a deb")
    tree = tmp_path / "qemu-10.0.2"
    with pytest.raises(OperationError, match="dpkg-deb"):
        qp.unpack([*paths, broken], entries, tree)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.deb", "debs"]


def test_a_wrapper_edited_by_hand_is_not_current(tmp_path: Path) -> None:
    tree = tmp_path / "qemu-10.0.2"
    (tree / "bin").mkdir(parents=True)
    (tree / qp.MANIFEST).write_text(json.dumps(qp.manifest([])))
    (tree / qp.WRAPPER).write_text(qp.wrapper_script(tree))
    assert not qp.installed(tree, [])  # not executable
    (tree / qp.WRAPPER).chmod(0o755)
    assert qp.installed(tree, [])
    (tree / qp.WRAPPER).write_text(qp.wrapper_script(tree) + "# edited\n")
    assert not qp.installed(tree, [])


def test_the_file_apt_get_download_writes() -> None:
    """Names as `apt-get download` wrote them here (the pool's name has no epoch)."""
    entry = qp.index_entry(qp.parse_stanzas(INDEX), "qemu-system-x86",
                           "1:10.0.2+ds-2+deb13u1~bpo12+1")  # fmt: skip
    assert qp.download_name(entry) == \
        "qemu-system-x86_1%3a10.0.2+ds-2+deb13u1~bpo12+1_amd64.deb"
    seabios = qp.DebEntry("seabios", "1.16.3-2~bpo12+1",
                          "pool/main/s/seabios/seabios_1.16.3-2~bpo12+1_all.deb", 1, "0" * 64)
    assert qp.download_name(seabios) == "seabios_1.16.3-2~bpo12+1_all.deb"


@needs_dpkg
def test_the_offline_check_compares_the_manifest_with_the_pins(
        tmp_path: Path, debs: tuple[list[Path], list[qp.DebEntry]]) -> None:
    tree = tmp_path / "qemu-10.0.2"
    assert not qp.matches_pins(tree, {"qemu-system-x86": "1", "qemu-system-data": "1"})
    qp.unpack(*debs, tree)
    assert qp.matches_pins(tree, {"qemu-system-x86": "1", "qemu-system-data": "1"})
    assert not qp.matches_pins(tree, {"qemu-system-x86": "2", "qemu-system-data": "1"})
    assert not qp.matches_pins(tree, {"qemu-system-x86": "1"})
    (tree / qp.MANIFEST).write_text("{}")
    assert not qp.matches_pins(tree, {"qemu-system-x86": "1", "qemu-system-data": "1"})
