"""The contract: Dataflow's discovery document, loaded from the installed client package.

The document shipped inside google-api-python-client is the single source of truth for
paths, verbs, parameters and schemas. The seed's `sql:validate`, which newer documents
dropped, is declared in the small overlay below.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass, field
from typing import Any

# `sql:validate` as the seed page describes it (ValidateResponse{errorMessage, queryInfo}).
SQL_OVERLAY: dict[str, Any] = {
    "methods": {
        "dataflow.projects.locations.sql.validate": {
            "id": "dataflow.projects.locations.sql.validate",
            "httpMethod": "GET",
            "path": "v1b3/projects/{projectId}/locations/{location}/sql:validate",
            "parameters": {
                "projectId": {"type": "string", "location": "path", "required": True},
                "location": {"type": "string", "location": "path", "required": True},
                "query": {"type": "string", "location": "query"},
            },
            "response": {"$ref": "ValidateResponse"},
        }
    },
    "schemas": {
        "ValidateResponse": {
            "id": "ValidateResponse",
            "type": "object",
            "properties": {
                "errorMessage": {"type": "string"},
                "queryInfo": {"$ref": "QueryInfo"},
            },
        },
        "QueryInfo": {
            "id": "QueryInfo",
            "type": "object",
            "properties": {
                "queryProperty": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "enum": ["QUERY_PROPERTY_UNSPECIFIED", "HAS_UNBOUNDED_SOURCE"],
                    },
                }
            },
        },
    },
}


@dataclass(frozen=True)
class Method:
    """One REST method of the document: `id` like `dataflow.projects.locations.jobs.list`."""

    id: str
    http_method: str
    path: str  # e.g. v1b3/projects/{projectId}/jobs/{jobId}
    parameters: dict[str, dict]
    request: str | None
    response: str | None

    @property
    def key(self) -> str:
        """The method's name with the project/location prefix dropped: `jobs.list`.

        Project-level aliases share the key of their `projects.locations` twin, so one
        handler serves both.
        """
        name = self.id.removeprefix("dataflow.")
        for prefix in ("projects.locations.", "projects."):
            if name.startswith(prefix):
                return name[len(prefix):]
        return name


@dataclass(frozen=True)
class Discovery:
    doc: dict
    schemas: dict[str, dict]
    methods: list[Method] = field(default_factory=list)

    def schema(self, name: str) -> dict:
        return self.schemas[name]


def _walk(resource: dict):
    yield from resource.get("methods", {}).values()
    for sub in resource.get("resources", {}).values():
        yield from _walk(sub)


@functools.cache
def load() -> Discovery:
    """Read dataflow.v1b3.json from the installed googleapiclient (cached: it is immutable)."""
    docs = importlib.resources.files("googleapiclient") / "discovery_cache" / "documents"
    doc = json.loads((docs / "dataflow.v1b3.json").read_text())
    schemas = dict(doc["schemas"]) | SQL_OVERLAY["schemas"]
    raw = list(_walk(doc)) + list(SQL_OVERLAY["methods"].values())
    methods = [
        Method(
            id=m["id"],
            http_method=m["httpMethod"],
            path=m.get("flatPath") or m["path"],
            parameters=m.get("parameters", {}),
            request=m.get("request", {}).get("$ref"),
            response=m.get("response", {}).get("$ref"),
        )
        for m in raw
    ]
    return Discovery(doc=doc, schemas=schemas, methods=methods)
