"""The FastAPI application: thin routers over ``Services``; every error is a JSON body ``{"error": ...}``."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import schemas
from service.db.repositories import AdapterRepository, EpisodeRepository, MetricRepository, RunRepository
from service.jobs import RunConflict
from service.workqueue import QueueFull

if TYPE_CHECKING:
    from service.app_services import Services

log = logging.getLogger(__name__)


class ServiceUnavailable(Exception):
    def __init__(self, message: str, retry_after_s: int = 10) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _error(
    status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimitMiddleware:
    """413 for bodies over the cap, whether announced by Content-Length or streamed without one."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await _error(413, f"request body over the {self.max_bytes}-byte limit")(
                        scope, receive, send
                    )
                    return
        # Read the body here, up to the cap, and replay it: a body that streams past the cap gets 413
        # (raising inside the app's receive would surface as FastAPI's generic 400 "error parsing the body").
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await _error(413, f"request body over the {self.max_bytes}-byte limit")(scope, receive, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class CatchAllMiddleware:
    """Outermost guard: an unhandled error becomes a 500 with an incident id and is *not* re-raised, so
    the server keeps the keep-alive connection usable (Starlette's own handler re-raises after answering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception(
                "unhandled error on %s %s (incident %s)", scope.get("method"), scope.get("path"), incident
            )
            if not started:
                await _error(500, f"internal error (incident {incident}); the server log has the details")(
                    scope, receive, send
                )


# What every integer column stores on both databases (PostgreSQL INTEGER is the narrower: int32).
DB_INT_MAX = 2**31 - 1
DbId = Annotated[int, Path(ge=1, le=DB_INT_MAX)]
DbOffset = Annotated[int, Query(ge=0, le=DB_INT_MAX)]


_SECRET_QUERY = re.compile(r"(?i)([?&](?:token|access_token|api_key|key)=)[^&#\s]*")


class RedactQueryFilter(logging.Filter):
    """Keeps a token sent as ``?token=`` out of uvicorn's access log (its args carry the full path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def install_access_log_redaction() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryFilter) for f in access.filters):
        access.addFilter(RedactQueryFilter())


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated["Services", Depends(get_services)]


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    token = get_services(request).settings.admin_token
    if token is None or not token.get_secret_value():
        raise HTTPException(403, "the admin API is disabled: set DREAMFIX_ADMIN_TOKEN to enable it")
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(
            401, "admin endpoints need 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
        )
    given = authorization.split(" ", 1)[1].strip()
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(403, "invalid admin token")


def _run_out(run: Any, detail: bool = False) -> dict[str, Any]:
    out = schemas.RunOut.model_validate(run, from_attributes=True).model_dump(mode="json")
    if detail:
        out["log"] = run.log or ""
    return out


def _adapter_out(row: Any) -> dict[str, Any]:
    data = schemas.AdapterOut(
        task=row.task,
        version=row.version,
        name=f"{row.task}@v{row.version}",
        status=row.status,
        basis_id=row.basis_id,
        base_model_id=row.base_model_id,
        gate=row.gate or {},
        reason=row.reason or "",
        params=row.params,
        bytes=row.bytes,
        created_at=row.created_at,
        promoted_at=row.promoted_at,
    )
    return data.model_dump(mode="json")


def create_app(services: Services) -> FastAPI:
    settings = services.settings
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
    metrics = services.metrics

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Any:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            metrics.requests.labels(template, request.method, str(status)).inc()
            metrics.latency.labels(template).observe(time.perf_counter() - start)

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return _error(422, f"invalid request: {where}: {first['msg']}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(QueueFull)
    async def on_queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        return _error(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(RunConflict)
    async def on_conflict(_: Request, exc: RunConflict) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(ServiceUnavailable)
    async def on_unavailable(_: Request, exc: ServiceUnavailable) -> JSONResponse:
        return _error(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)})

    # ------------------------------------------------------------ public
    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        db_ok = await run_in_threadpool(services.db.ping)
        model_ok = services.serving.model_ready
        body = {
            "ready": db_ok and model_ok,
            "database": "ok" if db_ok else "unreachable",
            "model": "loaded" if model_ok else (services.serving.model_error or "loading"),
            "route_epoch": services.serving.epoch,
        }
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> PlainTextResponse:
        metrics.queue_depth.set(services.queue.depth)
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def _check_code_size(code: str) -> None:
        size = len(code.encode("utf-8", "surrogatepass"))
        if size > settings.limits.max_code_bytes:
            raise HTTPException(413, f"code is {size} bytes; the limit is {settings.limits.max_code_bytes}")

    @app.post("/v1/check", response_model=schemas.CheckResponse)
    async def check(body: schemas.CheckRequest) -> dict[str, Any]:
        _check_code_size(body.code)
        return await run_in_threadpool(services.serving.check, body)

    @app.post(
        "/v1/fix",
        response_model=schemas.FixResponse,
        responses={413: {"model": schemas.ErrorBody}, 429: {"model": schemas.ErrorBody}},
    )
    async def fix(body: schemas.FixRequest) -> dict[str, Any]:
        _check_code_size(body.code)
        if body.diagnostics and len(body.diagnostics) > settings.limits.max_code_bytes:
            raise HTTPException(413, "diagnostics text over the size limit")
        if not services.serving.model_ready:
            raise ServiceUnavailable(
                "the model is still loading"
                if not services.serving.model_error
                else services.serving.model_error
            )
        future = services.queue.submit(lambda: services.serving.fix(body))
        metrics.queue_depth.set(services.queue.depth)
        try:
            result: dict[str, Any] = await asyncio.wait_for(
                asyncio.wrap_future(future), timeout=settings.limits.request_timeout_s
            )
        except TimeoutError:
            raise HTTPException(504, "the fix took longer than the request time limit") from None
        metrics.observe_fix(result["fixed"], result["verified"])
        return result

    # ------------------------------------------------------------ admin
    admin = [Depends(require_admin)]

    @app.post("/admin/runs", status_code=202, dependencies=admin)
    async def trigger_run(body: schemas.RunCreate) -> dict[str, Any]:
        run_id = await run_in_threadpool(services.jobs.trigger, body.kind, "admin")
        return {"run_id": run_id, "status": "queued", "kind": body.kind}

    @app.get("/admin/runs", dependencies=admin)
    async def list_runs(
        kind: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
        offset: DbOffset = 0,
    ) -> dict[str, Any]:
        with services.db.session() as s:
            rows = RunRepository(s).recent(kind, limit, offset)
            return {"items": [_run_out(r) for r in rows], "limit": limit, "offset": offset}

    @app.get("/admin/runs/{run_id}", dependencies=admin)
    async def get_run(run_id: DbId) -> dict[str, Any]:
        with services.db.session() as s:
            run = RunRepository(s).get(run_id)
            if run is None:
                raise HTTPException(404, f"no run {run_id}")
            return _run_out(run, detail=True)

    @app.get("/admin/adapters", dependencies=admin)
    async def list_adapters(task: str | None = None) -> dict[str, Any]:
        with services.db.session() as s:
            rows = AdapterRepository(s).versions(task)
            return {
                "items": [_adapter_out(r) for r in rows],
                "active": {r.task: r.version for r in rows if r.status == "active"},
                "served_epoch": services.serving.epoch,
            }

    @app.post("/admin/adapters/{task}/rollback", dependencies=admin)
    async def rollback(task: str, body: schemas.RollbackRequest | None = None) -> dict[str, Any]:
        version = body.version if body else None
        try:
            active = await run_in_threadpool(services.rollback, task, version)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"task": task, "active_version": active, "served_epoch": services.serving.epoch}

    @app.get("/admin/episodes", dependencies=admin)
    async def list_episodes(
        origin: str | None = None,
        family: str | None = None,
        fixed: bool | None = None,
        task: str | None = None,
        run_id: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: DbOffset = 0,
    ) -> dict[str, Any]:
        with services.db.session() as s:
            total, rows = EpisodeRepository(s).search(
                origin=origin,
                family=family,
                fixed=fixed,
                task=task,
                run_id=run_id,
                limit=limit,
                offset=offset,
            )
            items = [
                schemas.EpisodeOut.model_validate(r, from_attributes=True).model_dump(mode="json")
                for r in rows
            ]
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    @app.get("/admin/episodes/{episode_id}", dependencies=admin)
    async def get_episode(episode_id: DbId) -> dict[str, Any]:
        with services.db.session() as s:
            row = EpisodeRepository(s).get(episode_id)
            if row is None:
                raise HTTPException(404, f"no episode {episode_id}")
            return schemas.EpisodeDetail.model_validate(row, from_attributes=True).model_dump(mode="json")

    @app.get("/admin/metrics/history", dependencies=admin)
    async def metrics_history(
        name: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 200
    ) -> dict[str, Any]:
        with services.db.session() as s:
            rows = MetricRepository(s).history(name, limit)
            items = [
                schemas.MetricPointOut.model_validate(r, from_attributes=True).model_dump(mode="json")
                for r in rows
            ]
        return {"items": items}

    return app
