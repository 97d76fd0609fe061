"""Canonical-only msgspec types: the fast path of `Codec.decode_json`.

Most request bodies (Headrace's own workers, googleapiclient) are already in the canonical
proto3 JSON form that `Codec.decode_body` returns unchanged. For each request schema this
builds, from the discovery document, a msgspec type that admits only such bodies, so that
msgspec checks them in C. The types must stay a SUBSET of canonical: whatever they accept,
decode_body returns as is. Everything else (snake_case keys, enum numbers, int64 numbers,
nulls, other time forms, errors...) fails here and takes the slow path, which normalises it
or refuses it with its own message. tests/test_codec_fast_path.py holds them to that.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union, get_args

import msgspec
from msgspec import Meta

from headrace.api.discovery import Discovery

UNROLL = 3  # times a recursive schema is unrolled along a path; deeper input goes slow
FREE_FORM_LEVELS = 6  # nesting admitted in free-form (`any`) values; deeper input goes slow

NEVER = Annotated[int, Meta(ge=1, le=0)]  # fits no value: what it stands for goes slow


def _text(pattern: str):
    # msgspec applies patterns with re.search: anchor both ends, with \Z since $ also
    # matches before a final newline ("5\n").
    return Annotated[str, Meta(pattern=f"^(?:{pattern})\\Z")]


# int64 as the slow path writes it: no '+', no leading zeros, no "-0"; 18 digits at most
# cannot leave the range, longer numbers go slow.
_INT64 = _text(r"0|-?[1-9][0-9]{0,17}")
_UINT64 = _text(r"0|[1-9][0-9]{0,17}")
_INT32 = Annotated[int, Meta(ge=-2**31, le=2**31 - 1)]
_UINT32 = Annotated[int, Meta(ge=0, le=2**32 - 1)]
# orjson reads integers beyond 64 bits as floats, which the slow path then range-checks.
_JSON_INT = Annotated[int, Meta(ge=-2**63, le=2**63 - 1)]
_MAX_FLOAT32 = 3.4028234663852886e38
# msgspec refuses numbers that overflow a double; "NaN" and "Infinity" strings go slow.
_DOUBLE = Union[_JSON_INT, float]
_FLOAT = Union[_JSON_INT, Annotated[float, Meta(ge=-_MAX_FLOAT32, le=_MAX_FLOAT32)]]
# YYYY-MM-DDTHH:MM:SS.ffffffZ on real dates only: year 0000 and every 29 February go slow.
_TIME = _text(r"(?!0000)[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
              r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
              r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z")
_DURATION = _text(r"-?[0-9]{1,11}(?:\.[0-9]{1,9})?s")  # 11 digits stay within ±315,576,000,000 s
_BYTES = _text(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")  # padded standard base64
_FORMATS = {"google-datetime": _TIME, "google-duration": _DURATION, "byte": _BYTES}
_INTEGERS = {"int64": _INT64, "uint64": _UINT64, "uint32": _UINT32}


def _json(levels: int):
    """Any JSON value with containers nested at most `levels` deep."""
    value = Union[str, bool, int, float, None]
    for _ in range(levels):
        value = Union[str, bool, int, float, None, list[value], dict[str, value]]
    return value


_ANY_ITEM = _json(FREE_FORM_LEVELS)  # a free-form list item: null is kept there
# A free-form field or map value: null there means "not set", which the slow path drops.
_ANY = Union[tuple(t for t in get_args(_ANY_ITEM) if t is not type(None))]


def _scalar(schema: dict):
    """Mirrors scalars.compile_scalar, admitting only values it returns unchanged."""
    kind, fmt = schema.get("type"), schema.get("format")
    if "enum" in schema:
        return Literal[tuple(schema["enum"])]
    if kind == "boolean":
        return bool
    if kind == "integer" or fmt in ("int64", "uint64"):
        return _INTEGERS.get(fmt, _INT32)
    if kind == "number":
        return _FLOAT if fmt == "float" else _DOUBLE
    return _FORMATS.get(fmt, str)


class FastCheck:
    """One msgspec decoder per request schema, built on first use; `accepts` says whether a
    body is canonical already. Each type comes with its height (nesting of containers), kept
    within the slow path's depth limit so that no accepted body is one it would refuse."""

    def __init__(self, discovery: Discovery, max_depth: int):
        self.discovery = discovery
        self.max_depth = max_depth
        self._decoders: dict[str, msgspec.json.Decoder] = {}
        self._types: dict[tuple, tuple[object, int]] = {}  # (schema name, unroll counts): (type, height)
        self._reach: dict[str, set[str]] = {}

    def accepts(self, raw: bytes, schema_name: str) -> bool:
        if b"\\u0000" in raw:  # the slow path refuses NUL; raw JSON can only carry it escaped
            return False
        decoder = self._decoders.get(schema_name)
        if decoder is None:
            kind, height = self._named(schema_name, {})
            assert height <= self.max_depth, (schema_name, height)
            decoder = self._decoders[schema_name] = msgspec.json.Decoder(kind)
        try:
            decoder.decode(raw)
        except msgspec.MsgspecError:
            return False
        return True

    def _named(self, name: str, path: dict[str, int]) -> tuple[object, int]:
        """A named schema, as codec._named decodes it (always as an object). `path` counts the
        schemas entered on the way here, to unroll recursive ones UNROLL times."""
        if path.get(name, 0) == UNROLL:
            return NEVER, 0
        path = path | {name: path.get(name, 0) + 1}
        reach = self._reaches(name)
        key = (name, tuple(sorted((n, c) for n, c in path.items() if n in reach)))
        if key not in self._types:
            self._types[key] = self._object(self.discovery.schema(name), path, name)
        return self._types[key]

    def _type(self, schema: dict, path: dict[str, int], in_list: bool = False) -> tuple[object, int]:
        """Mirrors codec._compile."""
        if "$ref" in schema:
            return self._named(schema["$ref"], path)
        kind = schema.get("type")
        if kind == "any" or kind is None and "properties" not in schema:
            return (_ANY_ITEM if in_list else _ANY), FREE_FORM_LEVELS
        if kind == "object":
            return self._object(schema, path, "Object")
        if kind == "array":
            item, height = self._type(schema.get("items", {}), path, in_list=True)
            return list[item], height + 1
        return _scalar(schema), 0

    def _object(self, schema: dict, path: dict[str, int], name: str) -> tuple[object, int]:
        declared, extra = schema.get("properties"), schema.get("additionalProperties")
        if extra is None and declared is not None:
            fields = [self._type(s, path) for s in declared.values()]
            struct = msgspec.defstruct(
                name, [(f"f{i}", t, msgspec.UNSET) for i, (t, _) in enumerate(fields)],
                rename={f"f{i}": key for i, key in enumerate(declared)}, forbid_unknown_fields=True, gc=False)
            return struct, 1 + max((h for _, h in fields), default=0)
        if declared is None and extra is not None:
            value, height = self._type(extra, path)
            return dict[str, value], 1 + height
        return NEVER, 0  # objects both declared and open, or free-form ones: none in the document

    def _reaches(self, name: str) -> set[str]:
        """The schemas a value of `name` can contain, at any depth: only their unroll counts
        change what `name`'s type is, so only they key it."""
        if name not in self._reach:
            seen: set[str] = set()
            stack = [self.discovery.schema(name)]
            while stack:
                schema = stack.pop()
                ref = schema.get("$ref")
                if ref is not None:
                    if ref not in seen:
                        seen.add(ref)
                        stack.append(self.discovery.schema(ref))
                    continue
                stack.extend(schema.get("properties", {}).values())
                stack.extend(s for s in (schema.get("items"), schema.get("additionalProperties")) if s)
            self._reach[name] = seen
        return self._reach[name]
