"""The FastAPI application: builds the app from ``Services`` — middleware, exception handlers, and the
routers of ``service.api.routes`` (one per concern). Every error is a JSON body ``{"error": ...}``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service.api.errors import ServiceUnavailable, install_exception_handlers
from service.api.middleware import (
    BodyLimitMiddleware,
    CatchAllMiddleware,
    install_access_log_redaction,
    install_request_metrics,
)
from service.api.routes import ROUTERS
from service.app_services import Services
from service.settings import LimitSettings

__all__ = ["ServiceUnavailable", "create_app"]


def create_app(services: Services) -> FastAPI:
    install_access_log_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.start()
        try:
            yield
        finally:
            services.stop()

    app = FastAPI(
        title="dreamfix",
        version="0.1.0",
        description="Fixes Rust compile errors with a small code LLM in a loop with a jailed rustc; learns nightly.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_request_metrics(app, services.metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=services.settings.limits.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)
    install_exception_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    _state_configured_limits(app, services.settings.limits)
    return app


def _state_configured_limits(app: FastAPI, limits: LimitSettings) -> None:
    """The OpenAPI document states the bounds that come from settings, not from the schemas: the largest
    ``FixRequest.timeout_s`` (``limits.max_request_timeout_s``), which the route enforces with a 422."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        document = build()
        if fresh:
            field = document["components"]["schemas"]["FixRequest"]["properties"]["timeout_s"]
            for variant in field.get("anyOf", [field]):
                if variant.get("type") == "number":
                    variant["maximum"] = limits.max_request_timeout_s
        return document

    app.openapi = openapi  # type: ignore[method-assign]
