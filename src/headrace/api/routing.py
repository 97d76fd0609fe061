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
        self.routes = [Route(m, _compile(m.path)) for m in discovery.methods]

    def match(self, verb: str, path: str) -> tuple[Method, dict[str, str]]:
        allowed = False
        for route in self.routes:
            m = route.pattern.match(path)
            if not m:
                continue
            if route.method.http_method == verb:
                return route.method, {k: unquote(v) for k, v in m.groupdict().items()}
            allowed = True
        if allowed:
            raise ApiError("INVALID_ARGUMENT", f"Method {verb} is not allowed on {path}.", code=405)
        raise not_found(f"The requested URL {path} was not found on this server.")
