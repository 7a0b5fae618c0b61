"""Hypothesis strategies for what the CLI reads besides a lab file: command lines (with
@placeholders for paths, see conftest.LabPaths) and the image cache."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

from .strategies import junk, near_types, text_values

# -- command lines -------------------------------------------------------------------------

# Placeholders that the tests resolve to real paths: see conftest.LabPaths.
LAB_PATHS = ["@valid", "@invalid", "@missing", "@dir", "@devnull", "@empty", "@nonutf8",
             "@unicode-name", "@bytes-name", "@long-name", "@relative", ""]
OUT_PATHS = ["@out", "@outdir", "@outmissing", "-", "", "/dev/null"]
TIMEOUTS = ["nan", "NaN", "inf", "-inf", "1e309", "-1", "0", "0.0", "-0", "1e-9", "5", "300",
            " 5 ", "5s", "", "abc", "1_0", "0x10", "1e3", "2**64", "99999999999999999999"]
# "h\udcffst" is what Python makes of a host name that is not UTF-8 on the real command line.
HOSTS = ["localhost", "hv1", "nosuch", "", " localhost", "--json", "-", "\x1b[31m", "ü",
         "h\udcffst"]
LAB_SUBCOMMANDS = [["render"], ["plan"], ["up"], ["down"], ["status"], ["verify"], ["graph"]]
OTHER_SUBCOMMANDS = [
    ["host", "check"], ["host", "prepare", "--check"], ["host"], ["image"], ["host", "bogus"],
    ["bogus"], [], ["-h"], ["render", "--help"], ["--json"], ["schema"], ["graph"],
]
FLAGS = [
    ["--json"], ["--json=-"], ["--json", "-"], ["--json", "@out"], ["--json=@outmissing"],
    ["--json", "@outdir"], ["--junit", "@out"], ["--junit", "@outmissing"], ["--junit=@outdir"],
    ["--perf"], ["--force"], ["--check"], ["--no-install"], ["--host"], ["--timeout"],
    ["--bogus"], ["-x"], ["--js"], ["--ho", "localhost"], ["--"], ["-"], ["--="], ["--json="],
]
# The flags a subcommand has, drawn more often than the others.
OWN_FLAGS = {
    "plan": [["--host"], ["--json"]],
    "up": [["--host"], ["--timeout"], ["--json"]],
    "verify": [["--json=-"], ["--json", "@out"], ["--json", "@outmissing"],
               ["--junit", "@outmissing"], ["--junit", "@outdir"], ["--json", ""], ["--perf"]],
}


def _flag_values(draw: st.DrawFn, flag: list[str]) -> list[str]:
    if flag not in (["--host"], ["--timeout"]):
        return flag
    values = st.sampled_from(HOSTS) | text_values if flag == ["--host"] else st.sampled_from(
        TIMEOUTS)
    value = draw(values)
    return [f"{flag[0]}={value}"] if draw(st.booleans()) else [flag[0], value]


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A `provision` argv with placeholders (@...) for paths: mostly well-formed (a command,
    a lab, its own flags with hostile values), sometimes shuffled junk."""
    argv = list(draw(st.sampled_from(LAB_SUBCOMMANDS) | st.sampled_from(OTHER_SUBCOMMANDS)))
    own = OWN_FLAGS.get(argv[0] if argv else "", [["--json"]])
    well_formed = draw(st.integers(0, 9)) < 7
    if draw(st.integers(0, 9)) > 0:
        argv.append(draw(st.sampled_from(LAB_PATHS)))
    for _ in range(draw(st.integers(0, 3))):
        pool = st.sampled_from(own) if well_formed else st.sampled_from(own) | st.sampled_from(
            FLAGS)
        flag = _flag_values(draw, list(draw(pool)))
        at = len(argv) if well_formed else draw(st.integers(0, len(argv)))
        argv[at:at] = flag
    if not well_formed and draw(st.booleans()):  # a stray token anywhere
        stray = draw(text_values.filter(lambda t: len(t) < 64))
        argv.insert(draw(st.integers(0, len(argv))), stray)
    return [a.replace("\x00", "") for a in argv]  # a real argv cannot carry NUL


# -- the image cache (what `provision image build` left, or a damaged copy of it) ----------

MANIFEST = {
    "builder_version": 1, "cmdline": "console=ttyS0 quiet", "content_hash": "0" * 64,
    "initrd": "initrd", "input_key": "0" * 64, "kernel": "kernel",
    "kernel_version": "6.1.0-fuzz-amd64", "name": "tiny", "packages": {},
}
CACHE_LAYOUTS = ["manifest", "manifest", "manifest", "dangling-link", "manifest-is-dir",
                 "no-kernel", "empty-dir", "link-to-file"]


@st.composite
def image_caches(draw: st.DrawFn) -> tuple[str, bytes]:
    """A cache layout and the bytes of its image.json: mostly a manifest with keys dropped,
    retyped or replaced, sometimes not JSON at all."""
    manifest: Any = copy.deepcopy(MANIFEST)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(MANIFEST)))
        op = draw(st.sampled_from(["drop", "junk", "retype"]))
        if op == "drop":
            manifest.pop(key, None)
        elif op == "junk":
            manifest[key] = draw(st.one_of(junk.filter(lambda v: v == v), st.sampled_from(
                ["", "/", "..", "kernel/", "/dev/null", "initrd\n", "\x00"])))
        else:
            manifest[key] = draw(st.sampled_from(near_types(manifest.get(key, ""))))
    text = draw(st.one_of(
        st.just(manifest).map(lambda m: json.dumps(m, default=repr).encode()),
        st.just(manifest).map(lambda m: json.dumps(m, default=repr).encode()[:-3]),
        st.sampled_from([b"", b"null", b"[]", b"{}", b'"tiny"', b"\xff\xfe", b"[" * 100_000]),
    ))
    return draw(st.sampled_from(CACHE_LAYOUTS)), text
