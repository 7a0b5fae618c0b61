"""`provision.cli.main.main(argv)` in-process on generated lab files and command lines.

Only what cannot change the host runs (see oracle.safe_to_run): `render` and `plan` of
anything (plan reads the daemons), `status` and `verify` of fz labs (nothing of them is on the
host) or with the daemons out of reach, `host check` and `host prepare --check`, and
`up`/`down` only of files the loader rejects. `up` of a valid lab would boot VMs; it never runs
here, whatever the input.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from provision.cli.main import main

from . import cli_inputs
from . import strategies as s
from .conftest import LabPaths, budget, out_files
from .oracle import LAB_COMMANDS, check, parse, rejected, run_inprocess, safe_to_run

pytestmark = pytest.mark.integration

# libvirtd and ovsdb-server where nothing answers: what a host without daemons looks like.
NO_DAEMONS = {
    "VIRTIO_LAB_LIBVIRT_URI": "qemu:///system?socket=/nonexistent/virtio-lab-fuzz/libvirt-sock",
    "VIRTIO_LAB_OVSDB": "unix:/nonexistent/virtio-lab-fuzz/db.sock",
}


@pytest.fixture(scope="module", autouse=True)
def warm_up() -> None:
    """Pay once, outside the examples' deadline, what a process pays once: imports, and the
    KVM probe that `host check` runs (about 3 s where KVM does not work; cached after)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["host", "check"])


@pytest.fixture(scope="module")
def lab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-cli") / "lab.yml"


def json_flag(draw_json: bool) -> list[str]:
    return ["--json"] if draw_json else []


@settings(max_examples=budget(40))
@given(data=s.lab_files, as_json=st.booleans())
@example(data=s.SPECIAL_FILES["control-char-key"], as_json=False)
@example(data=s.SPECIAL_FILES["empty"], as_json=False)
def test_lab_files(lab_file: Path, data: bytes, as_json: bool) -> None:
    """render and plan of any file; up and down as well when the loader rejects it."""
    lab_file.write_bytes(data)
    spec_bad = rejected(lab_file)
    for command in LAB_COMMANDS if spec_bad else ("render", "plan"):
        argv = [command, str(lab_file), *json_flag(as_json and command != "verify")]
        o = run_inprocess(argv)
        check(o, parse(argv))
        if spec_bad:
            assert o.code == 3, f"the loader rejects the file, {command} does not\n{o}"
        else:
            assert o.code != 3, f"the loader accepts the file, {command} calls it bad input\n{o}"


@settings(max_examples=budget(30))
@given(lab=s.valid_labs(), as_json=st.booleans(), host=st.sampled_from([None, 0, "nosuch"]))
def test_valid_labs(lab_file: Path, lab: s.ValidLab, as_json: bool, host: object) -> None:
    """A valid fz lab renders (exit 0) and plans changes (exit 2: nothing of it exists); on a
    host that lacks what it asks for (vhost-net, the kernel datapath) both may be exit 4."""
    lab_file.write_bytes(s.dump(lab.doc))
    argv = ["render", str(lab_file), *json_flag(as_json)]
    o = run_inprocess(argv)
    check(o, parse(argv))
    assert o.code in ({0} if lab.capable else {0, 4}), str(o)
    if as_json and o.code == 0:
        rendered = json.loads(o.stdout)
        assert rendered["lab"] == lab.name, str(o)
        assert len(rendered["domains"]) == len(lab.lab.get("vms", [])), str(o)
    host_args = [] if host is None else ["--host", lab.hosts[0] if host == 0 else str(host)]
    argv = ["plan", str(lab_file), *host_args, *json_flag(as_json)]
    o = run_inprocess(argv)
    check(o, parse(argv))
    if host == "nosuch":
        assert o.code == 3 and "--host" in o.stderr, str(o)
    else:
        assert o.code in ({2} if lab.capable else {2, 4}), str(o)


@settings(max_examples=budget(5))
@given(lab=s.valid_labs(), as_json=st.booleans())
def test_status_and_verify_of_absent_labs(lab_paths: LabPaths, lab_file: Path,
                                          lab: s.ValidLab, as_json: bool) -> None:
    """status of a lab that is not here says so (exit 0); verify fails with exit 4 before
    writing any report; an output path nothing can be written to is bad input (exit 3)."""
    lab_file.write_bytes(s.dump(lab.doc))
    argv = ["status", str(lab_file), *json_flag(as_json)]
    o = run_inprocess(argv)
    check(o, parse(argv))
    assert o.code == 0, str(o)
    report = str(lab_paths.root / "out" / "report.json")
    for extra, code in ((["--json", "-"], 4), (["--json", report], 4),
                        (["--junit", lab_paths.resolve("@outmissing")], 3)):
        argv = ["verify", str(lab_file), *extra]
        o = run_inprocess(argv)
        check(o, parse(argv))
        assert o.code == code, f"expected exit {code}\n{o}"
        assert not out_files(lab_paths.root), f"a report of a lab that is not here\n{o}"


@settings(max_examples=budget(120))
@given(template=cli_inputs.command_lines())
@example(template=["verify", "@valid", "--json=-"])
@example(template=["verify", "@valid", "--junit", "@outmissing"])
def test_command_lines(lab_paths: LabPaths, template: list[str]) -> None:
    argv = [lab_paths.resolve(t) for t in template]
    args = parse(argv)
    assume(safe_to_run(args))  # not up/down of a valid lab, image build, host prepare
    try:
        o = run_inprocess(argv)
        check(o, args)
        if args is not None and args.command == "verify":
            outputs = [p for p in (args.json, args.junit) if p is not None and p != "-"]
            if any(p == "" or lab_paths.is_bad_output(p) for p in outputs):
                assert o.code == 3, f"an output path nothing can be written to: exit 3\n{o}"
        assert not out_files(lab_paths.root), f"a report of a lab that is not here\n{o}"
    finally:
        shutil.rmtree(lab_paths.root / "out")
        (lab_paths.root / "out").mkdir()


@settings(max_examples=budget(40))
@given(data=s.lab_files, command=st.sampled_from(LAB_COMMANDS))
@example(data=s.SPECIAL_FILES["empty"], command="status")
def test_without_daemons(lab_file: Path, data: bytes, command: str) -> None:
    """With libvirtd and ovsdb-server unreachable, a bad lab file is still exit 3 (the spec is
    checked before the host), and a good one is exit 4 naming the daemon."""
    lab_file.write_bytes(data)
    spec_bad = rejected(lab_file)
    if command in ("up", "down") and not spec_bad:
        return
    with pytest.MonkeyPatch.context() as mp:
        for key, value in NO_DAEMONS.items():
            mp.setenv(key, value)
        argv = [command, str(lab_file)]
        o = run_inprocess(argv)
    check(o, parse(argv))
    if spec_bad:
        assert o.code == 3, f"the loader rejects the file; {command} must say so first\n{o}"
    else:
        assert o.code == 4, f"no daemon answers: exit 4\n{o}"


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-cache")


def build_cache(root: Path, layout: str, manifest: bytes) -> Path:
    """An image cache in the layout `provision image build` makes (tiny -> tiny-<hash>/),
    or a damaged one."""
    shutil.rmtree(root, ignore_errors=True)
    build = root / "tiny-0000000000000000"
    build.mkdir(parents=True)
    link = root / "tiny"
    if layout == "dangling-link":
        link.symlink_to("tiny-gone")
        return root
    if layout == "link-to-file":
        (root / "file").write_bytes(manifest)
        link.symlink_to("file")
        return root
    link.symlink_to(build.name)
    if layout == "empty-dir":
        return root
    if layout == "manifest-is-dir":
        (build / "image.json").mkdir()
    else:
        (build / "image.json").write_bytes(manifest)
    (build / "initrd").write_bytes(b"initrd")
    if layout != "no-kernel":
        (build / "kernel").write_bytes(b"kernel")
    return root


@settings(max_examples=budget(30))
@given(cache=cli_inputs.image_caches(), command=st.sampled_from(["render", "plan"]))
@example(cache=("manifest", json.dumps(
    {k: v for k, v in cli_inputs.MANIFEST.items() if k != "cmdline"}).encode()), command="render")
def test_damaged_image_cache(lab_paths: LabPaths, cache_root: Path, cache: tuple[str, bytes],
                             command: str) -> None:
    """A lab command on a damaged image cache: exit 4 (rebuild the image), never a crash."""
    root = build_cache(cache_root / "images", *cache)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIRTIO_LAB_CACHE", str(root))
        argv = [command, str(lab_paths.valid)]
        o = run_inprocess(argv)
    check(o, parse(argv), allowed=(0, 2, 4))
