"""The request pipeline for every v1b3 method: route, authorise, decode, call, encode.

Whatever goes wrong reaches the client as Google's error envelope; an unexpected exception
is logged here and answered as INTERNAL without its trace.
"""

from __future__ import annotations

import logging

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from headrace.api import HANDLERS
from headrace.api.auth import Tokens
from headrace.api.call import Call
from headrace.api.codec import Codec
from headrace.api.discovery import Discovery
from headrace.api.routing import MethodNotAllowed, Router
from headrace.errors import ApiError, invalid
from headrace.service import Services

log = logging.getLogger("headrace.api")


def json_response(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def error_response(error: ApiError) -> Response:
    response = json_response(error.envelope(), error.code)
    if isinstance(error, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(error.allowed)
    elif error.status == "UNAUTHENTICATED":
        response.headers["WWW-Authenticate"] = 'Bearer realm="headrace"'
    return response


class V1b3:
    def __init__(self, discovery: Discovery, services: Services):
        self.router = Router(discovery)
        self.codec = Codec(discovery)
        self.services = services
        self.tokens = Tokens(services.config.auth_tokens)
        self.max_body = services.config.max_body_bytes

    async def handle(self, request: Request) -> Response:
        self.services.load.enter()
        try:
            return json_response(await self._handle(request))
        except ApiError as error:
            return error_response(error)
        except Exception:  # noqa: BLE001 - the envelope, never a trace
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            return error_response(ApiError("INTERNAL", "Internal error encountered."))
        finally:
            self.services.load.leave()

    async def _handle(self, request: Request) -> dict:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        method, path_params = self.router.match(request.method, raw_path.decode("utf-8", "replace"))
        query = list(request.query_params.multi_items())
        # Auth before anything else about the request is looked at.
        self.tokens.check(request.headers.get("authorization"), dict(query).get("access_token"),
                          path_params.get("projectId") or path_params.get("projectsId"))
        raw = await self._read_body(request)
        body = None
        if method.request:
            body = self.codec.decode_body(_parse_json(raw) if raw.strip() else {}, method.request)
        params = self.codec.decode_params(method, path_params, query)
        handler = HANDLERS.get(method.key)
        if handler is None:
            raise ApiError("UNIMPLEMENTED", f"Method {method.id} is not implemented by Headrace yet.")
        result = await run_in_threadpool(handler, Call(method, params, body, self.services))
        return Codec.clean(result or {})

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise _too_large(int(declared), self.max_body)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise _too_large(size, self.max_body)
            chunks.append(chunk)
        return b"".join(chunks)


def _parse_json(raw: bytes):
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise invalid(f"Invalid JSON payload received. {error}.") from None


def _too_large(size: int, limit: int) -> ApiError:
    # gRPC answers an oversized message with RESOURCE_EXHAUSTED; HTTP's code for it is 413.
    return ApiError("RESOURCE_EXHAUSTED", f"Request body of at least {size} bytes is larger than the "
                    f"server's limit of {limit} bytes (HEADRACE_MAX_BODY_BYTES).", code=413)
