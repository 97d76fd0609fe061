"""Proto3 JSON in, proto3 JSON out, checked against the discovery schemas.

Requests are normalised so the service sees one canonical form: lowerCamelCase keys
(snake_case accepted), enum names (numbers accepted), int64 as strings (numbers accepted),
timestamps as RFC3339 UTC with microseconds. A field the schema does not declare is
rejected with INVALID_ARGUMENT naming it, as Google's front end does. docs/wire.md lists
every rule and the choices made where Dataflow's own behaviour is unknown.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from headrace.api.discovery import Discovery, Method
from headrace.api.fast_check import FastCheck
from headrace.api.scalars import WHERE, Bad, bad_value, compile_scalar, field_error, special
from headrace.errors import invalid

# Standard query parameters every Google API accepts (plus GAPIC's `$alt`); all but `alt`
# are accepted and ignored (see docs/wire.md).
SYSTEM_PARAMS = {"$alt", "alt", "$.xgafv", "access_token", "callback", "fields", "key",
                 "oauth_token", "prettyPrint", "quotaUser", "uploadType", "upload_protocol"}

# protobuf's JSON parser stops at 100 levels; so do we, for typed and free-form values alike.
MAX_DEPTH = 100


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def check_shape(value: Any, depth: int = 1) -> None:
    """Reject nesting deeper than MAX_DEPTH and NUL characters anywhere in a free-form value
    (`any`, stored as it came); typed values are checked as they are decoded."""
    stack = [(value, depth)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)) and depth > MAX_DEPTH:
            raise Bad("", None, message=f"Invalid JSON payload received. Nesting deeper than {MAX_DEPTH} levels.")
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
        except Bad as bad:
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
        return compile_scalar(schema)

    def _compile_object(self, schema: dict, name: str | None):
        props: dict[str, Any] = {}
        extra_schema = schema.get("additionalProperties")
        declared = schema.get("properties")
        state = {"extra": None}

        def decode(value: Any, depth: int) -> dict:
            if type(value) is not dict:
                raise Bad("object", value)
            if depth > MAX_DEPTH:
                raise Bad("", None, message=f"Invalid JSON payload received. Nesting deeper than {MAX_DEPTH} levels.")
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
                    except Bad as bad:
                        raise bad.at(f".{key}") from None
                    continue
                _no_nul_key(key)
                if state["extra"] is not None:
                    try:
                        out[key] = state["extra"](item, depth + 1)
                    except Bad as bad:
                        raise bad.at(f"[{key!r}]") from None
                    continue
                if declared is None:
                    check_shape(item, depth + 1)
                    out[key] = item  # a free-form object
                    continue
                raise Bad("", None, message=f'Invalid JSON payload received. Unknown name "{key}"{WHERE}: '
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
            raise bad_value(name, raw, "bool", ": use true or false")
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
            return special(value)
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
        raise Bad("", None, message="Invalid JSON payload received: text must not contain the NUL character (U+0000).")


def _array(item):
    def decode(value: Any, depth: int) -> list:
        if type(value) is not list:
            raise Bad("list", value)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v, depth + 1))
            except Bad as bad:
                raise bad.at(f"[{i}]") from None
        return out
    return decode


def _scalar(value: Any, schema: dict, path: str) -> Any:
    """One scalar outside a body (a query or path parameter)."""
    try:
        return compile_scalar(schema)(value, 0)
    except Bad as bad:
        raise bad.error(path) from None
