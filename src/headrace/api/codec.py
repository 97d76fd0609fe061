"""Proto3 JSON in, proto3 JSON out, checked against the discovery schemas.

Requests are normalised so the service sees one canonical form: lowerCamelCase keys
(snake_case accepted), enum names (numbers accepted), int64 as strings (numbers accepted),
timestamps as RFC3339 UTC with microseconds. A field the schema does not declare is
rejected with INVALID_ARGUMENT naming it, as Google's front end does.
"""

from __future__ import annotations

import math
import re
from typing import Any

from headrace import wire
from headrace.api.discovery import Discovery, Method
from headrace.api.enums import is_enum_number, numbering
from headrace.errors import ApiError, invalid

# Standard query parameters every Google API accepts (plus GAPIC's `$alt`).
SYSTEM_PARAMS = {"$alt", "alt", "$.xgafv", "access_token", "callback", "fields", "key",
                 "oauth_token", "prettyPrint", "quotaUser", "uploadType", "upload_protocol"}

_INT64 = {"int64", "uint64"}
_DURATION = re.compile(r"^-?\d+(\.\d{1,9})?s$")
_MAX_DEPTH = 64


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _where(path: str) -> str:
    return f" at '{path}'" if path else ""


def _bad(path: str, value: Any, expected: str) -> ApiError:
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return invalid(f"Invalid value{_where(path)} ({expected}), {shown}"[:500])


class KeepEmpty(list):
    """A response list that stays in the body even when empty (e.g. JobMetrics.metrics)."""


class Codec:
    def __init__(self, discovery: Discovery):
        self.discovery = discovery

    # ---- bodies -------------------------------------------------------------

    def decode_body(self, value: Any, schema_name: str) -> dict:
        if not isinstance(value, dict):
            raise invalid(f"Invalid JSON payload received. Expected an object for {schema_name}, got {type(value).__name__}.")
        return self._value(value, {"$ref": schema_name}, "", 0)

    def _value(self, value: Any, schema: dict, path: str, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise invalid(f"Invalid JSON payload received. Nesting deeper than {_MAX_DEPTH} levels{_where(path)}.")
        if "$ref" in schema:
            schema = self.discovery.schema(schema["$ref"])
        kind = schema.get("type")
        if kind == "any" or kind is None and "properties" not in schema:
            return value
        if kind == "object":
            return self._object(value, schema, path, depth)
        if kind == "array":
            if not isinstance(value, list):
                raise _bad(path, value, "list")
            item = schema.get("items", {})
            return [self._value(v, item, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        return self._scalar(value, schema, path)

    def _object(self, value: Any, schema: dict, path: str, depth: int) -> dict:
        if not isinstance(value, dict):
            raise _bad(path, value, "object")
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            if item is None:
                continue  # proto3 JSON: null means "not set"
            if props is not None:
                name = key if key in props else _camel(key)
                if name in props:
                    out[name] = self._value(item, props[name], f"{path}.{name}" if path else name, depth + 1)
                    continue
            if extra is not None:
                out[key] = self._value(item, extra, f"{path}[{key!r}]", depth + 1)
                continue
            if props is None:
                out[key] = item  # a free-form object
                continue
            raise invalid(f'Invalid JSON payload received. Unknown name "{key}"{_where(path)}: Cannot find field.')
        return out

    def _scalar(self, value: Any, schema: dict, path: str) -> Any:
        kind, fmt = schema.get("type"), schema.get("format")
        if "enum" in schema:
            return self._enum(value, tuple(schema["enum"]), path)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            raise _bad(path, value, "bool")
        if kind == "integer" or fmt in _INT64:
            number = _integer(value)
            if number is None or (fmt in ("uint32", "uint64") and number < 0):
                raise _bad(path, value, fmt or "integer")
            limit = 2**63 if fmt in _INT64 else 2**31
            if not -limit <= number < limit * (2 if fmt in ("uint32", "uint64") else 1):
                raise _bad(path, value, f"{fmt} out of range")
            return str(number) if fmt in _INT64 else number
        if kind == "number":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
            if value in ("NaN", "Infinity", "-Infinity"):
                return value
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise _bad(path, value, "number")
        if not isinstance(value, str):
            raise _bad(path, value, "string")
        if fmt == "google-datetime":
            try:
                return wire.format_time(wire.parse_time(value))
            except ValueError:
                raise invalid(f"Invalid value{_where(path)} (timestamp), {value!r}: use RFC 3339, e.g. 2026-01-02T03:04:05Z") from None
        if fmt == "google-duration" and not _DURATION.match(value):
            raise invalid(f"Invalid value{_where(path)} (duration), {value!r}: use seconds with an 's' suffix, e.g. \"3.5s\"")
        return value

    def _enum(self, value: Any, names: tuple[str, ...], path: str) -> str:
        if isinstance(value, str) and value in names:
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        if is_enum_number(value) and value in numbering(names):
            return numbering(names)[value]
        raise invalid(f"Invalid value{_where(path)} ({'enum'}), {value!r}: expected one of {', '.join(names)}"[:1000])

    # ---- query and path parameters ------------------------------------------

    def decode_params(self, method: Method, path_params: dict[str, str], query: list[tuple[str, str]]) -> dict:
        out: dict[str, Any] = {}
        for name, raw in path_params.items():
            out[name] = self._param(raw, method.parameters.get(name, {"type": "string"}), name)
        for name, raw in query:
            if name in SYSTEM_PARAMS:
                continue
            spec = method.parameters.get(name)
            if spec is None or spec.get("location") != "query":
                raise invalid(
                    f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter. '
                    f"Field '{name}' could not be found in request message.")
            out[name] = self._param(raw, spec, name)
        return out

    def _param(self, raw: str, spec: dict, name: str) -> Any:
        if spec.get("type") == "boolean":
            if raw.lower() in ("true", "1"):
                return True
            if raw.lower() in ("false", "0"):
                return False
            raise _bad(name, raw, "bool")
        if spec.get("type") == "integer":
            return self._scalar(raw, spec, name)
        return self._scalar(raw, {k: v for k, v in spec.items() if k != "type"} | {"type": "string"}, name)

    # ---- responses ----------------------------------------------------------

    @staticmethod
    def clean(value: Any) -> Any:
        """Drop empty values the way proto3 JSON does (None, empty lists and maps), except a
        `KeepEmpty` list, which a handler uses where clients expect the key even when empty."""
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                keep = isinstance(v, KeepEmpty)
                v = Codec.clean(v)
                if v is None or not keep and (v == [] or v == {}):
                    continue
                out[k] = v
            return out
        if isinstance(value, list):
            return [Codec.clean(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return value


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,20}", value.strip()):
        return int(value)
    return None
