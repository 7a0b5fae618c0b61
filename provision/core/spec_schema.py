"""What the lab file's JSON Schema says beyond what pydantic derives from the models' types.

Some rules of the lab are checked in code, by validators (a MAC's form, the ring sizes QEMU
takes, ``vlan`` and ``trunks`` exclusive); pydantic cannot see them, so the field or model
that has such a validator also states the rule for the schema, here. Schema only: validation
stays the validators', and their messages with it. ``core.schema`` builds the document.

A rule stated here may be looser than its validator (an editor then leaves the error to
``provision``), never stricter: a lab that ``provision`` accepts must not be marked wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Schema = dict[str, Any]

VLAN_ID: Schema = {"type": "integer", "minimum": 1, "maximum": 4094}


def value_schema(schema: Schema) -> Schema:
    """The schema of a field's value: the non-null branch of an optional field (``X | None``
    is ``anyOf: [X, null]``), else the field's schema itself."""
    branches = [b for b in schema.get("anyOf", ()) if b != {"type": "null"}]
    return branches[0] if len(branches) == 1 else schema


def also(**keywords: Any) -> Callable[[Schema], None]:
    """``json_schema_extra`` for a field: ``keywords`` added to the schema of its value (for
    ``enum``, on the non-null branch, so that an optional field may still be empty)."""

    def add(schema: Schema) -> None:
        value_schema(schema).update(keywords)

    return add


def not_both(a: str, b: str) -> Schema:
    """A rule for an object: ``a`` and ``b`` do not both have a value (an empty one is none,
    as the model's ``None``)."""
    return {"not": {"type": "object", "required": [a, b],
                    "properties": {a: {"not": {"type": "null"}}, b: {"not": {"type": "null"}}}}}


def one_of(*keys: str, kind: str = "string") -> Schema:
    """A rule for an object: exactly one of ``keys`` has a value, of JSON type ``kind``."""
    return {"oneOf": [{"type": "object", "required": [k], "properties": {k: {"type": kind}}}
                      for k in keys]}


def rules(*conditions: Schema) -> Callable[[Schema], None]:
    """``json_schema_extra`` for a model: cross-field ``conditions`` its validators check."""

    def add(schema: Schema) -> None:
        schema.setdefault("allOf", []).extend(conditions)

    return add
