"""#cloud-config documents: the lab's own keys checked and merged into virtio-lab's, and YAML
written by PyYAML's safe dumper (never by formatting values into text).

A lab may add cloud-config keys to a VM's seed. What it gives is checked here: only text,
numbers, booleans, dates, lists and mappings with text keys, the form YAML can write and
cloud-init read back. It may add keys and extend the lists virtio-lab sets (``runcmd``,
``write_files``, ...), but not replace a key virtio-lab owns, nor write a file virtio-lab
writes: either is a ``SpecError`` naming the key.
"""

from __future__ import annotations

import datetime
import posixpath
from collections.abc import Collection, Mapping
from typing import Any

import yaml

from provision.core.yamlfile import yaml_value
from provision.errors import SpecError, shown

CLOUD_CONFIG = "#cloud-config\n"  # the first line that makes user-data a cloud-config
_SCALARS = (str, bool, int, float, type(None), datetime.date)  # datetime is a date


def plain(value: Any, path: str) -> Any:
    """``value`` as plain YAML data (tuples become lists), or a SpecError at the first part
    that YAML cannot write or cloud-init cannot read as cloud-config."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SpecError(path, "holds a character that is not valid text (a lone "
                            "surrogate); write it as text") from None
        return value
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SpecError(path, f"has the key {shown(key)}, {yaml_value(key)}; "
                                "cloud-config keys are text: quote it")
            out[key] = plain(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise SpecError(path, f"is {yaml_value(value)}, which a #cloud-config cannot hold; use "
                    "text, a number, a boolean, a list or a mapping")


def merge_extras(
    base: Mapping[str, Any], extras: Mapping[str, Any] | None, path: str,
    owned_keys: Mapping[str, str], owned_files: Collection[str],
) -> dict[str, Any]:
    """``base`` (virtio-lab's keys) with ``extras`` (the lab's, at key path ``path``) merged:
    a new key is added, a list extends virtio-lab's list of that key. A key in ``owned_keys``
    (key -> why virtio-lab owns it), a key virtio-lab sets to something other than a list, and
    a ``write_files`` entry whose path is in ``owned_files`` are SpecErrors."""
    merged = dict(base)
    if extras is None:
        return merged
    if not isinstance(extras, Mapping):
        raise SpecError(path, f"is {yaml_value(extras)}; write a mapping of #cloud-config "
                        "keys, such as {packages: [iperf3]}")
    for key, value in plain(extras, path).items():
        where = f"{path}.{key}"
        if key in owned_keys:
            raise SpecError(where, f"{owned_keys[key]}; remove this key")
        if key == "write_files":
            _check_files(value, where, owned_files)
        if key not in merged:
            merged[key] = value
        elif not isinstance(merged[key], list):
            raise SpecError(where, "virtio-lab sets this key itself; remove it")
        elif not isinstance(value, list):
            raise SpecError(where, f"is {yaml_value(value)}; virtio-lab sets {key} too, so "
                            "write a list, which virtio-lab's list is extended with")
        else:
            merged[key] = [*merged[key], *value]
    return merged


def _check_files(entries: Any, where: str, owned_files: Collection[str]) -> None:
    if not isinstance(entries, list):
        return  # merge_extras refuses it as a non-list
    owned = {posixpath.normpath(p) for p in owned_files}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise SpecError(f"{where}[{i}]", "write an entry with a path and its content, "
                            "such as {path: /etc/motd, content: lab}")
        if posixpath.normpath(entry["path"]) in owned:
            raise SpecError(f"{where}[{i}].path", f"{shown(entry['path'])} is a file virtio-lab "
                            "writes for the data path; write another file")


class _Dumper(yaml.SafeDumper):
    """The safe dumper, writing text of several lines as a literal block (``|``), so that a
    file's content in ``write_files`` reads as the file; the emitter still quotes any text a
    block cannot carry exactly."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(data: Mapping[str, Any], header: str = "") -> bytes:
    """``data`` (plain, as ``plain`` returns) as a UTF-8 YAML document after ``header``, keys
    sorted so that the same data gives the same bytes."""
    text = yaml.dump(dict(data), Dumper=_Dumper, sort_keys=True, default_flow_style=False,
                     allow_unicode=True, width=4096)
    return (header + text).encode("utf-8")
