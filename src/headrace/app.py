"""The application factory: config in, ASGI app out. No module-level state."""

from __future__ import annotations

import contextlib
import logging
import threading

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from headrace.api.discovery import load as load_discovery
from headrace.api.http import V1b3, error_response, json_response
from headrace.api.openapi import build as build_openapi
from headrace.config import Config
from headrace.errors import ApiError
from headrace.service import Services
from headrace.store import Store

log = logging.getLogger("headrace")


def create_app(config: Config) -> Starlette:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(config.store_url)
    services = Services(config, store)
    api = V1b3(load_discovery(), services)
    openapi = build_openapi(load_discovery())

    async def healthz(_request: Request) -> Response:
        return json_response({"status": "ok"})

    async def openapi_json(_request: Request) -> Response:
        return json_response(openapi)

    async def not_found(request: Request, _exc) -> Response:
        return error_response(ApiError("NOT_FOUND", f"The requested URL {request.url.path} was not found on this server."))

    async def not_allowed(request: Request, exc) -> Response:
        response = error_response(ApiError("UNIMPLEMENTED", f"Method {request.method} is not allowed on {request.url.path}.", code=405))
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        services.flex_templates.recover()
        stop = threading.Event()
        sweeper = threading.Thread(target=_sweep, args=(services, stop), name="headrace-sweeper", daemon=True)
        sweeper.start()
        try:
            yield
        finally:
            stop.set()
            sweeper.join(timeout=5)
            services.flex_templates.close()
            store.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/openapi.json", openapi_json),
            Route("/v1b3/{path:path}", api),  # every verb; the discovery document decides
        ],
        exception_handlers={404: not_found, 405: not_allowed},
        lifespan=lifespan,
    )
    app.state.services = services
    return app


def _sweep(services: Services, stop: threading.Event) -> None:
    while not stop.wait(services.config.sweep_seconds):
        try:
            services.sweep()
        except Exception:  # noqa: BLE001 - keep sweeping; the next pass retries
            log.exception("sweep failed")
