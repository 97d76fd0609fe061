"""Optional bearer tokens: `--auth-tokens FILE` maps each token to the project ids it may use
("*" for all). Without the file, anyone on the (loopback) interface may call the API."""

from __future__ import annotations

import json
from pathlib import Path

from headrace.errors import ApiError


class Tokens:
    def __init__(self, path: Path | None):
        self.grants: dict[str, set[str]] | None = None
        if path is not None:
            raw = json.loads(Path(path).read_text())
            self.grants = {token: set([projects] if isinstance(projects, str) else projects)
                           for token, projects in raw.items()}

    def check(self, authorization: str | None, project_id: str | None) -> None:
        if self.grants is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        projects = self.grants.get(token.strip()) if scheme.lower() == "bearer" else None
        if projects is None:
            raise ApiError("UNAUTHENTICATED", "Request is missing a valid bearer token: send "
                           "'Authorization: Bearer TOKEN' with a token from the server's --auth-tokens file.")
        if project_id and "*" not in projects and project_id not in projects:
            raise ApiError("PERMISSION_DENIED", f"The caller does not have permission on project {project_id}.")
