"""What spec messages say: what YAML made of a value and what to write instead, on one
printable line of bounded length whatever the input echoes."""

from __future__ import annotations

import pytest
import yaml

from provision.core.spec import parse_lab
from provision.errors import ECHO, MAX_LINE, SpecError, shown

from .helpers import lab_data, mutated

# -- messages are one printable line of bounded length ------------------------------------


@pytest.mark.parametrize("name", ["vm\nx: evil", "vm\x1b[2J\x1b[31m", "vm\u202eevil", "\udc80",
                                  "v" * (2 << 20), "a b " * 100_000])
def test_spec_error_escapes_and_bounds_what_it_echoes(name: str) -> None:
    error = SpecError(f"lab.vms[0].{name}", f"{name!r} is not a valid name; rename it")
    message = str(error)
    assert message.isprintable() and len(message) <= MAX_LINE, message[:100]
    assert message.startswith("lab.vms[0].") and message == f"{error.path}: {error.message}"
    message.encode("utf-8")  # printable on a UTF-8 terminal: no lone surrogate left


def test_shown_quotes_a_value_briefly() -> None:
    assert shown("vm1") == "'vm1'"
    assert shown("x" * 2_000_000) == repr("x" * ECHO) + "... (2000000 characters)"
    assert shown("a\nb\x1b") == r"'a\nb\x1b'"
    assert len(shown(list(range(100_000)))) < 3 * ECHO
    assert shown(1 << 20_000) == "a 20001-bit number"


# -- types: what YAML made of a value is not silently coerced, and the message says what to write

BOOLEAN = "is the boolean true (YAML reads an unquoted yes, no, on, off, true or false so)"
MAC_AS_INT = yaml.safe_load("mac: 52:54:00:12:34:56")["mac"]  # YAML 1.1: base 60


@pytest.mark.parametrize(
    ("path", "value", "key_path", "words"),
    [
        (["vms", 0, "vcpus"], True, "lab.vms[0].vcpus",
         f"{BOOLEAN}; write a whole number such as 2"),
        (["vms", 0, "nics", 0, "vlan"], True, "lab.vms[0].nics[0].vlan", BOOLEAN),
        (["vms", 0, "nics", 0, "queues"], False, "lab.vms[0].nics[0].queues",
         "is the boolean false"),
        (["vms", 0, "vcpus"], 2.0, "lab.vms[0].vcpus",
         "is the number 2.0; write a whole number such as 2"),
        (["vms", 0, "memory_mib"], "256", "lab.vms[0].memory_mib",
         "is the text '256'; write a whole number such as 256"),
        (["vms", 1, "nics", 0, "trunks", 0], True, "lab.vms[1].nics[0].trunks[0]",
         "write a VLAN number such as 30, or a mapping such as {vlan: 30"),
        (["vms", 0, "name"], 123, "lab.vms[0].name",
         'is the number 123; write it in quotes: name: "123"'),
        (["bridges", 0, "name"], True, "lab.bridges[0].name",
         f'{BOOLEAN}; write text, in quotes if YAML would read it otherwise: name: "br0"'),
        (["vms", 0, "nics", 0, "bridge"], b"br-ut", "lab.vms[0].nics[0].bridge",
         "is binary data; write text such as br0"),
        (["vms", 0, "host"], 7, "lab.vms[0].host", 'write it in quotes: host: "7"'),
        (["vms", 0, "nics", 0, "mac"], MAC_AS_INT, "lab.vms[0].nics[0].mac",
         f'is the number {MAC_AS_INT} (YAML 1.1 reads base 60); write it in quotes: '
         'mac: "52:54:00:12:34:56"'),
        (["vms", 1, "nics", 0, "trunks"], "30,31", "lab.vms[1].nics[0].trunks",
         "is the text '30,31'; write a list, one `- item` per line or [30, 31]"),
        (["vms", 0, "nics"], {"bridge": "br-ut"}, "lab.vms[0].nics",
         "is a mapping; write a list, one `- item` per line or [{bridge: br0}]"),
        (["vms", 0, "nics", 0], "br-ut", "lab.vms[0].nics[0]",
         "is the text 'br-ut'; write a mapping such as {bridge: br0, vlan: 100}"),
        (["vms", 0], "vm1", "lab.vms[0]", "write a mapping such as {name: vm1, vcpus: 2"),
        (["bridges"], [], "lab.bridges",
         "is empty; list at least one, e.g. bridges: [{name: br0}]"),
        (["vms", 0, "nics", 0, 1], "x", "lab.vms[0].nics[0]",
         "the key 1 is not text but the number 1; keys are names"),
        (["vms", 0, "nics", 0, "queues"], 0, "lab.vms[0].nics[0].queues",
         "is 0; input should be greater than or equal to 1"),
    ],
)
def test_wrong_types_say_what_to_write(path: list, value: object, key_path: str,
                                       words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_lab(mutated(path, value))
    message = str(info.value)
    assert message.startswith(f"{key_path}: ") and words in message, message


def test_a_missing_key_says_what_to_add() -> None:
    data = lab_data()
    del data["vms"][0]["name"]
    with pytest.raises(SpecError) as info:
        parse_lab(data)
    assert str(info.value) == "lab.vms[0].name: is missing; add it, e.g. name: vm1"


# -- what a message echoes is escaped and short ---------------------------------------------

HOSTILE = ["vm1\n\x1b[2Jlab.vms[0]: fine", "v" * (2 << 20), "\u202evm1", "x\udc80"]


@pytest.mark.parametrize("value", HOSTILE, ids=["newline-escape", "2MiB", "bidi", "surrogate"])
@pytest.mark.parametrize("path", [["name"], ["vms", 0, "name"], ["bridges", 0, "name"],
                                  ["vms", 0, "nics", 0, "bridge"],
                                  ["vms", 0, "nics", 0, "mac"], ["vms", 0, "nics", 0, "ip"],
                                  ["backend"]])
def test_echoed_values_are_one_bounded_line(path: list, value: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_lab(mutated(path, value))
    message = str(info.value)
    assert message.isprintable() and len(message) <= MAX_LINE, message[:200]
    assert "\\x1b" in message or "\x1b" not in value


@pytest.mark.parametrize("key", HOSTILE, ids=["newline-escape", "2MiB", "bidi", "surrogate"])
def test_an_unknown_key_is_one_bounded_line(key: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_lab(mutated(["vms", 0, key], 1))
    message = str(info.value)
    assert message.startswith("lab.vms[0]")
    assert "unknown key" in message or "not valid Unicode (a lone surrogate)" in message
    assert message.isprintable() and len(message) <= MAX_LINE, message[:200]
