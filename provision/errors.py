"""Typed exceptions of the library; only the CLI turns them into messages and exit codes.

A ``SpecError`` echoes what the user wrote (a name, a key, a file name), so it makes its own
message safe to print: one line, control characters escaped, bounded length.
"""

from __future__ import annotations

import reprlib

MAX_LINE = 400  # characters of a whole SpecError message
MAX_PATH = 160  # characters of its key path or file name
ECHO = 40  # characters of an echoed value that a message quotes


class ProvisionError(Exception):
    """Base class: an expected failure with a one-line, user-facing message."""

    exit_code = 1
    # Whether the message may span lines (one per object), each made printable by its raiser;
    # otherwise the CLI escapes every newline, whatever the arguments held.
    multiline = False


class SpecError(ProvisionError):
    """The lab file or the command's arguments are wrong (exit 3).

    The message names the key path, e.g. ``lab.vms[1].nics[0].queues``, or the file.
    Both parts are made printable: see ``one_line``.
    """

    exit_code = 3

    def __init__(self, path: str, message: str) -> None:
        self.path = one_line(str(path), MAX_PATH)
        self.message = one_line(str(message), MAX_LINE - len(self.path) - 2)
        super().__init__(f"{self.path}: {self.message}" if self.path else self.message)


class HostError(ProvisionError):
    """The host cannot do what was asked, or a daemon is unreachable (exit 4).

    The message says which daemon or device, and how to fix it.
    """

    exit_code = 4


class OperationError(ProvisionError):
    """An operation on the host failed (exit 1)."""

    exit_code = 1
    multiline = True


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    code = ord(char)
    if char in _ESCAPES:
        return _ESCAPES[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def one_line(text: str, limit: int) -> str:
    """``text`` made safe for a terminal line: every character that is not printable (newlines,
    escape sequences, other C0/C1 controls, bidi overrides, lone surrogates) written as a
    Python escape, and at most ``limit`` characters, a longer text cut and saying its length."""
    total = len(text)
    if total > limit:
        text = text[:limit]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if total > limit or len(text) > limit:
        suffix = f"... ({total} characters)"
        text = text[: max(limit - len(suffix), 0)] + suffix
    return text


_REPR = reprlib.Repr()  # keyword arguments need Python 3.12
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 2, 3, 4, 4, 4
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = ECHO


def shown(value: object) -> str:
    """A value from the input as a message quotes it: ``repr`` style (strings in quotes),
    escaped, and of a long value only the first ``ECHO`` characters and its length."""
    if isinstance(value, str):
        if len(value) <= ECHO:
            return one_line(repr(value), 3 * ECHO)
        return one_line(repr(value[:ECHO]), 3 * ECHO) + f"... ({len(value)} characters)"
    if isinstance(value, int) and value.bit_length() > 128:  # repr may refuse 4300+ digits
        return f"a {value.bit_length()}-bit number"
    return one_line(_REPR.repr(value), 3 * ECHO)
