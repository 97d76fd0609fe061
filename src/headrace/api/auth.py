"""Optional bearer tokens: `--auth-tokens FILE` maps each token to the project ids it may use.

The file is JSON, `{"TOKEN": ["project-a", "project-b"], "ADMIN-TOKEN": "*"}`. Without it,
anyone who can reach the (loopback) interface may call the API. With it, a request needs
`Authorization: Bearer TOKEN` (or `?access_token=TOKEN`, as Google accepts): none or an
unknown one is 401 UNAUTHENTICATED, a token used on another project 403 PERMISSION_DENIED.
Folder and organization resources belong to no project: they need a "*" token. "-", the
AIP-159 wildcard workers lease with (`projects/-/...`), grants every project like "*".
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path

from headrace.errors import ApiError

ALL = "*"
_EVERY_PROJECT = frozenset({ALL, "-"})


def _error_info(reason: str) -> list[dict]:
    # What Google's front end attaches, so clients can branch on `reason`.
    return [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
             "domain": "googleapis.com", "metadata": {"service": "dataflow.googleapis.com"}}]


def load_grants(path: Path) -> dict[bytes, frozenset[str]]:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--auth-tokens {path}: cannot read a JSON object: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--auth-tokens {path}: expected a JSON object {{token: [project ids] or \"*\"}}")
    grants = {}
    for token, projects in raw.items():
        projects = [projects] if isinstance(projects, str) else projects
        if not token or not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
            raise ValueError(f"--auth-tokens {path}: token {token[:4]!r}... must map to a list of "
                             "project ids or \"*\"")
        grants[token.encode()] = frozenset(projects)
    return grants


class Tokens:
    def __init__(self, path: Path | None):
        self.grants = load_grants(path) if path is not None else None

    @property
    def enabled(self) -> bool:
        return self.grants is not None

    def check(self, authorization: str | None, access_token: str | None, project_id: str | None) -> None:
        """Raise unless the request's token may act on `project_id` (None: not a project's resource)."""
        if self.grants is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            token = "" if authorization else (access_token or "")
        projects = self._projects(token.strip().encode())
        if projects is None:
            raise ApiError("UNAUTHENTICATED", "Request is missing a valid bearer token: send "
                           "'Authorization: Bearer TOKEN' with a token from the server's --auth-tokens file.",
                           details=_error_info("CREDENTIALS_MISSING" if not token else "ACCESS_TOKEN_INVALID"))
        if not projects & _EVERY_PROJECT and (project_id is None or project_id not in projects):
            what = f"project {project_id}" if project_id else "this resource (it needs a \"*\" token)"
            raise ApiError("PERMISSION_DENIED", f"The caller does not have permission on {what}: "
                           "its token is not granted it in the server's --auth-tokens file.",
                           details=_error_info("IAM_PERMISSION_DENIED"))

    def _projects(self, token: bytes) -> frozenset[str] | None:
        # Compare with every token in constant time, so timing does not reveal a prefix.
        found = None
        for known, projects in self.grants.items():
            if hmac.compare_digest(known, token) and token:
                found = projects
        return found
