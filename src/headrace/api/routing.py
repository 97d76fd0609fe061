"""The route table, built from the discovery document's method paths."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from headrace.api.discovery import Discovery, Method
from headrace.errors import ApiError, not_found

_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    method: Method
    pattern: re.Pattern


class MethodNotAllowed(ApiError):
    """The path exists under other verbs. grpc-gateway's choice: 405 with UNIMPLEMENTED."""

    def __init__(self, verb: str, path: str, allowed: list[str]):
        super().__init__("UNIMPLEMENTED", f"Method {verb} is not allowed on {path}; use "
                         f"{' or '.join(allowed)}.", code=405)
        self.allowed = allowed


def _compile(path: str) -> re.Pattern:
    # A path parameter is one segment and stops at ':' so `jobs/{jobId}:snapshot` works.
    out, pos = [], 0
    for m in _PARAM.finditer(path):
        out.append(re.escape(path[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/:]+)")
        pos = m.end()
    out.append(re.escape(path[pos:]))
    return re.compile("^/" + "".join(out) + "$")


class Router:
    def __init__(self, discovery: Discovery):
        # Routes by segment count: a parameter never holds a '/', so only those can match.
        self.routes: dict[int, list[Route]] = {}
        for m in discovery.methods:
            self.routes.setdefault(m.path.count("/") + 1, []).append(Route(m, _compile(m.path)))

    def match(self, verb: str, raw_path: str) -> tuple[Method, dict[str, str]]:
        """Match the path as sent (still percent-encoded), so an encoded '/' or ':' stays
        inside its parameter, and decode each parameter exactly once."""
        allowed = []
        for route in self.routes.get(raw_path.count("/"), ()):
            m = route.pattern.match(raw_path)
            if not m:
                continue
            if route.method.http_method == verb:
                return route.method, {k: unquote(v) for k, v in m.groupdict().items()}
            allowed.append(route.method.http_method)
        if allowed:
            raise MethodNotAllowed(verb, unquote(raw_path), allowed)
        raise not_found(f"The requested URL {unquote(raw_path)} was not found on this server.")
