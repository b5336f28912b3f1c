"""The public API: ``POST /v1/check`` (the sandboxed rustc) and ``POST /v1/fix`` (the fix loop)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import ServicesDep
from service.api.errors import ServiceUnavailable, body_errors, error_response
from service.api.schemas import CheckRequest, CheckResponse, FixRequest, FixResponse
from service.app_services import Services
from service.serving import FixProgress
from service.workqueue import DeadlineExceeded

router = APIRouter(tags=["public"])


def _check_code_size(services: Services, code: str) -> None:
    limit = services.settings.limits.max_code_bytes
    size = len(code.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise HTTPException(413, f"code is {size} bytes; the limit is {limit}")


def request_timeout(services: Services, body: FixRequest) -> float:
    """The seconds this fix may take: its ``timeout_s``, else ``limits.request_timeout_s``. A ``timeout_s``
    over ``limits.max_request_timeout_s`` is a 422 (the schema's own bounds are checked by pydantic)."""
    limits = services.settings.limits
    if body.timeout_s is None:
        return limits.request_timeout_s
    ceiling = limits.max_request_timeout_s
    if body.timeout_s > ceiling:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "timeout_s"),
                    "msg": f"Input should be less than or equal to {ceiling:g} "
                    "(the server's limits.max_request_timeout_s)",
                    "type": "less_than_equal",
                    "input": body.timeout_s,
                }
            ]
        )
    return body.timeout_s


def _client(request: Request) -> str | None:
    """The client's address (the peer of the connection; the service trusts no proxy header)."""
    return request.client.host if request.client is not None else None


async def _in_check_lane(
    services: Services,
    fn: Callable[[], Any],
    deadline: float,
    client: str | None,
    limit_s: float | None = None,
) -> Any:
    """Run ``fn`` in the check lane (bounded: 429 when full, or when ``client`` already holds its share of
    it) within ``deadline`` (``limit_s`` seconds, default ``limits.check_timeout_s``), waiting included."""
    lane = services.check_queue
    if lane is None:
        return await run_in_threadpool(fn)
    future = lane.submit(fn, deadline=deadline, owner=client)
    try:
        return await asyncio.wait_for(
            asyncio.wrap_future(future), timeout=max(0.0, deadline - time.monotonic())
        )
    except (TimeoutError, DeadlineExceeded):
        future.cancel()
        limit = services.settings.limits.check_timeout_s if limit_s is None else limit_s
        raise HTTPException(
            504, f"the check took longer than its {limit:g}s limit (waiting included)"
        ) from None


@router.post("/v1/check", response_model=CheckResponse, responses=body_errors(429, 504, admin=False))
async def check(body: CheckRequest, request: Request, services: ServicesDep) -> dict[str, Any]:
    _check_code_size(services, body.code)
    deadline = time.monotonic() + services.settings.limits.check_timeout_s
    result: dict[str, Any] = await _in_check_lane(
        services, lambda: services.serving.check(body), deadline, _client(request)
    )
    return result


@router.post("/v1/fix", response_model=FixResponse, responses=body_errors(429, 499, 503, 504, admin=False))
async def fix(body: FixRequest, request: Request, services: ServicesDep) -> Any:
    limits = services.settings.limits
    timeout = request_timeout(services, body)
    _check_code_size(services, body.code)
    if body.diagnostics and len(body.diagnostics) > limits.max_code_bytes:
        raise HTTPException(413, "diagnostics text over the size limit")
    serving = services.serving
    if not serving.model_ready:
        raise ServiceUnavailable(serving.model_error or "the model is still loading")
    deadline = time.monotonic() + timeout
    # The fast lane: what the check and rustc's suggestions settle never waits behind model work.
    fast_limit = min(timeout, limits.check_timeout_s)
    quick = await _in_check_lane(
        services,
        lambda: serving.fix_without_model(body),
        min(deadline, time.monotonic() + fast_limit),
        _client(request),
        fast_limit,
    )
    if quick is not None:
        services.metrics.observe_fix(quick["fixed"], quick["verified"])
        return quick
    result = await _run_model_job(services, body, request, deadline, timeout)
    if isinstance(result, JSONResponse):
        return result
    if not result["fixed"] and time.monotonic() >= deadline:
        return _timed_out(timeout, result["attempts"], result.get("episode_id"))
    services.metrics.observe_fix(result["fixed"], result["verified"])
    return result


def _timed_out(
    limit: float, attempts: list[Any], episode_id: int | None = None, note: str | None = None
) -> JSONResponse:
    """The 504 of a fix past its deadline (``limit``: the request's seconds, its ``timeout_s`` or the default)."""
    detail = {"attempts": jsonable_encoder(attempts), "episode_id": episode_id}
    message = f"the fix took longer than the request time limit ({limit:g}s)"
    return error_response(504, f"{message}: {note}" if note else message, detail)


#: The 504 of a fix that never ran: its empty attempts are the whole story.
NEVER_RAN = "it waited in the model queue past its deadline and never ran, so no attempt was made"


def _longer(services: Services, deadline: float, timeout: float) -> Callable[[float], str]:
    """Admission's refusal of a deadline too short for the job: the ``timeout_s`` that would be accepted
    now (the seconds the job needs from now, plus what this request already spent), or that none would."""
    ceiling = services.settings.limits.max_request_timeout_s

    def hint(needed_s: float) -> str:
        spent = max(0.0, timeout - (deadline - time.monotonic()))
        at_least = math.floor(needed_s + spent) + 1
        if at_least > ceiling:
            return f"more than the longest timeout_s a request may ask ({ceiling:g} s); retry later"
        return f"ask with a longer timeout_s (at least {at_least} s; at most {ceiling:g} s)"

    return hint


async def _run_model_job(
    services: Services, body: FixRequest, request: Request, deadline: float, timeout: float
) -> dict[str, Any] | JSONResponse:
    """Queue the model job with the request's deadline (``timeout`` seconds after it started); stop it when
    the client goes away. Past the deadline (and a grace for its last step) the answer is a 504 with the
    attempts the job made so far."""
    gone = threading.Event()
    progress = FixProgress()
    future = services.queue.submit(
        lambda: services.serving.fix(body, deadline=deadline, should_stop=gone.is_set, progress=progress),
        deadline=deadline,
        longer=_longer(services, deadline, timeout),
    )
    services.metrics.queue_depth.set(services.queue.depth)
    waiter = asyncio.wrap_future(future)
    # The job stops itself at the deadline and answers with its attempts; the grace covers a last check.
    grace = min(5.0, timeout / 4)
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=0.2)
            if done:
                break
            if await request.is_disconnected():
                gone.set()
                future.cancel()
                return error_response(499, "the client closed the connection")
            if time.monotonic() >= deadline + grace:
                gone.set()
                if future.cancel():
                    return _timed_out(timeout, [], note=NEVER_RAN)
                # Still running its last step (a check, saving the episode): what it made so far.
                note = "the attempts made so far are in detail" + (
                    "; the job is finishing its last step, its episode is recorded when it ends"
                    if progress.episode_id is None
                    else ""
                )
                return _timed_out(timeout, progress.attempts_out(), progress.episode_id, note=note)
    finally:
        services.metrics.queue_depth.set(services.queue.depth)
    try:
        return waiter.result()
    except DeadlineExceeded:
        return _timed_out(timeout, [], note=NEVER_RAN)
