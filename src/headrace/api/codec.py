"""Proto3 JSON in, proto3 JSON out, checked against the discovery schemas.

Requests are normalised so the service sees one canonical form: lowerCamelCase keys
(snake_case accepted), enum names (numbers accepted), int64 as strings (numbers accepted),
timestamps as RFC3339 UTC with microseconds. A field the schema does not declare is
rejected with INVALID_ARGUMENT naming it, as Google's front end does. docs/wire.md lists
every rule and the choices made where Dataflow's own behaviour is unknown.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import datetime
from typing import Any

import orjson

from headrace import wire
from headrace.api.discovery import Discovery, Method
from headrace.api.enums import is_enum_number, numbering
from headrace.api.fast_check import FastCheck
from headrace.errors import ApiError, invalid

# Standard query parameters every Google API accepts (plus GAPIC's `$alt`); all but `alt`
# are accepted and ignored (see docs/wire.md).
SYSTEM_PARAMS = {"$alt", "alt", "$.xgafv", "access_token", "callback", "fields", "key",
                 "oauth_token", "prettyPrint", "quotaUser", "uploadType", "upload_protocol"}

# protobuf's JSON parser stops at 100 levels; so do we, for typed and free-form values alike.
MAX_DEPTH = 100
_INT64 = {"int64", "uint64"}
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_DURATION = re.compile(r"(-?[0-9]{1,12})(\.[0-9]{1,9})?s")
_MAX_DURATION = 315_576_000_000  # seconds in 10,000 years: protobuf Duration's range
_MAX_FLOAT32 = 3.4028234663852886e38
_EXACT_FLOAT = 2**53  # larger JSON numbers lost precision before we saw them
_CANONICAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_RANGES = {"int32": (-2**31, 2**31), "uint32": (0, 2**32), "int64": (-2**63, 2**63), "uint64": (0, 2**64)}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def field_error(field: str, message: str) -> ApiError:
    """INVALID_ARGUMENT with the google.rpc.BadRequest detail clients use to point at a field."""
    return ApiError("INVALID_ARGUMENT", message[:1000], details=[{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field, "description": message[:1000]}]}])


def _bad(path: str, value: Any, expected: str, hint: str = "") -> ApiError:
    shown = repr(value)[:80] if not isinstance(value, (dict, list)) else type(value).__name__
    where = f" at '{path}'" if path else ""
    return field_error(path, f"Invalid value{where} ({expected}), {shown}{hint}")


WHERE = "\x00where\x00"  # where an error message names the enclosing field; keys hold no NUL


class _Bad(Exception):
    """A value that does not fit its schema; the path is assembled only on the way out, so a
    request that is fine pays nothing for error reporting."""

    def __init__(self, expected: str, value: Any, hint: str = "", message: str = ""):
        self.expected, self.value, self.hint, self.message = expected, value, hint, message
        self.path: list[str] = []

    def at(self, segment: str) -> "_Bad":
        self.path.append(segment)
        return self

    def error(self, root: str = "") -> ApiError:
        path = root + "".join(reversed(self.path))
        path = path[1:] if path.startswith(".") else path
        if self.message:
            where = f" at '{path.rpartition('.')[0]}'" if "." in path else ""
            return field_error(path, self.message.replace(WHERE, where))
        return _bad(path, self.value, self.expected, self.hint)


def check_shape(value: Any, depth: int = 1) -> None:
    """Reject nesting deeper than MAX_DEPTH and NUL characters anywhere in a free-form value
    (`any`, stored as it came); typed values are checked as they are decoded."""
    stack = [(value, depth)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)) and depth > MAX_DEPTH:
            raise _Bad("", None, message=f"Invalid JSON payload received. Nesting deeper than {MAX_DEPTH} levels.")
        if isinstance(item, dict):
            for key, child in item.items():
                _no_nul(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _no_nul(item)


def _no_nul(text: str, name: str = "") -> None:
    # Valid in proto3, but PostgreSQL text cannot hold it: refused on every store alike.
    if "\x00" in text:
        raise invalid(f"Invalid {'value of ' + repr(name) if name else 'JSON payload received'}: "
                      "text must not contain the NUL character (U+0000).")


class KeepEmpty(list):
    """A response list that stays in the body even when empty (e.g. JobMetrics.metrics)."""


class Codec:
    def __init__(self, discovery: Discovery):
        self.discovery = discovery
        self._objects: dict[str, Any] = {}  # compiled decoders of named schemas
        self._fast = FastCheck(discovery, MAX_DEPTH)

    # ---- bodies -------------------------------------------------------------

    def decode_json(self, raw: bytes, schema_name: str) -> dict:
        """A request body's bytes -> its canonical dict. A body that is canonical already is
        only validated, in C (api/fast_check.py); the rest, errors included, take decode_body."""
        if not raw.strip():
            return {}
        canonical = self.fast_accepts(raw, schema_name)
        value = _parse_json(raw)
        return value if canonical else self.decode_body(value, schema_name)

    def fast_accepts(self, raw: bytes, schema_name: str) -> bool:
        """Whether `raw` is canonical for the schema, so that decode_body would return it as is."""
        return self._fast.accepts(raw, schema_name)

    def decode_body(self, value: Any, schema_name: str) -> dict:
        if not isinstance(value, dict):
            raise invalid(f"Invalid JSON payload received. Expected an object for {schema_name}, "
                          f"got {type(value).__name__}.")
        try:
            return self._named(schema_name)(value, 1)
        except _Bad as bad:
            raise bad.error() from None
        except RecursionError:
            raise invalid(f"Invalid JSON payload received. Nesting deeper than {MAX_DEPTH} levels.") from None

    def _named(self, name: str):
        decoder = self._objects.get(name)
        if decoder is None:
            decoder = self._compile_object(self.discovery.schema(name), name)
        return decoder

    def _compile(self, schema: dict):
        """A function (value, depth) -> canonical value for `schema`, built once."""
        if "$ref" in schema:
            return self._named(schema["$ref"])
        kind = schema.get("type")
        if kind == "any" or kind is None and "properties" not in schema:
            return _free_form
        if kind == "object":
            return self._compile_object(schema, None)
        if kind == "array":
            return _array(self._compile(schema.get("items", {})))
        return _compile_scalar(schema)

    def _compile_object(self, schema: dict, name: str | None):
        props: dict[str, Any] = {}
        extra_schema = schema.get("additionalProperties")
        declared = schema.get("properties")
        state = {"extra": None}

        def decode(value: Any, depth: int) -> dict:
            if type(value) is not dict:
                raise _Bad("object", value)
            if depth > MAX_DEPTH:
                raise _Bad("", None, message=f"Invalid JSON payload received. Nesting deeper than {MAX_DEPTH} levels.")
            out = {}
            for key, item in value.items():
                if item is None:
                    continue  # proto3 JSON: null means "not set"
                field = props.get(key)
                if field is None and declared is not None and "_" in key and _camel(key) in props:
                    key = _camel(key)
                    field = props[key]
                if field is not None:
                    try:
                        out[key] = field(item, depth + 1)
                    except _Bad as bad:
                        raise bad.at(f".{key}") from None
                    continue
                _no_nul_key(key)
                if state["extra"] is not None:
                    try:
                        out[key] = state["extra"](item, depth + 1)
                    except _Bad as bad:
                        raise bad.at(f"[{key!r}]") from None
                    continue
                if declared is None:
                    check_shape(item, depth + 1)
                    out[key] = item  # a free-form object
                    continue
                raise _Bad("", None, message=f'Invalid JSON payload received. Unknown name "{key}"{WHERE}: '
                                             "Cannot find field.").at(f".{key}")
            return out

        if name is not None:
            self._objects[name] = decode  # before compiling fields: schemas may refer to themselves
        for field_name, field_schema in (declared or {}).items():
            props[field_name] = self._compile(field_schema)
        if extra_schema is not None:
            state["extra"] = self._compile(extra_schema)
        return decode

    # ---- query and path parameters ------------------------------------------

    def decode_params(self, method: Method, path_params: dict[str, str], query: list[tuple[str, str]]) -> dict:
        out: dict[str, Any] = {}
        for name, raw in path_params.items():
            _no_nul(raw, name)
            out[name] = self._param(raw, method.parameters.get(name, {"type": "string"}), name)
        for name, raw in query:
            if name in SYSTEM_PARAMS:
                _system_param(name, raw)
                continue
            spec = method.parameters.get(name)
            if spec is None or spec.get("location") != "query":
                raise field_error(name,
                    f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter. '
                    f"Field '{name}' could not be found in request message.")
            _no_nul(raw, name)
            value = self._param(raw, spec, name)
            if spec.get("repeated"):
                out.setdefault(name, []).append(value)
            elif name in out:
                raise field_error(name, f"Query parameter '{name}' is given more than once; it takes one value.")
            else:
                out[name] = value
        return out

    @staticmethod
    def _param(raw: str, spec: dict, name: str) -> Any:
        if spec.get("type") == "boolean":
            if raw in ("true", "1"):
                return True
            if raw in ("false", "0"):
                return False
            raise _bad(name, raw, "bool", ": use true or false")
        if spec.get("type") == "integer":
            return _scalar(raw, spec, name)
        return _scalar(raw, {k: v for k, v in spec.items() if k != "type"} | {"type": "string"}, name)

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
            return _special(value)
        return value


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise invalid(f"Invalid JSON payload received. {error}.") from None


def _system_param(name: str, raw: str) -> None:
    # `$alt=json;enum-encoding=int` (GAPIC) asks for JSON, like `alt=json`; we answer with enum
    # names, which every proto3 JSON parser reads. Any other format we cannot produce.
    if name in ("alt", "$alt") and raw.split(";")[0].strip() != "json":
        raise field_error(name, f"Unsupported {name}={raw[:40]!r}: Headrace answers in JSON only "
                          "(alt=json).")


def _free_form(value: Any, depth: int) -> Any:
    check_shape(value, depth)
    return value


def _no_nul_key(key: str) -> None:
    if "\x00" in key:
        raise _Bad("", None, message="Invalid JSON payload received: text must not contain the NUL character (U+0000).")


def _array(item):
    def decode(value: Any, depth: int) -> list:
        if type(value) is not list:
            raise _Bad("list", value)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v, depth + 1))
            except _Bad as bad:
                raise bad.at(f"[{i}]") from None
        return out
    return decode


def _compile_scalar(schema: dict):
    kind, fmt = schema.get("type"), schema.get("format")
    if "enum" in schema:
        names = tuple(schema["enum"])
        known = frozenset(names)
        return lambda value, _depth: value if value.__class__ is str and value in known else _enum(value, names)
    if kind == "boolean":
        return _boolean
    if kind == "integer" or fmt in _INT64:
        fmt = fmt or "int32"
        return lambda value, _depth: _int(value, fmt)
    if kind == "number":
        return lambda value, _depth: _number(value, fmt)
    if fmt == "google-datetime":
        return _timestamp_field
    if fmt == "google-duration":
        return lambda value, _depth: _duration(_string(value))
    if fmt == "byte":
        return lambda value, _depth: _bytes(_string(value))
    return lambda value, _depth: _string(value)


def _string(value: Any) -> str:
    if value.__class__ is not str:
        raise _Bad("string", value)
    if "\x00" in value:
        raise _Bad("", None, message="Invalid JSON payload received: text must not contain the NUL character (U+0000).")
    return value


def _boolean(value: Any, _depth: int) -> bool:
    if value is True or value is False:
        return value
    raise _Bad("bool", value)


def _scalar(value: Any, schema: dict, path: str) -> Any:
    """One scalar outside a body (a query or path parameter)."""
    try:
        return _compile_scalar(schema)(value, 0)
    except _Bad as bad:
        raise bad.error(path) from None


def _int(value: Any, fmt: str) -> int | str:
    number = None
    if value.__class__ is str and _INTEGER.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_FLOAT:
        number = int(value)
    if number is None:
        hint = ": send large integers as decimal strings" if isinstance(value, float) else ""
        raise _Bad(fmt, value, hint)
    low, high = _RANGES.get(fmt, _RANGES["int32"])
    if not low <= number < high:
        raise _Bad(fmt, value, f": out of range [{low}, {high - 1}]")
    return str(number) if fmt in _INT64 else number


def _special(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _number(value: Any, fmt: str | None) -> float | int | str:
    if value in ("NaN", "Infinity", "-Infinity"):
        return value
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _NUMBER.fullmatch(value):
        number = float(value)
    if number is None or (isinstance(number, float) and not math.isfinite(number)):
        raise _Bad(fmt or "number", value)
    if fmt == "float" and abs(number) > _MAX_FLOAT32:
        raise _Bad("float", value, ": out of range for a 32-bit float")
    return number


def _timestamp_field(value: Any, _depth: int) -> str:
    # Fast path: already canonical (what Headrace's own workers and most clients send).
    if value.__class__ is str and len(value) == 27 and _CANONICAL_TIME.fullmatch(value):
        try:
            datetime.fromisoformat(value[:-1])
            return value
        except ValueError:
            pass
    return _timestamp(value)


def _timestamp(value: Any) -> str:
    try:
        moment = wire.parse_time(value) if isinstance(value, str) else None
    except (ValueError, OverflowError):  # a bad date, or one that leaves years 1-9999 in UTC
        moment = None
    if moment is None:
        raise _Bad("timestamp", value, ": use RFC 3339 between years 0001 and 9999, e.g. 2026-01-02T03:04:05Z")
    # wire.format_time, with the year padded: strftime leaves years before 1000 unpadded.
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.%fZ")


def _duration(value: str) -> str:
    m = _DURATION.fullmatch(value)
    if not m or abs(int(m.group(1))) > _MAX_DURATION:
        raise _Bad("duration", value, f": use seconds with an 's' suffix, e.g. \"3.5s\", within ±{_MAX_DURATION}s")
    return value


def _bytes(value: str) -> str:
    try:  # standard or URL-safe alphabet, padding optional, as proto3 JSON allows
        base64.b64decode(value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("bytes", value, ": use base64") from None
    return value


def _enum(value: Any, names: tuple[str, ...]) -> str:
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        value = int(value)
    if is_enum_number(value) and value in numbering(names):
        return numbering(names)[value]
    raise _Bad("enum", value, f": expected one of {', '.join(names)}")
