"""The request pipeline for every v1b3 method: route, authorise, decode, call, encode.

It is a plain ASGI endpoint: a v1b3 request needs no more of the HTTP framework than the
bytes in and out, and the workers' hottest call (WorkerMessages) pays for every layer.
Whatever goes wrong reaches the client as Google's error envelope; an unexpected exception
is logged here and answered as INTERNAL without its trace.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qsl

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from headrace.api import HANDLERS
from headrace.api.auth import Tokens
from headrace.api.call import Call
from headrace.api.codec import Codec
from headrace.api.discovery import Discovery
from headrace.api.routing import MethodNotAllowed, Router
from headrace.errors import ApiError
from headrace.service import Services

log = logging.getLogger("headrace.api")

_JSON = (b"content-type", b"application/json")


def json_response(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def error_response(error: ApiError) -> Response:
    return Response(orjson.dumps(error.envelope()), status_code=error.code, media_type="application/json",
                    headers=dict(_error_headers(error)))


def _error_headers(error: ApiError) -> list[tuple[str, str]]:
    if isinstance(error, MethodNotAllowed):
        return [("Allow", ", ".join(error.allowed))]
    if error.status == "UNAUTHENTICATED":
        return [("WWW-Authenticate", 'Bearer realm="headrace"')]
    return []


class V1b3:
    def __init__(self, discovery: Discovery, services: Services):
        self.router = Router(discovery)
        self.codec = Codec(discovery)
        self.services = services
        self.tokens = Tokens(services.config.auth_tokens)
        self.max_body = services.config.max_body_bytes
        # Handlers that wait on the event loop; the others block, so they run in a thread.
        self.awaitable = {h for h in HANDLERS.values() if asyncio.iscoroutinefunction(h)}

    async def __call__(self, scope, receive, send) -> None:
        headers: list[tuple[str, str]] = []
        self.services.load.enter()
        try:
            status, payload = 200, await self._handle(scope, receive)
        except ApiError as error:
            status, payload, headers = error.code, error.envelope(), _error_headers(error)
        except Exception:  # noqa: BLE001 - the envelope, never a trace
            log.exception("unexpected error in %s %s", scope["method"], scope["path"])
            error = ApiError("INTERNAL", "Internal error encountered.")
            status, payload = error.code, error.envelope()
        finally:
            self.services.load.leave()
        body = orjson.dumps(payload)
        await send({"type": "http.response.start", "status": status, "headers": [
            _JSON, (b"content-length", b"%d" % len(body)),
            *((name.lower().encode(), value.encode()) for name, value in headers)]})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope, receive) -> dict:
        raw_path = scope.get("raw_path") or scope["path"].encode()
        method, path_params = self.router.match(scope["method"], raw_path.decode("utf-8", "replace"))
        query_string = scope["query_string"]
        query = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if query_string else []
        headers = dict(scope["headers"])
        # Auth before anything else about the request is looked at.
        authorization = headers.get(b"authorization")
        self.tokens.check(authorization.decode("latin-1") if authorization is not None else None,
                          dict(query).get("access_token"),
                          path_params.get("projectId") or path_params.get("projectsId"))
        raw = await self._read_body(headers.get(b"content-length", b""), receive)
        body = self.codec.decode_json(raw, method.request) if method.request else None
        params = self.codec.decode_params(method, path_params, query)
        handler = HANDLERS.get(method.key)
        if handler is None:
            raise ApiError("UNIMPLEMENTED", f"Method {method.id} is not implemented by Headrace yet.")
        call = Call(method, params, body, self.services)
        if handler in self.awaitable:
            result = await handler(call)
        else:
            result = await run_in_threadpool(handler, call)
        return Codec.clean(result or {})

    async def _read_body(self, declared: bytes, receive) -> bytes:
        if declared.isdigit() and int(declared) > self.max_body:
            raise _too_large(int(declared), self.max_body)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ApiError("CANCELLED", "The client closed the connection.", code=499)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _too_large(size, self.max_body)
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _too_large(size: int, limit: int) -> ApiError:
    # gRPC answers an oversized message with RESOURCE_EXHAUSTED; HTTP's code for it is 413.
    return ApiError("RESOURCE_EXHAUSTED", f"Request body of at least {size} bytes is larger than the "
                    f"server's limit of {limit} bytes (HEADRACE_MAX_BODY_BYTES).", code=413)
