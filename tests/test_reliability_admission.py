"""Issue 17, admission: suggestion-settled fixes never wait behind model work, cancelled and timed-out jobs
leave the queue and its gauge, Retry-After comes from admission's own plan and is capped, a job past its
deadline stops decoding (``GenerationParams.deadline``) and the 504 carries the attempts made so far — also
when the job is still busy with its last step past the deadline's grace."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.api.app import create_app
from service.app_services import Services
from service.workqueue import COLD_FACTOR, DeadlineExceeded, QueueFull, WorkQueue
from tests.helpers import AUTH, make_settings, wait_ready
from tests.live_server import LiveServer

NEEDS_MUT = 'fn main() {\n    let count = 1;\n    count = 2;\n    println!("{count}");\n}\n'
NEEDS_MODEL = 'fn main() {\n    let total = undefined_helper(3);\n    println!("{total}");\n}\n'


def _block(queue: WorkQueue) -> threading.Event:
    """Occupy every worker until the returned event is set."""
    release = threading.Event()
    for _ in range(queue.workers):
        queue.submit(lambda: release.wait(60))
    deadline = time.monotonic() + 5
    while queue.depth < queue.workers or queue._busy < queue.workers:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return release


def test_cancelled_job_leaves_the_depth_at_once() -> None:
    q = WorkQueue(capacity=4, workers=1, name="t")
    release = _block(q)
    try:
        waiting = q.submit(lambda: "never")
        assert q.depth == 2
        assert waiting.cancel()
        assert q.depth == 1  # the running blocker only
    finally:
        release.set()
        q.shutdown()


def test_retry_after_follows_admissions_plan_and_is_capped() -> None:
    """Retry-After is when a job submitted now would start by admission's plan — the recent jobs' high
    quantile (here 1 s), not their lagging mean (~0.34 s) — times the jobs ahead of it, capped."""
    q = WorkQueue(capacity=20, workers=1, name="t", retry_cap_s=4, initial_job_s=0.01)
    for took in (0.05, 0.05, 0.05, 1.0):
        q.submit(lambda took=took: time.sleep(took)).result()
    est = q.admission_job_s
    assert est == pytest.approx(1.0, abs=0.2) and q.seconds_per_job < 0.45
    release = _block(q)
    try:
        for _ in range(2):
            q.submit(lambda: None)
        # The running blocker's remaining estimate (~1 s) plus two waiting jobs of ~1 s each.
        assert 3 <= q.retry_after() <= math.ceil(3 * est)
        assert q.retry_after() > math.ceil(3 * q.seconds_per_job)  # the mean × jobs ahead said 2
        for _ in range(10):
            q.submit(lambda: None)
        assert q.retry_after() == 4  # capped
        # A request whose deadline the queue ahead would outlast is refused up front, with that Retry-After.
        with pytest.raises(QueueFull) as refused:
            q.submit(lambda: None, deadline=time.monotonic() + 1.0)
        assert refused.value.retry_after_s == 4
    finally:
        release.set()
        q.shutdown()


def test_retry_after_of_an_idle_warm_queue_is_one_second() -> None:
    q = WorkQueue(capacity=4, workers=2, name="t", initial_job_s=0.01)
    try:
        for _ in range(4):
            q.submit(lambda: time.sleep(0.05)).result()
        assert q.retry_after() == 1  # a job submitted now starts at once: the floor of 1 s
    finally:
        q.shutdown()


def test_an_idle_queue_refuses_a_job_that_cannot_finish_before_its_deadline() -> None:
    """Accepted means it can finish in time: with nothing ahead, the job's own measured time still counts."""
    q = WorkQueue(capacity=4, workers=1, name="t", initial_job_s=0.01, count_own_time=True)
    try:
        q.submit(lambda: time.sleep(0.5)).result()  # the measured mean is now ~0.5 s
        assert q.depth == 0
        with pytest.raises(QueueFull) as refused:
            q.submit(lambda: None, deadline=time.monotonic() + 0.2)
        assert "longer timeout" in str(refused.value)
        assert q.submit(lambda: "fits", deadline=time.monotonic() + 5).result(timeout=10) == "fits"
    finally:
        q.shutdown()


def test_admission_plans_with_the_slow_recent_jobs_not_the_lagging_mean() -> None:
    """Jobs that slow down under load (the bench_faults start burst): the mean of 0.05, 0.05, 0.05, 0.6 s
    is ~0.25 s, which would admit a job behind a running one with 0.7 s left; the recent jobs' high quantile
    (0.6 s) plus the running job's remainder says it would finish late, so it is refused up front."""
    q = WorkQueue(capacity=8, workers=1, name="t", initial_job_s=0.01, count_own_time=True)
    try:
        for took in (0.05, 0.05, 0.05, 0.6):
            q.submit(lambda took=took: time.sleep(took)).result()
        assert q.seconds_per_job < 0.35
        assert q.admission_job_s == pytest.approx(0.6, abs=0.1)
        release = _block(q)
        try:
            # Behind one running job: planned finish >= its remainder (>= 0.15 s) + 0.6 s of its own.
            assert q.planned_finish_s() > 0.7
            with pytest.raises(QueueFull, match="outlast"):
                q.submit(lambda: None, deadline=time.monotonic() + 0.7)
            assert q.depth == 1  # the refused job left nothing behind
            late = q.submit(lambda: "fits", deadline=time.monotonic() + 5)
        finally:
            release.set()
        assert late.result(timeout=10) == "fits"
    finally:
        q.shutdown()


def test_a_cold_queue_plans_pessimistically_until_four_jobs_were_measured() -> None:
    """One warm-up on an idle machine says little about a busy one: with fewer than four jobs measured,
    admission plans with four times the measured time, so a job that would fit behind a running one on the
    measured figure is refused while cold and accepted once warm; short jobs against a long deadline queue."""
    q = WorkQueue(capacity=4, workers=1, name="t", initial_job_s=0.01, count_own_time=True)
    try:
        q.submit(lambda: time.sleep(0.3)).result()
        assert q._ahead_job_s() == pytest.approx(4 * q.seconds_per_job)
        assert q.admission_job_s == pytest.approx(q.seconds_per_job)  # its own time: not scaled
        release = _block(q)
        try:
            with pytest.raises(QueueFull):
                q.submit(lambda: None, deadline=time.monotonic() + 1.0)
            assert q.depth == 1
            short = q.submit(lambda: "queued cold", deadline=time.monotonic() + 30)
        finally:
            release.set()
        assert short.result(timeout=10) == "queued cold"
        for _ in range(3):
            q.submit(lambda: time.sleep(0.3)).result()
        assert q.admission_job_s < 0.5  # warm: the measured quantile itself
        release = _block(q)  # the blocker's ~0 s joins the recent jobs; the 0.3 s ones set the quantile
        try:
            queued = q.submit(lambda: "queued warm", deadline=time.monotonic() + 1.0)
        finally:
            release.set()
        assert queued.result(timeout=10) == "queued warm"
    finally:
        q.shutdown()


def test_before_any_job_was_measured_the_burst_behind_the_first_is_planned_with_the_initial_guess() -> None:
    """A fresh server (nothing measured yet) takes its first job whatever its deadline, but a second one
    that would wait behind it is planned with ``initial_job_s`` × COLD_FACTOR: refused when that passes its
    deadline (bench_faults' start burst: two simultaneous first requests, the second answered 504 after 10 s),
    queued when the deadline leaves room."""
    q = WorkQueue(capacity=4, workers=1, name="t", initial_job_s=1.0, count_own_time=True)
    try:
        assert q.seconds_per_job == 1.0 == q.admission_job_s and q._ahead_job_s() == pytest.approx(
            COLD_FACTOR
        )
        release = threading.Event()
        q.submit(lambda: release.wait(60), deadline=time.monotonic() + 0.5)  # idle and cold: it gets in
        try:
            while q._busy < 1:
                time.sleep(0.01)
            with pytest.raises(QueueFull, match="outlast"):
                q.submit(lambda: None, deadline=time.monotonic() + 2.0)
            assert q.depth == 1
            later = q.submit(lambda: "room", deadline=time.monotonic() + 60)
        finally:
            release.set()
        assert later.result(timeout=10) == "room"
    finally:
        q.shutdown()


def test_a_fast_warm_up_does_not_talk_the_cold_plan_of_a_running_job_below_the_configured_guess() -> None:
    """After one quick job (a warm-up on an idle server), a job behind a running one is planned, while cold,
    with the configured guess × COLD_FACTOR for the running job rather than the warm-up's milliseconds × 4;
    the job's own time keeps the measurement (an idle queue still takes short-deadline jobs)."""
    q = WorkQueue(capacity=4, workers=1, name="t", initial_job_s=0.5, count_own_time=True)
    try:
        q.submit(lambda: None).result()
        assert q.admission_job_s < 0.1 and q._ahead_job_s() == pytest.approx(0.5 * COLD_FACTOR)
        idle = q.submit(lambda: "idle", deadline=time.monotonic() + 0.5)
        assert idle.result(timeout=10) == "idle"
        release = _block(q)
        try:
            assert q.planned_finish_s() > 0.5 * COLD_FACTOR - 0.2
            with pytest.raises(QueueFull, match="outlast"):
                q.submit(lambda: None, deadline=time.monotonic() + 1.0)
        finally:
            release.set()
        for _ in range(3):
            q.submit(lambda: None).result()
        release = _block(q)  # warm: the measured milliseconds plan the running job
        try:
            assert q.planned_finish_s() < 0.5
        finally:
            release.set()
    finally:
        q.shutdown()


def test_a_cold_queue_measured_under_load_still_takes_jobs_that_fit_their_deadline() -> None:
    """The first measured job took 0.3 s: a request with a 0.5 s deadline to an idle queue fits and is taken
    (the own time is the measurement, not 4 × it — that refused every such request, and the queue never
    warmed up); one behind a running job is still planned pessimistically and refused."""
    q = WorkQueue(capacity=4, workers=1, name="t", initial_job_s=0.01, count_own_time=True)
    try:
        q.submit(lambda: time.sleep(0.3)).result()
        fits = q.submit(lambda: "fits", deadline=time.monotonic() + 0.5)
        assert fits.result(timeout=10) == "fits"
        release = _block(q)
        try:
            with pytest.raises(QueueFull, match="outlast"):
                q.submit(lambda: None, deadline=time.monotonic() + 0.5)
        finally:
            release.set()
    finally:
        q.shutdown()


def test_a_finished_job_has_left_the_queue_when_its_caller_hears_back() -> None:
    """The worker frees itself and records the job's time before it delivers the result: a client that
    sends its next request at once finds an empty queue (it was counted as still running, and a sequential
    client's next check was refused as if behind it)."""
    q = WorkQueue(capacity=1, workers=1, name="t", initial_job_s=1.0)
    seen: list[tuple[int, int]] = []  # (depth, measured jobs) when the result is delivered
    try:
        for _ in range(3):
            fut = q.submit(lambda: None)
            fut.add_done_callback(lambda _f: seen.append((q.depth, len(q._recent))))
            assert fut.result(timeout=10) is None
    finally:
        q.shutdown()
    assert seen == [(0, 1), (0, 2), (0, 3)]


def test_a_job_whose_deadline_passed_in_the_queue_never_runs() -> None:
    q = WorkQueue(capacity=4, workers=1, name="t", initial_job_s=0.001)  # admitted: its plan says it fits
    release = _block(q)
    ran = threading.Event()
    late = q.submit(ran.set, deadline=time.monotonic() + 0.05)
    time.sleep(0.1)
    release.set()
    with pytest.raises(DeadlineExceeded):
        late.result(timeout=10)
    assert not ran.is_set()
    q.shutdown()


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[httpx.Client, Services]]:
    settings = make_settings(
        tmp_path_factory.mktemp("adm"),
        tiny_model_dir,
        agent={"max_attempts": 8, "max_new_tokens": 96, "suggestions_first": True},
        limits={
            "max_body_bytes": 64 * 1024,
            "max_code_bytes": 16 * 1024,
            "queue_size": 8,
            "request_timeout_s": 2.0,
        },
    )
    services = Services.build(settings)
    with LiveServer(create_app(services)) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        wait_ready(client)
        yield client, services


def test_suggestion_fix_answers_while_the_model_worker_is_busy(live: tuple[httpx.Client, Services]) -> None:
    client, services = live
    release = _block(services.queue)
    try:
        started = time.monotonic()
        r = client.post("/v1/fix", json={"code": NEEDS_MUT}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["fixed"] and "let mut count" in r.json()["code"]
        assert [a["strategy"] for a in r.json()["attempts"]] == ["suggestions"]
        assert time.monotonic() - started < 5
        assert services.queue.depth == 1  # never queued behind the blocker
    finally:
        release.set()


def test_a_timed_out_queued_fix_leaves_the_queue_and_the_gauge(live: tuple[httpx.Client, Services]) -> None:
    client, services = live
    for _ in range(4):  # a warm queue of instant jobs admits the fix behind the blocker, where it times out
        services.queue.submit(lambda: None).result()
    release = _block(services.queue)
    try:
        r = client.post("/v1/fix", json={"code": NEEDS_MODEL}, timeout=30)
        assert r.status_code == 504, r.text
        # It never left the queue: no attempts, and the answer says why the list is empty.
        assert r.json()["detail"] == {"attempts": [], "episode_id": None}
        assert "request time limit" in r.json()["error"] and "never ran" in r.json()["error"]
        assert services.queue.depth == 1
        gauge = [
            ln for ln in client.get("/metrics").text.splitlines() if ln.startswith("dreamfix_queue_depth")
        ]
        assert gauge and float(gauge[0].split()[-1]) == 1.0
    finally:
        release.set()


def test_the_deadline_stops_the_rounds_and_the_answer_carries_the_attempts_so_far(
    live: tuple[httpx.Client, Services],
) -> None:
    """8 attempts asked with a 2 s deadline: the loop stops in time — before a round that cannot end by the
    deadline (``DeadlineStop``: a 200, not fixed, with the rounds made) or, when a round is cut at the
    deadline, with a 504 carrying the attempts so far — and never runs the 8 rounds."""
    client, services = live
    # The blockers of the tests above were measured as multi-second jobs, which (rightly) makes admission
    # refuse a 2 s request; this test needs a queue with no such history.
    services.queue.shutdown()
    services.queue = WorkQueue(8, 1, "fix", count_own_time=True, initial_job_s=0.1)
    started = time.monotonic()
    r = client.post("/v1/fix", json={"code": NEEDS_MODEL, "max_attempts": 8}, timeout=60)
    took = time.monotonic() - started
    assert took < 2.0 + 1.5  # the job stopped itself by the deadline (plus one check), not after 8 rounds
    if r.status_code == 200:
        body = r.json()
        assert not body["fixed"] and 1 <= len(body["attempts"]) < 8, body
        assert body["episode_id"] is not None
    else:
        assert r.status_code == 504, r.text
        detail = r.json()["detail"]
        assert detail["attempts"], "the attempts made before the deadline are returned"
        assert detail["episode_id"] is not None
    # The answer goes out at the deadline; the worker leaves the job once its current step returns (under load
    # that can be a moment after the 504), and it must not stay on the worker.
    drained_by = time.monotonic() + 5.0
    while services.queue.depth and time.monotonic() < drained_by:
        time.sleep(0.05)
    assert services.queue.depth == 0


def test_a_fix_still_busy_past_its_deadline_answers_504_with_the_attempts_so_far(
    live: tuple[httpx.Client, Services],
) -> None:
    """The job stops its rounds at the deadline, then must save its episode; another writer holds SQLite's
    write lock meanwhile, so the job is still busy when the deadline's grace runs out. The 504 then carries
    the attempts the job made (not an empty list), and no episode id yet; the episode is saved once the
    lock is released."""
    client, services = live
    services.queue.shutdown()
    services.queue = WorkQueue(8, 1, "fix", count_own_time=True)  # no multi-second history (see above)
    database = services.db.engine.url.database
    assert database is not None
    before = client.get("/admin/episodes", params={"origin": "client", "limit": 1}, headers=AUTH).json()
    writer = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a real second writer: the episode's INSERT waits for it
        started = time.monotonic()
        r = client.post("/v1/fix", json={"code": NEEDS_MODEL, "max_attempts": 8}, timeout=60)
        took = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert r.status_code == 504, r.text
    body = r.json()
    assert body["detail"]["attempts"], "the attempts made before the deadline are returned"
    assert all(a["strategy"] and a["verdict"] for a in body["detail"]["attempts"])
    assert body["detail"]["episode_id"] is None
    assert "attempts made so far" in body["error"]
    assert took < 2.0 + 0.5 + 1.5  # the deadline, its grace, slack: not whenever the job ends
    drained_by = time.monotonic() + 30
    while services.queue.depth and time.monotonic() < drained_by:
        time.sleep(0.05)
    assert services.queue.depth == 0
    after = client.get("/admin/episodes", params={"origin": "client", "limit": 1}, headers=AUTH).json()
    assert after["total"] == before["total"] + 1  # the job saved its episode once the writer let go
