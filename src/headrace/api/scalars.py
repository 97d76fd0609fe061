"""Scalars of proto3 JSON, checked and put in canonical form, and the error a value that does
not fit its schema raises. api/codec.py builds whole-schema decoders from these; docs/wire.md
lists the rules."""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import datetime
from typing import Any

from headrace import wire
from headrace.api.enums import is_enum_number, numbering
from headrace.errors import ApiError

_INT64 = {"int64", "uint64"}
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_DURATION = re.compile(r"(-?[0-9]{1,12})(\.[0-9]{1,9})?s")
_MAX_DURATION = 315_576_000_000  # seconds in 10,000 years: protobuf Duration's range
_MAX_FLOAT32 = 3.4028234663852886e38
_EXACT_FLOAT = 2**53  # larger JSON numbers lost precision before we saw them
_CANONICAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_RANGES = {"int32": (-2**31, 2**31), "uint32": (0, 2**32), "int64": (-2**63, 2**63), "uint64": (0, 2**64)}


def field_error(field: str, message: str) -> ApiError:
    """INVALID_ARGUMENT with the google.rpc.BadRequest detail clients use to point at a field."""
    return ApiError("INVALID_ARGUMENT", message[:1000], details=[{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field, "description": message[:1000]}]}])


def bad_value(path: str, value: Any, expected: str, hint: str = "") -> ApiError:
    shown = repr(value)[:80] if not isinstance(value, (dict, list)) else type(value).__name__
    where = f" at '{path}'" if path else ""
    return field_error(path, f"Invalid value{where} ({expected}), {shown}{hint}")


WHERE = "\x00where\x00"  # where an error message names the enclosing field; keys hold no NUL


class Bad(Exception):
    """A value that does not fit its schema; the path is assembled only on the way out, so a
    request that is fine pays nothing for error reporting."""

    def __init__(self, expected: str, value: Any, hint: str = "", message: str = ""):
        self.expected, self.value, self.hint, self.message = expected, value, hint, message
        self.path: list[str] = []

    def at(self, segment: str) -> "Bad":
        self.path.append(segment)
        return self

    def error(self, root: str = "") -> ApiError:
        path = root + "".join(reversed(self.path))
        path = path[1:] if path.startswith(".") else path
        if self.message:
            where = f" at '{path.rpartition('.')[0]}'" if "." in path else ""
            return field_error(path, self.message.replace(WHERE, where))
        return bad_value(path, self.value, self.expected, self.hint)


def compile_scalar(schema: dict):
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
        raise Bad("string", value)
    if "\x00" in value:
        raise Bad("", None, message="Invalid JSON payload received: text must not contain the NUL character (U+0000).")
    return value


def _boolean(value: Any, _depth: int) -> bool:
    if value is True or value is False:
        return value
    raise Bad("bool", value)


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
        raise Bad(fmt, value, hint)
    low, high = _RANGES.get(fmt, _RANGES["int32"])
    if not low <= number < high:
        raise Bad(fmt, value, f": out of range [{low}, {high - 1}]")
    return str(number) if fmt in _INT64 else number


def special(value: float) -> str:
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
        raise Bad(fmt or "number", value)
    if fmt == "float" and abs(number) > _MAX_FLOAT32:
        raise Bad("float", value, ": out of range for a 32-bit float")
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
        raise Bad("timestamp", value, ": use RFC 3339 between years 0001 and 9999, e.g. 2026-01-02T03:04:05Z")
    # wire.format_time, with the year padded: strftime leaves years before 1000 unpadded.
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.%fZ")


def _duration(value: str) -> str:
    m = _DURATION.fullmatch(value)
    if not m or abs(int(m.group(1))) > _MAX_DURATION:
        raise Bad("duration", value, f": use seconds with an 's' suffix, e.g. \"3.5s\", within ±{_MAX_DURATION}s")
    return value


def _bytes(value: str) -> str:
    try:  # standard or URL-safe alphabet, padding optional, as proto3 JSON allows
        base64.b64decode(value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Bad("bytes", value, ": use base64") from None
    return value


def _enum(value: Any, names: tuple[str, ...]) -> str:
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        value = int(value)
    if is_enum_number(value) and value in numbering(names):
        return numbering(names)[value]
    raise Bad("enum", value, f": expected one of {', '.join(names)}")
