"""Declarative validation of the JSON documents shrinknet reads from files (model descriptions,
checkpoints), with `jsonschema <https://python-jsonschema.readthedocs.io>`_ (JSON Schema 2020-12).

Two readings of JSON Schema are stricter here than the standard's, since the documents feed code
that computes with their numbers:

- ``"integer"`` is a Python ``int`` and never a ``bool`` (the standard also accepts 8.0; JSON's ``true``
  is not a number at all), ``"number"`` an ``int`` or ``float``, never a ``bool``;
- the extra keyword ``"finite": true`` refuses NaN and infinities (Python's JSON reader accepts
  ``NaN`` and ``Infinity``); ``"finite": "+inf"`` lets +Infinity through (a softplus threshold).

A schema node's ``"description"`` is the message a refusal prints: the deepest node with one, on the
path to the first failing keyword, says what is wrong (``"stride must be a list of whole numbers >= 1"``).
Only the FIRST error is looked for, in the schema's key order: put ``maxItems`` before ``items`` and a
forged million-entry list is refused before any entry is looked at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import best_match

from ..errors import InputError


def _is_int(checker, v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(checker, v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(validator, value, instance, schema):
    if not value or not _is_number(None, instance) or math.isfinite(instance):
        return
    if value == "+inf" and instance == math.inf:
        return
    yield ValidationError(f"{instance!r} is not a finite number")


_TYPES = Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _is_int, "number": _is_number})
Validator = validators.extend(Draft202012Validator, {"finite": _finite}, type_checker=_TYPES)

_ADVANCE = {"properties": 2, "patternProperties": 2, "prefixItems": 2, "items": 1, "additionalProperties": 1}
_SKIP = {"allOf": 2, "anyOf": 2, "oneOf": 2, "then": 1, "else": 1, "if": 1, "not": 1}


def validator(schema: dict) -> Validator:
    """A checked, reusable validator of ``schema``."""
    Validator.check_schema(schema)
    return Validator(schema)


def first_error(checker: Validator, doc) -> str | None:
    """One line saying what is wrong with ``doc``, or None when it is valid."""
    err = next(iter(checker.iter_errors(doc)), None)
    if err is None:
        return None
    while err.context:  # anyOf / oneOf: the branch that came closest
        err = best_match(err.context)
    return _message(checker.schema, doc, err)


def check(checker: Validator, doc, what: str, error=InputError) -> None:
    """Raise ``error`` ("<what>: <one line>") when ``doc`` does not follow the schema."""
    bad = first_error(checker, doc)
    if bad is not None:
        raise error(f"{what}: {bad}")


def _message(schema: dict, doc, err: ValidationError) -> str:
    """"at blocks[0].param.stride: stride must be ..., got [0, 0]": the deepest description on the
    schema path, with the part of ``doc`` it describes."""
    tokens, node, depth = list(err.absolute_schema_path), schema, 0
    said, said_depth = None, 0
    i = 0
    while i < len(tokens) and isinstance(node, Mapping):
        if isinstance(node.get("description"), str):
            said, said_depth = node["description"], depth
        key = tokens[i]
        if key in _ADVANCE and isinstance(node.get(key), (Mapping, list)):
            step = _ADVANCE[key]
            node = node[key] if step == 1 else node[key][tokens[i + 1]]
            depth, i = depth + 1, i + step
        elif key in _SKIP and isinstance(node.get(key), (Mapping, list)):
            step = _SKIP[key]
            node = node[key] if step == 1 else node[key][tokens[i + 1]]
            i += step
        else:
            break
    path = list(err.absolute_path)
    if said is None:
        return f"{_where(path)}{_short(err.message)}"
    value = doc
    for p in path[:said_depth]:
        value = value[p]
    return f"{_where(path[:said_depth])}{said}, got {_short(repr(value))}"


def _where(path: list) -> str:
    if not path:
        return ""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return f"at {_short(text)}: "


def _short(text: str, most: int = 80) -> str:
    text = " ".join(str(text).split())  # one line, whatever the document held
    return text if len(text) <= most else text[: most - 3] + "..."
