"""ASGI middleware of the app: the body-size cap, the outermost catch-all, request metrics, and the access
log's token redaction."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.api.metrics import ServiceMetrics

log = logging.getLogger(__name__)


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
                    await error_response(413, f"request body over the {self.max_bytes}-byte limit")(
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
                await error_response(413, f"request body over the {self.max_bytes}-byte limit")(
                    scope, receive, send
                )
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
                await error_response(
                    500, f"internal error (incident {incident}); the server log has the details"
                )(scope, receive, send)


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


def install_request_metrics(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Count and time every request by its route template (``unmatched`` for a 404 on no route)."""

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
