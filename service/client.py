"""HTTP client side of ``dreamfix fix --server``: a POST that waits out a busy server.

A server that sheds load answers 429 (queue full) or 503 (not ready, draining) with ``Retry-After``. The client
honours that header (seconds or an HTTP date), falls back to capped exponential backoff without it, and gives
up after a bounded number of tries and a bounded total wait, so a script never hangs on a server that stays busy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 5  # requests in all, the first one included
    base_s: float = 1.0  # backoff without Retry-After: base, 2·base, 4·base, ...
    max_wait_s: float = 30.0  # cap on any one wait, Retry-After included
    max_total_s: float = 120.0  # cap on the sum of the waits


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date); None when absent or unparsable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def wait_before_retry(response: httpx.Response, attempt: int, policy: RetryPolicy) -> float:
    """Seconds to wait after the ``attempt``-th (1-based) busy answer."""
    hinted = retry_after_seconds(response.headers.get("Retry-After"))
    wait = hinted if hinted is not None else policy.base_s * 2 ** (attempt - 1)
    return min(wait, policy.max_wait_s)


def post_with_retry(
    url: str,
    payload: dict[str, Any],
    *,
    timeout: float,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notify: Callable[[str], None] | None = None,
) -> httpx.Response:
    """POST ``payload``; on 429/503 wait (Retry-After, else backoff) and try again within ``policy``.
    Returns the last response (a 429/503 one when every try was busy). Transport errors propagate."""
    policy = policy or RetryPolicy()
    waited = 0.0
    with httpx.Client(timeout=timeout) as client:
        for attempt in range(1, policy.tries + 1):
            response = client.post(url, json=payload)
            if response.status_code not in RETRY_STATUSES or attempt == policy.tries:
                return response
            wait = wait_before_retry(response, attempt, policy)
            if waited + wait > policy.max_total_s:
                return response
            message = f"server busy ({response.status_code}); retrying in {wait:.1f}s ({attempt}/{policy.tries - 1})"
            (notify or log.info)(message)
            sleep(wait)
            waited += wait
    raise AssertionError("unreachable")  # pragma: no cover
