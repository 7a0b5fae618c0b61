"""Reading a lab file: careless and hostile files are one-line SpecErrors, and fast."""

from __future__ import annotations

import codecs
import os
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provision.core.inventory import inventory_hosts, load_inventory
from provision.core.yamlfile import MAX_BYTES, MAX_DEPTH, MAX_NODES, load_document
from provision.errors import MAX_LINE, SpecError

GOOD = """\
all:
  hosts:
    localhost: {ansible_connection: local}
  vars:
    lab:
      name: ut
      bridges: [{name: br-ut}]
      vms:
        - {name: vm1, vcpus: 2, nics: [{bridge: br-ut, ip: 10.9.0.1/24}]}
"""


def write(tmp_path: Path, content: str | bytes, name: str = "lab.yml") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def refused(path: str | Path) -> str:
    with pytest.raises(SpecError) as info:
        load_inventory(path)
    message = str(info.value)
    assert "\n" not in message and len(message) <= MAX_LINE, message
    assert info.value.exit_code == 3
    return message


# -- the file ------------------------------------------------------------------------------


def test_a_good_file_loads(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, GOOD))
    lab, hosts = inv.lab, inv.hosts
    assert lab.name == "ut" and hosts == ("localhost",)


def test_only_a_regular_file_is_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)  # no writer: opening it for reading would block forever
    assert "is a FIFO (named pipe); a lab file must be a regular file" in refused(fifo)
    assert "is a directory; a lab file must be a regular file" in refused(tmp_path)
    assert "is a character device" in refused("/dev/zero")
    sock_path = tmp_path / "s.yml"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert "is a socket" in refused(sock_path)
    link = tmp_path / "link.yml"
    link.symlink_to(write(tmp_path, GOOD))
    assert load_inventory(link).lab.name == "ut"  # a link to a regular file is fine


def test_missing_and_unnamable_files(tmp_path: Path) -> None:
    assert "cannot read the lab file: No such file" in refused(tmp_path / "nope.yml")
    assert "not a usable file name" in refused("lab\0.yml")


def test_the_size_is_capped(tmp_path: Path) -> None:
    big = write(tmp_path, "#" * (MAX_BYTES + 1))
    assert f"is {MAX_BYTES + 1} bytes, over the {MAX_BYTES} bytes (1 MiB)" in refused(big)
    comment = "#" * (MAX_BYTES - len(GOOD) - 1) + "\n"
    assert load_inventory(write(tmp_path, GOOD + comment)).lab.name == "ut"


def test_the_file_name_is_escaped_in_messages(tmp_path: Path) -> None:
    name = "evil\x1b[2J\n.yml"
    message = refused(tmp_path / name)
    assert "evil\\x1b[2J\\n.yml: cannot read" in message


# -- the text ------------------------------------------------------------------------------


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    assert load_inventory(write(tmp_path, codecs.BOM_UTF8 + GOOD.encode())).lab.name == "ut"
    latin1 = write(tmp_path, codecs.BOM_UTF8 + b"a: \xe9\n")
    assert "byte 0xe9 at line 1, column 7 (byte offset 6)" in refused(latin1)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (GOOD.encode("utf-16"), "is UTF-16 or UTF-32 (it starts with a byte order mark); save it"),
        (GOOD.encode("utf-16-be"), "NUL byte at line 1, column 1 (byte offset 0): it looks like "
                                   "UTF-16 or a binary file; save it as UTF-8"),
        (GOOD.encode("utf-16-le"), "NUL byte at line 1, column 2 (byte offset 1)"),
        (bytes(range(256)) * 4, "NUL byte at line 1, column 1"),
        (GOOD.replace("vm1", "vm\u00e9").encode("latin-1"),
         "byte 0xe9 at line 9, column 20 (byte offset 150) is not UTF-8 (Latin-1 or another "
         "encoding?); save it as UTF-8"),
        (GOOD.replace("ut\n", "ut\x1b[31m\n").encode(),
         "has the character U+001B (a control character YAML does not allow) at line 6, "
         "column 15; remove it"),
    ],
    ids=["utf16-bom", "utf16be", "utf16le", "binary", "latin1", "escape"],
)
def test_text_must_be_utf8(tmp_path: Path, content: bytes, words: str) -> None:
    assert words in refused(write(tmp_path, content))


# -- the YAML ------------------------------------------------------------------------------


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    unclosed = write(tmp_path, "all: [unclosed\n")
    assert "not valid YAML at line 2, column 1: while parsing a flow sequence, did not find" \
        in refused(unclosed)
    two = write(tmp_path, GOOD + "---\n" + GOOD)
    assert ("is not valid YAML at line 10, column 1: expected a single document in the "
            "stream, but found another document") in refused(two)
    code = write(tmp_path, "all: !!python/object/apply:os.system [true]\n")
    assert "could not determine a constructor" in refused(code)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (GOOD.replace("      name: ut\n", "      name: ut\n      name: uu\n"),
         "line 7, column 7: the key 'name' appears twice in this mapping (first on line 6)"),
        (GOOD + "all: {}\n", "line 10, column 1: the key 'all' appears twice"),
        (GOOD.replace("vcpus: 2,", "vcpus: 2, vcpus: 4,"), "line 9, column 33: the key 'vcpus'"),
        ("base: &b {x: 1, x: 2}\n" + GOOD.replace("  vars:\n", "  vars:\n    <<: *b\n"),
         "line 1, column 17: the key 'x' appears twice"),
        ("a: {1: x, 0x1: y}\n", "the key 1 appears twice"),
        ("a: {yes: x, true: y}\n", "the key True appears twice"),
    ],
    ids=["lab", "top", "flow", "merged-anchor", "int", "bool"],
)
def test_a_key_written_twice_is_refused(tmp_path: Path, text: str, words: str) -> None:
    assert words in refused(write(tmp_path, text))


def test_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = """\
all:
  hosts:
    hv1: &hv {ansible_connection: local, ansible_python_interpreter: /usr/bin/python3}
    hv2: *hv
    hv3: {<<: *hv, ansible_connection: ssh}
  vars:
    lab:
      name: ut
      bridges: [{name: br-ut}]
      vms:
        - &vm {name: vm1, vcpus: 2, host: hv1, nics: [{bridge: br-ut}]}
        - {<<: *vm, name: vm2, host: hv3}
"""
    inv = load_inventory(write(tmp_path, text))
    lab, hosts = inv.lab, inv.hosts
    assert hosts == ("hv1", "hv2", "hv3")
    assert [(vm.name, vm.vcpus, vm.host) for vm in lab.vms] == [("vm1", 2, "hv1"),
                                                                ("vm2", 2, "hv3")]


def _bomb(levels: int, width: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nall: {{vars: {{lab: *a{levels - 1}}}}}\n"


@pytest.mark.parametrize(("levels", "width"), [(10, 10), (40, 2), (3, 30_000)])
def test_an_alias_bomb_is_refused_at_once(tmp_path: Path, levels: int, width: int) -> None:
    path = write(tmp_path, _bomb(levels, width))
    start = time.monotonic()
    message = refused(path)
    assert f"has more than {MAX_NODES} keys and values (aliases expanded)" in message
    assert time.monotonic() - start < 5, "bounded: no expansion before the count"


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    assert "the alias *a is inside its own anchor &a" in refused(write(tmp_path, "x: &a [*a]\n"))
    assert "inside its own anchor" in refused(write(tmp_path, "x: &a {b: {c: *a}}\n"))
    assert "undefined alias" in refused(write(tmp_path, "x: *nope\n"))


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, "{a: " * 100_000 + "}" * 100_000,
     "".join(f"{' ' * i}a:\n" for i in range(200)) + " " * 200 + "b",
     "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
     "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 40 + "*a" + "]" * 40 + "\n"],
    ids=["flow-lists", "flow-maps", "block-maps", "just-over", "through-an-alias"],
)
def test_deep_nesting_is_refused(tmp_path: Path, text: str) -> None:
    assert "nest" in refused(write(tmp_path, text))


def test_nesting_up_to_the_bound_is_fine(tmp_path: Path) -> None:
    depth = MAX_DEPTH - 1  # and a scalar inside
    assert load_document(write(tmp_path, "[" * depth + "1" + "]" * depth)) is not None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: 2001-13-01\n", "'2001-13-01' is not a valid timestamp; quote it if it is text"),
        ("a: !!bool maybe\n", "'maybe' is not a valid bool"),
        ("a: !!int ten\n", "'ten' is not a valid int"),
        ("a: !!timestamp soon\n", "'soon' is not a valid timestamp"),
        ("a: " + "1" * 5000 + "\n", "a number of 5000 digits"),
        ("a: " + ":".join(["1"] * 200_000) + "\n", "a number of 399999 digits"),
        ("a: 0b" + "1" * 100 + "\n", "a number of 102 digits"),
        ("a: !!float\n", "'' is not a valid float"),
    ],
)
def test_values_pyyaml_cannot_convert_are_spec_errors(tmp_path: Path, text: str,
                                                       words: str) -> None:
    assert words in refused(write(tmp_path, text))


# -- the inventory around the lab ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "lab.yml: is empty; a lab file is an Ansible inventory: all: {hosts:"),
        ("# only a comment\n", "lab.yml: is empty"),
        ("- all\n", "lab.yml: holds a list; a lab file is a mapping: all:"),
        ("just text\n", "lab.yml: holds the text 'just text'; a lab file is a mapping"),
        ("all: 5\n", "all: is the number 5; it must be a mapping with hosts, vars or children"),
        ("all: {vars: []}\n", "all.vars: is a list; it must be a mapping of variables"),
        ("all: {vars: {lab: null}}\n", "all.vars.lab: is empty; write the lab there"),
        ("all: {vars: {}}\n", "all.vars.lab: is missing from"),
        ("other: {}\n", "all.vars.lab: is missing from"),
        ("all: {vars: {lab: [1]}}\n", "lab: is a list; it must be a mapping with name, bridges"),
        ("all: {hosts: {1: null}}\n", "all.hosts: the host name 1 is not text but the "
                                      "number 1; write it in quotes"),
        ("all: {hosts: {yes: null}}\n", "all.hosts: the host name True is not text but the "
                                        "boolean true (YAML reads"),
        ("all: {hosts: {~: null}}\n", "all.hosts: a host name is empty"),
        ("all: {hosts: [hv1, hv2]}\n", "all.hosts: is a list; it must be a mapping of host names"),
        ("all: {hosts: {hv1: 5}}\n", "all.hosts.hv1: is the number 5; it must be empty or a "
                                     "mapping"),
        ("all: {children: [a]}\n", "all.children: is a list; it must be a mapping of groups"),
        ("all: {children: {g: {hosts: {2: x}}}}\n", "all.children.g.hosts: the host name 2"),
        ("all: {children: {3: {}}}\n", "all.children: the group name 3 is not text but the "
                                       "number 3"),
    ],
)
def test_the_inventory_shape_is_checked(tmp_path: Path, text: str, words: str) -> None:
    assert words in refused(write(tmp_path, text))


def test_inventory_hosts_tolerates_empty_groups() -> None:
    assert inventory_hosts(None) == () and inventory_hosts({"hosts": None}) == ()
    assert inventory_hosts({"hosts": {"a": None}, "children": {"g": None}}) == ("a",)


# -- anything at all -----------------------------------------------------------------------

YAMLISH = st.text(alphabet=st.sampled_from(list("all: hosts vars lab name vms -[]{},&*!<>|'\"#"
                                                "\n\t 0123456789abcxyz.:/%@`\\\x1b\x00é\u2028")),
                  max_size=300)


def _only_spec_errors(path: Path) -> None:
    try:
        load_inventory(path)
    except SpecError as exc:
        message = str(exc)
        assert message.isprintable() and len(message) <= MAX_LINE, message


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=400), YAMLISH.map(str.encode),
                         YAMLISH.map(lambda t: GOOD[: len(GOOD) // 2] + t).map(str.encode)))
def test_any_file_is_a_lab_or_a_spec_error(tmp_path: Path, content: bytes) -> None:
    _only_spec_errors(write(tmp_path, content))
