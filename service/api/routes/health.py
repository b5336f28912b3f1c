"""Liveness, readiness and the Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from service.api.deps import ServicesDep
from service.api.errors import error_responses
from service.api.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/docs")


@router.get("/healthz", response_model=HealthOut, responses=error_responses(admin=False))
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={
        **error_responses(admin=False),
        503: {"model": ReadyOut, "description": "database unreachable or model not loaded"},
    },
)
async def readyz(services: ServicesDep) -> JSONResponse:
    db_ok = await run_in_threadpool(services.db.ping)
    serving = services.serving
    lead = services.leadership()
    body = ReadyOut(
        ready=db_ok and serving.model_ready,
        database="ok" if db_ok else "unreachable",
        model="loaded" if serving.model_ready else (serving.model_error or "loading"),
        route_epoch=serving.epoch,
        scheduler=lead["scheduler"],
        scheduler_holder=lead["holder"],
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Prometheus text exposition (docs/service.md lists the metrics)",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        },
        **error_responses(admin=False),
    },
)
async def prometheus(services: ServicesDep) -> PlainTextResponse:
    services.metrics.queue_depth.set(services.queue.depth)
    return PlainTextResponse(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
