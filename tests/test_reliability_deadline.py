"""Issue 13 item 4, budgets the server enforces: a fix request states its deadline (``timeout_s``, at most
``limits.max_request_timeout_s``) or inherits ``limits.request_timeout_s``; admission, the loop's generation
deadline and the 504 all use it. A request refused for a deadline too short is told which ``timeout_s``
would do; one with a long enough ``timeout_s`` is accepted where the default is refused. At the deadline the
running generation stops, no further round starts, and the 504 carries the attempts made."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.loop import DeadlineStop
from service.api.app import create_app
from service.app_services import Services
from service.workqueue import QueueFull, WorkQueue
from tests.helpers import make_settings, wait_ready
from tests.live_server import LiveServer

NEEDS_MODEL = 'fn main() {\n    let total = undefined_helper(3);\n    println!("{total}");\n}\n'
DEFAULT_S = 4.0
CEILING_S = 60.0


def test_the_loop_does_not_start_a_round_that_cannot_end_before_the_deadline() -> None:
    """``DeadlineStop`` (asked before every model round): the first round always runs; then a round is as long
    as the longest so far, and one that would end past the deadline is not started — the request answers on
    time with its attempts instead of a 504 for a round cut at the deadline."""
    now = [100.0]
    stop = DeadlineStop(deadline=110.0, clock=lambda: now[0])
    assert not stop() and stop.reason is None  # round 1 at t=100, nothing measured
    now[0] = 104.0  # round 1 took 4 s; round 2 would end at 108 < 110
    assert not stop()
    now[0] = 107.0  # round 2 took 3 s; the longest (4 s) would end at 111 > 110
    assert stop() and stop.reason == "no time for another round"
    late = DeadlineStop(deadline=10.0, clock=lambda: 10.0)
    assert late() and late.reason == "deadline"
    gone = DeadlineStop(deadline=None, also=lambda: True, clock=lambda: 0.0)
    assert gone() and gone.reason == "asked"
    endless = DeadlineStop(deadline=None, clock=lambda: now[0])
    for t in (0.0, 500.0, 5000.0):
        now[0] = t
        assert not endless()


def test_a_refusal_for_a_short_deadline_says_how_much_time_the_job_needs() -> None:
    """The queue's own wording without a hint, and the caller's hint (given the seconds needed from now)
    for both refusals: one job longer than the deadline, and a queue ahead that would outlast it."""
    q = WorkQueue(capacity=4, workers=1, name="t", initial_job_s=0.01, count_own_time=True)
    needed: list[float] = []

    def longer(seconds: float) -> str:
        needed.append(seconds)
        return f"ask for {seconds:.1f} s"

    try:
        for _ in range(4):  # warm: a job is planned as its measured ~0.3 s
            q.submit(lambda: time.sleep(0.3)).result()
        with pytest.raises(QueueFull, match="ask with a longer timeout"):
            q.submit(lambda: None, deadline=time.monotonic() + 0.2)
        with pytest.raises(QueueFull, match=r"ask for 0\.\d s") as refused:
            q.submit(lambda: None, deadline=time.monotonic() + 0.2, longer=longer)
        assert needed[-1] == pytest.approx(q.admission_job_s) and refused.value.retry_after_s >= 1
        release = threading.Event()
        q.submit(lambda: release.wait(30))
        try:
            # One job running: the plan is its remainder (~0.3 s) plus this job's own ~0.3 s, past 0.5 s.
            with pytest.raises(QueueFull, match=r"outlast.*ask for") as refused:
                q.submit(lambda: None, deadline=time.monotonic() + 0.5, longer=longer)
            assert needed[-1] > q.admission_job_s
        finally:
            release.set()
    finally:
        q.shutdown()


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[httpx.Client, Services]]:
    settings = make_settings(
        tmp_path_factory.mktemp("deadline"),
        tiny_model_dir,
        agent={"max_attempts": 8, "max_new_tokens": 96, "suggestions_first": True},
        limits={
            "max_body_bytes": 64 * 1024,
            "max_code_bytes": 16 * 1024,
            "queue_size": 8,
            "request_timeout_s": DEFAULT_S,
            "max_request_timeout_s": CEILING_S,
        },
    )
    services = Services.build(settings)
    with LiveServer(create_app(services)) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        wait_ready(client)
        yield client, services


def _drained(queue: WorkQueue, within_s: float = 10.0) -> bool:
    """The queue is empty within ``within_s`` (a worker leaves a job a moment after its answer went out)."""
    until = time.monotonic() + within_s
    while queue.depth and time.monotonic() < until:
        time.sleep(0.05)
    return queue.depth == 0


def _fresh_queue(services: Services) -> WorkQueue:
    """A fix queue with no history (each test measures what it needs)."""
    services.queue.shutdown()
    services.queue = WorkQueue(8, 1, "fix", count_own_time=True)
    return services.queue


def test_the_openapi_schema_states_timeout_s_and_its_configured_ceiling(
    live: tuple[httpx.Client, Services],
) -> None:
    client, _ = live
    spec = client.get("/openapi.json").json()
    field = spec["components"]["schemas"]["FixRequest"]["properties"]["timeout_s"]
    number = next(v for v in field["anyOf"] if v.get("type") == "number")
    assert number["exclusiveMinimum"] == 0 and number["maximum"] == CEILING_S
    assert {"type": "null"} in field["anyOf"] and field.get("default") is None
    assert "request_timeout_s" in field["description"]


@pytest.mark.parametrize(
    ("timeout_s", "says"),
    [
        (CEILING_S + 1, f"less than or equal to {CEILING_S:g}"),
        (1e9, f"less than or equal to {CEILING_S:g}"),
        (0, "greater than 0"),
        (-5, "greater than 0"),
        ("30", "valid number"),
        (True, "valid number"),
        ([30], "valid number"),
    ],
)
def test_a_timeout_s_out_of_bounds_or_of_the_wrong_type_is_a_422(
    live: tuple[httpx.Client, Services], timeout_s: Any, says: str
) -> None:
    client, services = live
    r = client.post("/v1/fix", json={"code": NEEDS_MODEL, "timeout_s": timeout_s})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("invalid request: timeout_s: ") and says in r.json()["error"]
    assert r.json()["detail"][0]["loc"] == ["body", "timeout_s"]
    assert services.queue.depth == 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e400"])
def test_a_timeout_s_that_is_not_finite_is_a_422(live: tuple[httpx.Client, Services], literal: str) -> None:
    client, _ = live
    body = json.dumps({"code": NEEDS_MODEL})[:-1] + f', "timeout_s": {literal}}}'
    r = client.post("/v1/fix", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "timeout_s" in r.json()["error"] and "finite" in r.json()["error"]


def test_a_long_timeout_s_is_admitted_where_the_default_deadline_is_refused(
    live: tuple[httpx.Client, Services],
) -> None:
    """One measured job of 4.5 s: more than the default 4 s deadline leaves, so the default request is
    refused with the ``timeout_s`` that would do; the same request with a long ``timeout_s`` is accepted
    and answered."""
    client, services = live
    queue = _fresh_queue(services)
    queue.submit(lambda: time.sleep(4.5)).result()
    assert queue.admission_job_s > DEFAULT_S
    refused = client.post("/v1/fix", json={"code": NEEDS_MODEL, "max_attempts": 1})
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    message = refused.json()["error"]
    found = re.search(r"ask with a longer timeout_s \(at least (\d+) s; at most 60 s\)", message)
    assert found, message
    assert DEFAULT_S < int(found.group(1)) <= CEILING_S
    # No timeout_s a request may ask is long enough: the answer says so rather than naming one. (The number
    # above counts the time the request spent before admission too: its first check ran rustc.)
    limits = services.settings.limits
    limits.max_request_timeout_s = float(math.floor(queue.admission_job_s))  # the job alone needs more
    try:
        r = client.post("/v1/fix", json={"code": NEEDS_MODEL, "max_attempts": 1})
        assert (
            r.status_code == 429 and "more than the longest timeout_s a request may ask" in r.json()["error"]
        )
    finally:
        limits.max_request_timeout_s = CEILING_S
    accepted = client.post("/v1/fix", json={"code": NEEDS_MODEL, "max_attempts": 1, "timeout_s": 30})
    assert accepted.status_code == 200, accepted.text
    assert [a["strategy"] for a in accepted.json()["attempts"]][-1].startswith("model")
    assert _drained(queue)


def test_timeout_s_sets_the_generation_deadline_the_loop_stops_and_the_504_says_so(
    live: tuple[httpx.Client, Services],
) -> None:
    """``timeout_s`` 1.6 (the default is 4): each forward of the model is slowed by 0.12 s, so the deadline
    passes in the middle of the first reply (96 new tokens). Decoding stops there (``stopped_by == "deadline"``), that
    reply is recorded as the one attempt, no further round (nor a continuation of the cut reply) starts,
    and the 504 names the request's own limit and carries the attempt."""
    client, services = live
    queue = _fresh_queue(services)
    runtime = services.serving.runtime
    assert runtime is not None
    calls: list[tuple[float, float | None, list[str]]] = []
    real_generate = runtime.generate

    def generate(prompts: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        out = real_generate(prompts, params, *args, **kwargs)
        calls.append((started, params.deadline, [g.stopped_by for g in out]))
        return out

    hook = runtime.model.register_forward_pre_hook(lambda *_: time.sleep(0.12))
    runtime.generate = generate  # type: ignore[method-assign]
    try:
        started = time.monotonic()
        r = client.post("/v1/fix", json={"code": NEEDS_MODEL, "max_attempts": 8, "timeout_s": 1.6})
        took = time.monotonic() - started
        drained = _drained(queue)
    finally:
        hook.remove()
        del runtime.generate
    assert r.status_code == 504, r.text
    assert "request time limit (1.6s)" in r.json()["error"]
    assert took < DEFAULT_S, "answered at its own deadline, not the default one"
    assert len(r.json()["detail"]["attempts"]) == 1
    assert r.json()["detail"]["attempts"][0]["strategy"].startswith("model")
    assert len(calls) == 1, calls  # one generation, cut by the deadline; nothing after it
    (began, deadline, stopped_by) = calls[0]
    assert deadline is not None and began < deadline and stopped_by == ["deadline"]
    assert drained
