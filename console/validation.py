"""Checking request bodies and query parameters against the schemas the API publishes.

The same JSON Schema (the OpenAPI 3.0 subset below) documents a route in
``/openapi.json`` and checks its input, so the two cannot drift apart. Supported:
``type`` (one type; ``nullable``), ``enum``, ``minLength``/``maxLength``/``pattern``,
``minimum``/``maximum``, ``items``/``minItems``/``maxItems``/``uniqueItems``,
``properties``/``required``/``additionalProperties: false``, ``anyOf`` (the branch
whose ``enum`` fields match the value explains a failure), ``oneOf`` (exactly one
branch; branches of only ``required`` say "give 'a' or 'b'" / "give only one of").
A failure is a 422 whose message names the offending field (``body.members[2]``) and
what was expected.

Schemas should say all the service will check (patterns below), so a request the
published schema allows is never refused as bad input (schemathesis holds us to it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ApiError

Schema = Mapping[str, Any]

_NO_CONTROL = r"\x00-\x1f\x7f"
NAME_PATTERN = f"^[^{_NO_CONTROL}]*[^\\s{_NO_CONTROL}][^{_NO_CONTROL}]*$"
"""A name: no control characters, something besides spaces."""
TEXT_PATTERN = f"^[^{_NO_CONTROL}]*$"
"""Optional text (a title, a label): no control characters."""


def name_schema(limit: int = 128, *, extra_forbidden: str = "") -> dict[str, Any]:
    """A name of 1-``limit`` characters (``extra_forbidden`` more characters refused)."""
    bad = _NO_CONTROL + extra_forbidden
    return {"type": "string", "minLength": 1, "maxLength": limit,
            "pattern": f"^[^{bad}]*[^\\s{bad}][^{bad}]*$"}


def text_schema(limit: int = 128) -> dict[str, Any]:
    """Optional free text: up to ``limit`` characters, null or empty for none."""
    return {"type": "string", "maxLength": limit, "nullable": True, "pattern": TEXT_PATTERN}


def without_lone_surrogates(value: Any) -> Any:
    """JSON may escape lone UTF-16 surrogates (``"\\ud800"``); no database takes them."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, list):
        return [without_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {without_lone_surrogates(k): without_lone_surrogates(v) for k, v in value.items()}
    return value


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}
_ARTICLE = {"integer": "an", "object": "an", "array": "an"}


def _fail(where: str, message: str) -> ApiError:
    return ApiError(422, "invalid-input", f"{where}: {message}")


def validate(value: Any, schema: Schema, where: str = "body") -> None:
    """Raise a 422 ``ApiError`` unless ``value`` satisfies ``schema``."""
    if value is None:
        if schema.get("nullable"):
            return
        if "type" in schema or "enum" in schema:
            raise _fail(where, f"must not be null{_expected(schema)}")
        return
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, _TYPES[kind]) and not (
            kind in ("integer", "number") and isinstance(value, bool))
        if not ok:
            raise _fail(where, f"expected {_ARTICLE.get(kind, 'a')} {kind}, got {_name(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise _fail(where, f"{value!r} is not one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise _fail(where, "must not be empty" if schema["minLength"] == 1
                        else f"must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise _fail(where, f"must be at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise _fail(where, f"{value!r} does not match {schema['pattern']}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise _fail(where, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise _fail(where, f"must be at most {schema['maximum']}")
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise _fail(where, f"needs at least {schema['minItems']} item(s)")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise _fail(where, f"takes at most {schema['maxItems']} items")
        items = schema.get("items")
        for index, item in enumerate(value):
            if items is not None:
                validate(item, items, f"{where}[{index}]")
        if schema.get("uniqueItems"):
            seen: list[Any] = []
            for index, item in enumerate(value):
                if item in seen:
                    raise _fail(f"{where}[{index}]", f"{item!r} is listed twice")
                seen.append(item)
    elif isinstance(value, dict):
        properties: Mapping[str, Schema] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                raise _fail(where, f"{name!r} is required")
        for name, item in value.items():
            if name in properties:
                validate(item, properties[name], f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                known = ", ".join(properties) or "none"
                raise _fail(where, f"unknown field {name!r} (fields: {known})")
    if "oneOf" in schema:
        branches = schema["oneOf"]
        errors: list[ApiError] = []
        for branch in branches:
            try:
                validate(value, branch, where)
            except ApiError as exc:
                errors.append(exc)
        if len(errors) == len(branches):
            if isinstance(value, dict) and all(set(b) == {"required"} for b in branches):
                names = " or ".join(repr(n) for b in branches for n in b["required"])
                raise _fail(where, f"give {names}")
            raise next((exc for branch, exc in zip(branches, errors, strict=True)
                        if _selects(branch, value)), errors[0])
        if len(errors) < len(branches) - 1:
            if isinstance(value, dict) and all(set(b) == {"required"} for b in branches):
                names = " or ".join(repr(n) for b in branches for n in b["required"])
                raise _fail(where, f"give only one of {names}")
            raise _fail(where, "matches more than one of the allowed forms")
    if "anyOf" in schema:
        failures: list[tuple[Schema, ApiError]] = []
        for branch in schema["anyOf"]:
            try:
                validate(value, branch, where)
            except ApiError as exc:
                failures.append((branch, exc))
            else:
                break
        else:
            raise next((exc for branch, exc in failures if _selects(branch, value)),
                       failures[0][1])


def _selects(branch: Schema, value: Any) -> bool:
    """True if ``value``'s fields that ``branch`` pins with an ``enum`` all match it."""
    if not isinstance(value, dict):
        return False
    pinned = [(name, p["enum"]) for name, p in branch.get("properties", {}).items()
              if "enum" in p and name in value]
    return bool(pinned) and all(value[name] in allowed for name, allowed in pinned)


def _expected(schema: Schema) -> str:
    kind = schema.get("type")
    return f" (expected {_ARTICLE.get(kind, 'a')} {kind})" if kind else ""


def _name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def convert_query(text: str, schema: Schema, where: str) -> Any:
    """A query parameter's text as its schema's type (then validated)."""
    kind = schema.get("type", "string")
    value: Any = text
    if kind == "integer":
        if not re.fullmatch(r"-?[0-9]{1,18}", text):
            raise _fail(where, f"expected an integer, got {text!r}")
        value = int(text)
    elif kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise _fail(where, f"expected a number, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise _fail(where, f"expected a finite number, got {text!r}")
    elif kind == "boolean":
        if text not in ("true", "false"):
            raise _fail(where, f"expected true or false, got {text!r}")
        value = text == "true"
    validate(value, schema, where)
    return value
