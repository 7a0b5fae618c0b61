"""Pydantic's validation errors as one-line SpecErrors: the key path below ``lab``, what YAML
made of the value, and what to write instead.

Pydantic says "Input should be a valid integer"; a lab file's author needs to hear that YAML
read ``vcpus: true`` as a boolean and that ``vcpus: 2`` is meant. Pure.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from provision.core.yamlfile import yaml_value
from provision.errors import SpecError, shown


class Strict(BaseModel):
    """The base of every lab file model: unknown keys refused, frozen, text stripped."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class PathError(ValueError):
    """A cross-field error that knows its own key path below the model that raises it."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


# What to write, by key path without list indices (vms.nics.queues).
EXAMPLES = {
    "name": "demo", "backend": "auto", "bridges": "[{name: br0}]", "vms": "[{name: vm1}]",
    "bridges.name": "br0", "bridges.datapath_type": "auto",
    "vms.name": "vm1", "vms.vcpus": "2", "vms.memory_mib": "256", "vms.image": "tiny",
    "vms.image.sha256": "<64 hex digits>",
    "vms.host": "localhost", "vms.nics": "[{bridge: br0}]",
    "vms.nics.bridge": "br0", "vms.nics.vlan": "100", "vms.nics.trunks": "[30, 31]",
    "vms.nics.queues": "4", "vms.nics.ip": "10.9.0.5/24", "vms.nics.mac": '"52:54:00:12:34:56"',
    "vms.nics.rx_queue_size": "1024", "vms.nics.tx_queue_size": "256",
    "vms.nics.trunks.vlan": "30", "vms.nics.trunks.ip": "10.0.30.1/24",
}
MODELS = {
    "Lab": "a mapping such as {name: demo, bridges: [{name: br0}], vms: [...]}",
    "BridgeSpec": "a mapping such as {name: br0}",
    "VmSpec": "a mapping such as {name: vm1, vcpus: 2, nics: [...]}",
    "NicSpec": "a mapping such as {bridge: br0, vlan: 100}",
    "TrunkVlan": "a VLAN number such as 30, or a mapping such as {vlan: 30, ip: 10.0.30.1/24}",
}


UNION_TAGS = ("image-name", "image-disk")


def spec_error(exc: ValidationError) -> SpecError:
    """The first error of a validation of ``lab``, as a SpecError."""
    err = exc.errors(include_url=False)[0]
    # A tagged union's branch (imagespec.ImageSpec: "name" or "disk") is no key of the file.
    err["loc"] = tuple(p for p in err["loc"] if p not in UNION_TAGS)
    loc = err["loc"][:-1] if err["type"] == "invalid_key" else err["loc"]
    path = "lab" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, PathError):
        sub = ctx_error.path
        return SpecError(f"{path}[{sub}]" if sub.isdigit() else f"{path}.{sub}", str(ctx_error))
    return SpecError(path, _message(err))


def _message(err: Any) -> str:
    kind, value = err["type"], err.get("input")
    key = ".".join(p for p in err["loc"] if isinstance(p, str))
    field = key.rpartition(".")[2]
    example = EXAMPLES.get(key)
    if kind == "extra_forbidden":
        return "unknown key; check the spelling against the README's lab file reference"
    if kind == "invalid_key":
        return f"the key {shown(value)} is not text but {yaml_value(value)}; keys are names"
    if kind == "missing":
        return f"is missing; add it, e.g. {field}: {example or '...'}"
    if kind == "too_short":
        return f"is empty; list at least one, e.g. {field}: {example or '[...]'}"
    if kind == "int_type":
        return f"is {yaml_value(value)}; write a whole number such as {example or 2}"
    if kind == "string_type":
        return _text_hint(field, value, example)
    if kind in ("tuple_type", "list_type"):
        return (f"is {yaml_value(value)}; write a list, one `- item` per line or "
                f"{example or '[a, b]'}")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        what = MODELS.get((err.get("ctx") or {}).get("class_name"), "a mapping of keys")
        return f"is {yaml_value(value)}; write {what}"
    if kind == "string_unicode":
        return "has text that is not valid Unicode (a lone surrogate); write it as UTF-8 text"
    if kind == "string_pattern_mismatch":
        return f"{shown(value)} is not a valid name ({err['ctx']['pattern']})"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{shown(value)} is not allowed; {msg.lower()}"
    if kind.startswith(("greater_than", "less_than")):
        return f"is {shown(value)}; {msg[0].lower()}{msg[1:]}"
    return msg


def _text_hint(field: str, value: Any, example: str | None) -> str:
    """YAML turned what the user wrote into a number or a boolean: say to quote it."""
    said = f"is {yaml_value(value)}"
    if field == "mac" and isinstance(value, int) and not isinstance(value, bool):
        mac = sexagesimal(value)
        if mac:  # 52:54:00:12:34:56 unquoted is a base-60 integer in YAML 1.1
            return f'{said} (YAML 1.1 reads base 60); write it in quotes: mac: "{mac}"'
    text = (example or "name").strip('"')
    if isinstance(value, bool):
        return f'{said}; write text, in quotes if YAML would read it otherwise: {field}: "{text}"'
    if isinstance(value, int | float):
        return f'{said}; write it in quotes: {field}: "{value}"'
    return f"{said}; write text such as {text}"


def sexagesimal(number: int) -> str | None:
    """The text YAML 1.1 read as a base-60 integer (52:54:00:12:34:56), if it had 6 parts."""
    parts = []
    while number > 0 and len(parts) < 7:
        number, digit = divmod(number, 60)
        parts.append(f"{digit:02d}")
    return ":".join(reversed(parts)) if len(parts) == 6 else None
