"""Reading a lab file: its bytes, its text, and the one YAML document they hold (``inventory``
makes an Ansible inventory of it).

A lab file may be careless or hostile, so every step is bounded and every failure is a
``SpecError`` naming the file (and the line) and what to do:

- only a regular file of at most ``MAX_BYTES`` is read; a FIFO, a device, a directory or a
  socket is refused before it is opened (and it is opened non-blocking, so a FIFO swapped in
  meanwhile cannot block);
- the text must be UTF-8 (a UTF-8 byte order mark is dropped), without control characters;
- the YAML is parsed by libyaml (with PyYAML's pure-Python scanner and parser, loading takes
  four times as long) and composed here, not by libyaml's composer, which has no
  bounds: the depth is bounded, and so are the nodes, aliases expanded: each alias counts the
  whole value it stands for, so an alias bomb stops at ``MAX_NODES`` long before its
  billions, while an anchored vars mapping shared by a few hosts costs what it would cost
  written out. An alias inside its own anchor (a cycle) is refused;
- a key written twice in one mapping is refused (YAML would keep the last one silently).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node
from yaml.resolver import Resolver

from provision.errors import SpecError, shown

try:  # libyaml: PyYAML's C scanner and parser
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


MAX_BYTES = 1 << 20  # a lab file is a few kilobytes
MAX_DEPTH = 64  # an inventory with a lab nests about ten levels
MAX_NODES = 50_000  # keys and values, aliases expanded: a 1000-VM lab has 15000
MAX_NUMBER = 64  # characters of a number: PyYAML converts 1:2:3:... in quadratic time

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)",
          stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}
# Characters YAML 1.1 does not allow in a stream (c-printable's complement).
_NOT_YAML = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def load_document(path: str | Path) -> Any:
    """The YAML document of a lab file, as plain Python data (dict, list, str, int, ...)."""
    source = os.fspath(path)
    return parse_text(decode_text(read_bytes(source), source), source)


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a regular file of at most ``MAX_BYTES``; never blocks on a FIFO."""
    source = os.fspath(path)
    try:
        _check_file(os.stat(source), source)
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise SpecError(source, f"cannot read the lab file: {exc.strerror}") from None
    except ValueError:  # a NUL or an unencodable character in the name
        raise SpecError(source, "is not a usable file name") from None
    try:
        _check_file(os.fstat(fd), source)  # the name may point elsewhere since stat()
        data = read_capped(fd, MAX_BYTES)
    except OSError as exc:
        raise SpecError(source, f"cannot read the lab file: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:  # it grew while being read, or its size was not known (/proc)
        raise _too_big(source, len(data), "more than ")
    return data


def read_capped(fd: int, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of ``fd``: more than ``limit`` means the file is too big."""
    chunks, size = [], 0
    while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_small_text(path: str | os.PathLike[str], source: str, what: str, fix: str,
                    limit: int) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes that a user names (a
    record, a report); SpecError naming ``source`` as ``what`` and ending with ``fix`` when it
    cannot be read, is no regular file (never blocks on a FIFO or reads a device), is too big
    or is not UTF-8."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise SpecError(source, f"cannot read the {what}: {exc.strerror}; {fix}") from None
    except ValueError:  # a NUL in the name
        raise SpecError(source, "is not a usable file name") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError(source, f"is not a regular file; {fix}")
        data = read_capped(fd, limit)
    except OSError as exc:
        raise SpecError(source, f"cannot read the {what}: {exc.strerror}; {fix}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise SpecError(source, f"is over {limit} bytes, too big for a {what}; {fix}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(source, f"is not UTF-8 text (byte {exc.start}); {fix}") from None


def read_small_json(path: str | os.PathLike[str], source: str, what: str, fix: str,
                    limit: int) -> Any:
    """``read_small_text``, parsed as JSON; SpecError naming ``source`` when it is not JSON
    or nests too deep."""
    text = read_small_text(path, source, what, fix, limit)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(source, f"is not JSON (line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}); {fix}") from None
    except RecursionError:
        raise SpecError(source, f"is not a {what}: its JSON nests too deep; {fix}") from None


def _check_file(st: os.stat_result, source: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a file")
        raise SpecError(source, f"is {kind}; a lab file must be a regular file")
    if st.st_size > MAX_BYTES:
        raise _too_big(source, st.st_size)


def _too_big(source: str, size: int, more: str = "") -> SpecError:
    return SpecError(source, f"is {more}{size} bytes, over the {MAX_BYTES} bytes (1 MiB) a lab "
                     "file may have; is it the right file?")


def decode_text(data: bytes, source: str) -> str:
    """The text of a lab file: strict UTF-8, without the characters YAML refuses. Positions
    in messages count the file's bytes, a UTF-8 byte order mark (which is dropped) included."""
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SpecError(source, "is UTF-16 or UTF-32 (it starts with a byte order mark); "
                        "save it as UTF-8")
    nul = data.find(b"\0", start)
    if nul >= 0:
        raise SpecError(source, f"has a NUL byte at {_where(data, nul)}: it looks like UTF-16 "
                        "or a binary file; save it as UTF-8 text")
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = start + exc.start
        raise SpecError(source, f"byte 0x{data[at]:02x} at {_where(data, at)} is not UTF-8 "
                        "(Latin-1 or another encoding?); save it as UTF-8") from None
    bad = _NOT_YAML.search(text)
    if bad:
        line, column = _line_column(text, bad.start())
        raise SpecError(source, f"has the character U+{ord(bad.group()):04X} (a control "
                        f"character YAML does not allow) at line {line}, column {column}; "
                        "remove it")
    return text


def _where(data: bytes, offset: int) -> str:
    line, column = _line_column(data, offset)
    return f"line {line}, column {column} (byte offset {offset})"


def _line_column(data: bytes | str, offset: int) -> tuple[int, int]:
    newline = b"\n" if isinstance(data, bytes) else "\n"
    return data.count(newline, 0, offset) + 1, offset - data.rfind(newline, 0, offset)


def yaml_value(value: Any) -> str:
    """What YAML made of a value, as messages say it: "the number 5", "a list", "empty"."""
    if isinstance(value, bool):
        return (f"the boolean {str(value).lower()} (YAML reads an unquoted yes, no, on, off, "
                "true or false so)")
    if isinstance(value, int | float):
        return f"the number {shown(value)}"
    if isinstance(value, str):
        return f"the text {shown(value)}"
    kinds = {list: "a list", dict: "a mapping", bytes: "binary data", type(None): "empty"}
    return kinds.get(type(value), f"a {type(value).__name__}")  # a date, a datetime, a set


def parse_text(text: str, source: str) -> Any:
    """The single YAML document of ``text``, composed and constructed under the bounds."""
    loader = _Loader(text, source)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise SpecError(source, f"is not valid YAML{where}: {what}") from None
    except yaml.YAMLError as exc:
        raise SpecError(source, f"is not valid YAML: {exc}") from None
    finally:
        loader.dispose()


class _Located:
    """The file being read, for messages that point into it."""

    source = "lab file"

    def error(self, event_or_node: Any, message: str) -> SpecError:
        mark = event_or_node.start_mark
        return SpecError(self.source, f"line {mark.line + 1}, column {mark.column + 1}: {message}")


class _BoundedComposer(_Located, Composer):
    """PyYAML's composer, counting as it goes: nesting depth, and nodes with every alias
    expanded (an alias adds the size of the value it names)."""

    def __init__(self) -> None:
        Composer.__init__(self)
        self._depth = 0  # nodes from the root to the one being composed
        self._height = 0  # the deepest subtree among the current node's children so far
        self._nodes = 0
        self._shapes: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height) once composed

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            return self._compose_alias(parent, index, event)
        if self._depth >= MAX_DEPTH:
            raise self.error(event, f"the document nests deeper than {MAX_DEPTH} levels; "
                             "a lab file needs about ten")
        self._count(event, 1)
        self._depth += 1
        before, outer, self._height = self._nodes, self._height, 0
        node = super().compose_node(parent, index)
        height = self._height + 1  # levels from this node to its deepest leaf
        self._depth -= 1
        self._height = max(outer, height)
        if event.anchor is not None:
            self._shapes[event.anchor] = (self._nodes - before + 1, height)
        return node

    def _compose_alias(self, parent: Node | None, index: Any, event: Any) -> Node:
        shape = self._shapes.get(event.anchor)
        if shape is None and event.anchor in self.anchors:
            raise self.error(event, f"the alias *{event.anchor} is inside its own anchor "
                             f"&{event.anchor}; a lab file has no cycles")
        node = super().compose_node(parent, index)  # PyYAML refuses an undefined alias
        nodes, height = shape or (1, 1)  # (1, 1): never, PyYAML raised above
        if self._depth + height > MAX_DEPTH:
            raise self.error(event, f"the alias *{event.anchor} nests the document deeper "
                             f"than {MAX_DEPTH} levels")
        self._count(event, nodes)
        self._height = max(self._height, height)
        return node

    def _count(self, event: Any, nodes: int) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise self.error(event, f"the document has more than {MAX_NODES} keys and values "
                             "(aliases expanded); a lab file has a few thousand")


class _CheckedConstructor(_Located, SafeConstructor):
    """PyYAML's safe constructor that refuses a key written twice in a mapping and turns
    its conversion failures (2001-13-01, ``!!bool maybe``, ...) into a SpecError."""

    def __init__(self) -> None:
        SafeConstructor.__init__(self)
        self._checked: set[int] = set()

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (SpecError, yaml.YAMLError):
            raise
        except Exception:  # PyYAML's converters raise ValueError, KeyError, IndexError...
            what = node.tag.rpartition(":")[2] if node.tag.startswith("tag:yaml.org") else node.tag
            value = shown(node.value) if isinstance(node.value, str) else "this value"
            raise self.error(node, f"{value} is not a valid {what}; "
                             "quote it if it is text") from None

    def flatten_mapping(self, node: MappingNode) -> None:
        # Before PyYAML merges `<<: *x` into node.value, where a key may legitimately repeat.
        if id(node) not in self._checked:
            self._checked.add(id(node))
            self._refuse_duplicates(node)
        super().flatten_mapping(node)

    def _refuse_duplicates(self, node: MappingNode) -> None:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable: PyYAML would refuse it too
                raise self.error(key_node, "a key must be a plain value such as name, "
                                 "not a list or mapping") from None
            if first is not None:
                raise self.error(key_node, f"the key {shown(key)} appears twice in this mapping "
                                 f"(first on line {first}); keep one")
            seen[key] = key_node.start_mark.line + 1

    def construct_yaml_int(self, node: Node) -> int:
        if len(node.value) > MAX_NUMBER:
            raise self.error(node, f"a number of {len(node.value)} digits; "
                             "quote it if it is text")
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: Node) -> float:
        if len(node.value) > MAX_NUMBER:
            raise self.error(node, f"a number of {len(node.value)} digits; "
                             "quote it if it is text")
        return super().construct_yaml_float(node)


_CheckedConstructor.add_constructor("tag:yaml.org,2002:int", _CheckedConstructor.construct_yaml_int)
_CheckedConstructor.add_constructor("tag:yaml.org,2002:float",
                                    _CheckedConstructor.construct_yaml_float)


class _Loader(_BoundedComposer, _CheckedConstructor, Resolver, _Parser):
    """libyaml's parser, the bounded composer, the checked constructor (see the module doc).

    The parser comes last: libyaml's CParser also composes (in C, without bounds), and the
    composer's methods must be found first."""

    def __init__(self, text: str, source: str) -> None:
        _Parser.__init__(self, text)
        _BoundedComposer.__init__(self)
        _CheckedConstructor.__init__(self)
        Resolver.__init__(self)
        self.source = source
