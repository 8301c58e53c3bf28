"""A small JSON Schema validator for the subset ``schema.json`` uses.

Why not the ``jsonschema`` package: it pulls in ``referencing``, ``attrs`` and
``rpds`` and costs ~100 ms to import, on a CLI whose start-up is benchmarked;
the spec schema needs a dozen keywords. Supported: ``type`` (one or a list),
``properties``, ``required``, ``additionalProperties`` (false or a schema),
``propertyNames``, ``minProperties``, ``items``, ``minItems``, ``enum``,
``minimum``, ``maximum``, ``exclusiveMinimum``, ``minLength``, ``pattern``,
``oneOf``, ``anyOf`` and local ``$ref`` (``#/$defs/NAME``). Anything else in
the schema is ignored (``description``, ``title``...).

:func:`validate` returns :class:`Problem` values (path + what was expected),
first the shallowest; the caller turns paths into ``file:line``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from shoal.numeric import is_finite

from .located import PathKey

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


@dataclass(frozen=True)
class Problem:
    """One violation: where (a path into the document) and what was expected."""

    path: PathKey
    message: str

    def dotted(self) -> str:
        return ".".join(str(p) for p in self.path) or "(top level)"


@cache
def app_schema() -> dict[str, Any]:
    """The application spec schema that ships with Shoal."""
    text = resources.files("shoal.app").joinpath("schema.json").read_text(encoding="utf-8")
    value: dict[str, Any] = json.loads(text)
    return value


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    if name in ("integer", "number") and isinstance(value, float) and not is_finite(value):
        return False  # JSON has no NaN or infinity: ``.nan`` is not a number here
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, float) and not is_finite(value):
        return f"{value} (not a finite number)"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return f"{value!r}"


class Validator:
    """Validates values against one root schema (for ``$ref`` resolution)."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"unsupported $ref {ref}")
            target: Any = self.root
            for part in ref[2:].split("/"):
                target = target[part]
            schema = target
        return schema

    def check(self, value: Any, schema: dict[str, Any], path: PathKey) -> list[Problem]:
        schema = self.resolve(schema)
        types = schema.get("type")
        if types is not None:
            names = [types] if isinstance(types, str) else list(types)
            if not any(_is_type(value, n) for n in names):
                wanted = " or ".join(("an " if n[0] in "aeiou" else "a ") + n for n in names)
                return [Problem(path, f"expected {wanted}, got {_describe(value)}")]
        if "enum" in schema and value not in schema["enum"]:
            choices = ", ".join(str(c) for c in schema["enum"])
            return [Problem(path, f"expected one of {choices}, got {_describe(value)}")]
        problems: list[Problem] = []
        if "oneOf" in schema or "anyOf" in schema:
            problems.extend(self._alternatives(value, schema, path))
            if problems:
                return problems
        if isinstance(value, dict):
            problems.extend(self._object(value, schema, path))
        elif isinstance(value, list):
            if len(value) < schema.get("minItems", 0):
                problems.append(Problem(path, f"expected at least {schema['minItems']} item(s)"))
            if "items" in schema:
                for i, item in enumerate(value):
                    problems.extend(self.check(item, schema["items"], (*path, i)))
        elif isinstance(value, str):
            if len(value) < schema.get("minLength", 0):
                problems.append(Problem(path, "expected a non-empty text"))
            pattern = schema.get("pattern")
            if pattern is not None and not re.search(pattern, value):
                problems.append(Problem(path, f"{value!r} does not match {pattern}"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                problems.append(Problem(path, f"expected at least {schema['minimum']}"))
            if "maximum" in schema and value > schema["maximum"]:
                problems.append(Problem(path, f"expected at most {schema['maximum']}"))
            if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
                problems.append(Problem(path, f"expected more than {schema['exclusiveMinimum']}"))
        return problems

    def _alternatives(self, value: Any, schema: dict[str, Any], path: PathKey) -> list[Problem]:
        one = "oneOf" in schema
        options = [self.resolve(s) for s in schema["oneOf" if one else "anyOf"]]
        passing = [not self.check(value, s, path) for s in options]
        if (one and sum(passing) == 1) or (not one and any(passing)):
            return []
        if all(set(s) == {"required"} for s in options):
            keys = [k for s in options for k in s["required"]]
            present = [k for k in keys if isinstance(value, dict) and k in value]
            if present:
                return [Problem(path, f"expected only one of {', '.join(keys)}, got {present}")]
            return [Problem(path, f"expected one of {', '.join(keys)}")]
        kinds = []
        for s in options:
            text = s.get("description") or (
                "one of " + ", ".join(map(str, s["enum"])) if "enum" in s else s.get("type", "?")
            )
            if "pattern" in s and "description" not in s:
                text = f"text like {s['pattern']}"
            kinds.append(str(text))
        return [Problem(path, f"expected {' or '.join(kinds)}, got {_describe(value)}")]

    def _object(
        self, value: dict[str, Any], schema: dict[str, Any], path: PathKey
    ) -> list[Problem]:
        problems: list[Problem] = []
        for key in schema.get("required", []):
            if key not in value:
                problems.append(Problem(path, f"missing required key {key!r}"))
        if len(value) < schema.get("minProperties", 0):
            problems.append(Problem(path, f"expected at least {schema['minProperties']} entry"))
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        names = schema.get("propertyNames")
        for key, item in value.items():
            if names is not None:
                problems.extend(
                    Problem((*path, key), f"bad name {key!r}: {p.message}")
                    for p in self.check(key, names, (*path, key))
                )
            if key in props:
                problems.extend(self.check(item, props[key], (*path, key)))
            elif extra is False:
                known = ", ".join(props)
                problems.append(Problem((*path, key), f"unknown key {key!r} (expected {known})"))
            elif isinstance(extra, dict):
                problems.extend(self.check(item, extra, (*path, key)))
        return problems


def validate(value: Any, schema: dict[str, Any] | None = None) -> list[Problem]:
    """Problems of ``value`` against ``schema`` (default: the app spec schema)."""
    root = schema if schema is not None else app_schema()
    problems = Validator(root).check(value, root, ())
    return sorted(problems, key=lambda p: len(p.path))
