"""Strict checks of responses against the discovery document's schemas.

Every key must be declared, enums must be names, int64 values strings, timestamps RFC 3339.
"""

from __future__ import annotations

import re

from headrace.api.discovery import load

_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
_DURATION = re.compile(r"^-?\d+(\.\d+)?s$")


def check(value, schema_name: str) -> None:
    problems: list[str] = []
    _check(value, {"$ref": schema_name}, schema_name, problems)
    assert not problems, "\n".join(problems)


def _check(value, schema: dict, path: str, problems: list[str]) -> None:
    discovery = load()
    if "$ref" in schema:
        schema = discovery.schema(schema["$ref"])
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "any":
        return
    if kind == "object":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected object, got {value!r:.80}")
            return
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                _check(item, props[key], f"{path}.{key}", problems)
            elif extra is not None:
                _check(item, extra, f"{path}[{key}]", problems)
            elif props is not None:
                problems.append(f"{path}: undeclared field {key!r}")
        return
    if kind == "array":
        if not isinstance(value, list):
            problems.append(f"{path}: expected list, got {value!r:.80}")
            return
        for i, item in enumerate(value):
            _check(item, schema.get("items", {}), f"{path}[{i}]", problems)
        return
    if "enum" in schema:
        if value not in schema["enum"]:
            problems.append(f"{path}: {value!r} is not one of the enum's names")
        return
    if kind == "boolean" and not isinstance(value, bool):
        problems.append(f"{path}: expected bool, got {value!r:.80}")
    elif kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        problems.append(f"{path}: expected integer, got {value!r:.80}")
    elif kind == "number" and not isinstance(value, (int, float)) and value not in ("NaN", "Infinity", "-Infinity"):
        problems.append(f"{path}: expected number, got {value!r:.80}")
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: expected string, got {value!r:.80}")
        elif fmt in ("int64", "uint64") and not re.fullmatch(r"-?\d+", value):
            problems.append(f"{path}: expected an int64 string, got {value!r}")
        elif fmt == "google-datetime" and not _TIME.match(value):
            problems.append(f"{path}: expected an RFC 3339 UTC timestamp, got {value!r}")
        elif fmt == "google-duration" and not _DURATION.match(value):
            problems.append(f"{path}: expected a duration, got {value!r}")
