"""The FastAPI application: builds the app from ``Services`` — middleware, exception handlers, and the
routers of ``service.api.routes`` (one per concern). Every error is a JSON body ``{"error": ...}``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
    return app
