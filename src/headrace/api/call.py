"""What a handler receives: the decoded request, and the services to act on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headrace.api.discovery import Method
from headrace.service import Services


@dataclass
class Call:
    method: Method
    params: dict[str, Any]  # path and query parameters, decoded
    body: dict | None  # the request body, decoded and checked against its schema
    services: Services

    @property
    def project(self) -> str:
        return self.params["projectId"]

    @property
    def location(self) -> str:
        """The regional endpoint: from the path, else the `location` query parameter, else
        the default region (the project-level aliases work like Dataflow's us-central1)."""
        return (self.params.get("location") or (self.body or {}).get("location")
                or self.services.config.default_location)

    def __getitem__(self, name: str) -> Any:
        return self.params[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)
