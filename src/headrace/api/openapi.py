"""An OpenAPI 3 description of the API, generated from the discovery document at run time.

Served at /openapi.json for tools that speak OpenAPI (Swagger UI, code generators, fuzzers).
It describes the canonical wire form Headrace answers with: enum names, int64 as decimal
strings, RFC 3339 timestamps. Requests may also use the lenient forms docs/wire.md lists.
"""

from __future__ import annotations

import re
from typing import Any

from headrace.api.discovery import Discovery, Method

ERROR = "GoogleRpcErrorEnvelope"  # a name the discovery document does not use
_INTEGERS = {"int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1)}
_PATTERNS = {
    "int64": r"^-?[0-9]{1,19}$",
    "uint64": r"^[0-9]{1,20}$",
    "google-duration": r"^-?[0-9]{1,12}(\.[0-9]{1,9})?s$",
}
_FORMATS = {"google-datetime": "date-time", "byte": "byte", "double": "double", "float": "float"}


def schema(spec: dict) -> dict:
    """One discovery schema (or property, or parameter) as an OpenAPI 3.0 schema object."""
    if "$ref" in spec:
        return {"$ref": f"#/components/schemas/{spec['$ref']}"}
    kind, fmt = spec.get("type"), spec.get("format")
    out: dict[str, Any] = {}
    if spec.get("description"):
        out["description"] = spec["description"]
    if spec.get("readOnly"):
        out["readOnly"] = True
    if spec.get("deprecated"):
        out["deprecated"] = True
    if kind == "any" or kind is None and "properties" not in spec:
        return out
    if kind == "object" or "properties" in spec:
        out["type"] = "object"
        if "properties" in spec:
            out["properties"] = {k: schema(v) for k, v in spec["properties"].items()}
        if "additionalProperties" in spec:
            out["additionalProperties"] = schema(spec["additionalProperties"])
        return out
    if kind == "array":
        return out | {"type": "array", "items": schema(spec.get("items", {}))}
    out["type"] = kind
    if "enum" in spec:
        out["enum"] = list(spec["enum"])
    if kind == "integer" and fmt in _INTEGERS:
        out["format"] = fmt
        out["minimum"], out["maximum"] = _INTEGERS[fmt]
    elif fmt in _PATTERNS:
        out["format"], out["pattern"] = fmt, _PATTERNS[fmt]
    elif fmt in _FORMATS:
        out["format"] = _FORMATS[fmt]
    return out


def _parameters(method: Method) -> dict[str, dict]:
    """Path parameters as the (flat) path names them, then the query parameters.

    Where the document's path is `{+name}`, its flat path splits it into segments
    (`projects/{projectsId}/locations/{locationsId}/...`): those segments are the parameters.
    """
    in_path = re.findall(r"\{(\w+)\}", method.path)
    params = {name: method.parameters.get(name, {"type": "string"}) | {"location": "path"} for name in in_path}
    params |= {k: v for k, v in method.parameters.items() if v.get("location") == "query"}
    return params


def _operation(method: Method, tag: str) -> dict:
    params = []
    for name, spec in _parameters(method).items():
        param: dict[str, Any] = {"name": name, "in": spec.get("location", "query"),
                                 "required": bool(spec.get("required")) or spec.get("location") == "path"}
        value = schema({k: v for k, v in spec.items() if k not in ("location", "required", "repeated", "pattern")})
        param["schema"] = {"type": "array", "items": value} if spec.get("repeated") else value
        if spec.get("description"):
            param["description"] = spec["description"]
        params.append(param)
    op: dict[str, Any] = {
        "operationId": method.id,
        "tags": [tag],
        "parameters": params,
        "responses": {
            "200": {"description": "Success.", "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{method.response or 'Empty'}"}}}},
            "default": {"description": "An error, in Google's envelope.", "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{ERROR}"}}}},
        },
    }
    if method.request:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{method.request}"}}}}
    return op


def _tag(method: Method) -> str:
    # The resource, as the discovery document nests it: `jobs.workItems` for jobs.workItems.lease.
    return method.key.rpartition(".")[0] or method.key


def build(discovery: Discovery) -> dict:
    doc = discovery.doc
    paths: dict[str, dict] = {}
    for method in discovery.methods:
        path = "/" + re.sub(r"\{\+?(\w+)\}", r"{\1}", method.path)
        paths.setdefault(path, {})[method.http_method.lower()] = _operation(method, _tag(method))
    schemas = {name: schema(spec) for name, spec in discovery.schemas.items()}
    schemas.setdefault("Empty", {"type": "object"})
    schemas[ERROR] = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "status"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                       "status": {"type": "string"},
                       "details": {"type": "array", "items": {"type": "object"}}}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{doc.get('title', 'Dataflow API')} (Headrace)",
                 "version": doc.get("version", "v1b3"),
                 "description": "Generated from Dataflow's discovery document by Headrace."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # Tokens are optional: only a server started with --auth-tokens asks for one.
        "security": [{}, {"bearer": []}],
    }
