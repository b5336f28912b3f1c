"""Every error the API answers is ``{"error": <message>, "detail"?: ...}``: the body, the exception handlers
that produce it, and the OpenAPI ``responses=`` that document it per route."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.schemas import ErrorBody
from service.jobs import RunConflict
from service.workqueue import QueueFull


class ServiceUnavailable(Exception):
    def __init__(self, message: str, retry_after_s: int = 10) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def error_response(
    status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


STATUS_TEXT = {
    400: "the body is not valid JSON",
    401: "no or malformed bearer token",
    403: "the admin API is disabled, or the token is wrong",
    404: "no such resource",
    408: "the request's headers or body did not arrive within the slow-client deadlines; the socket closes",
    409: "conflicts with a run or version already there",
    413: "request body over the size limit (or, for fix and check, the code in it)",
    422: "invalid request (the detail lists each field)",
    429: "queue full, or this client already holds its share of the check lane; see Retry-After",
    499: "the client closed the connection before the answer (a fix stops its model rounds)",
    500: "internal error, with an incident id",
    503: "the model is not loaded yet; see Retry-After",
    504: "over the time limit (a fix returns the attempts made so far in detail)",
}

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}


def error_responses(*statuses: int, admin: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error statuses a route can answer, all ``{"error": ...}`` bodies.
    Every route may answer 408 (the slow-client deadlines of ``dreamfix serve``, service/api/slowclient.py),
    413 (``BodyLimitMiddleware`` caps every request's body) and 500; admin routes 401 and 403."""
    codes = sorted({*statuses, 408, 413, 500, *((401, 403) if admin else ())})
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": ErrorBody, "description": STATUS_TEXT[code]}
        if code in (429, 503):
            entry["headers"] = _RETRY_AFTER
        elif code == 401:
            entry["headers"] = _WWW_AUTHENTICATE
        out[code] = entry
    return out


def body_errors(*statuses: int, admin: bool = True) -> dict[int | str, dict[str, Any]]:
    """``error_responses`` for a route with a JSON body: it may also answer 400 (undecodable) and 422
    (invalid, or not JSON)."""
    return error_responses(400, 422, *statuses, admin=admin)


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
    return error_response(422, f"invalid request: {where}: {first['msg']}", errors)


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _on_queue_full(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFull)
    return error_response(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


async def _on_conflict(_: Request, exc: Exception) -> JSONResponse:
    return error_response(409, str(exc))


async def _on_unavailable(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceUnavailable)
    return error_response(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


def install_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(QueueFull, _on_queue_full)
    app.add_exception_handler(RunConflict, _on_conflict)
    app.add_exception_handler(ServiceUnavailable, _on_unavailable)
