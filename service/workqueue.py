"""A bounded work queue that keeps model work off the event loop.

Requests beyond the queue's capacity are refused at once (the API turns that into 429 + Retry-After) instead
of piling up until every client times out. Workers are plain threads: the model and rustc release the GIL.

Admission is honest: the queue measures how long a job takes (an exponentially weighted mean of the jobs it
ran, and the recent jobs' times). A job whose wait (and, with
``count_own_time``, its own run) would pass its deadline is refused up front. That admission estimate is
deliberately pessimistic, because an accepted job that then times out is the worst answer (a 504 after the
client waited): it plays the queue forward worker by worker — each running job finishes after what remains
of the estimate (at least a quarter of it, since a job past its estimate is late, not done), then each
waiting job takes the estimate — with a high quantile of the recent job times, not their mean, as the
estimate (jobs slow down when the machine gets busy; the mean lags behind). A cancelled job leaves the
queue (and its depth) at once, and a job whose deadline passed while it waited is dropped unrun
(``DeadlineExceeded``). Retry-After comes from the same plan: the seconds until a job submitted now would
start (``planned_finish_s`` less its own ``admission_job_s``), capped at ``retry_cap_s``.

A queue with ``per_owner`` set gives each owner (the API passes the client's address) at most that many jobs
queued or running at once; one more is refused (``QueueFull``) while other owners' jobs still get in, so one
client cannot take the whole lane.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

#: The longest Retry-After the service ever announces.
RETRY_AFTER_CAP_S = 120
#: Admission's job-time estimate: this quantile of the last ``_RECENT`` measured jobs (or the mean, if larger).
ADMIT_QUANTILE = 0.9
_RECENT = 16
#: Until this many jobs were measured, admission plans each job *ahead* with ``COLD_FACTOR`` times the estimate
#: (``WorkQueue._ahead_job_s``; at least the configured guess times it): one or two
#: jobs (typically a warm-up on an idle machine) say little about the time a job takes once the machine is
#: busy (bench_faults: 1.5 s idle, 7 s beside a rustc storm, a factor of 4.7).
COLD_JOBS = 4
COLD_FACTOR = 4.0


class QueueFull(Exception):
    def __init__(self, retry_after_s: int, reason: str = "work queue is full") -> None:
        super().__init__(f"{reason}; retry after {retry_after_s}s")
        self.retry_after_s = retry_after_s


class DeadlineExceeded(Exception):
    """The job's deadline passed before a worker reached it; it never ran."""


class WorkQueue:
    def __init__(
        self,
        capacity: int,
        workers: int = 1,
        name: str = "work",
        retry_cap_s: int = RETRY_AFTER_CAP_S,
        initial_job_s: float = 5.0,
        count_own_time: bool = False,
        per_owner: int | None = None,
    ) -> None:
        #: Admission counts the job's own expected time (the measured mean) as well as the wait ahead: for
        #: queues whose jobs cost about the same (model fixes); a lane of very uneven jobs (checks) leaves it off.
        self.count_own_time = count_own_time
        self.capacity = capacity
        self.name = name
        self.workers = max(1, workers)
        #: The most jobs (queued + running) one owner may hold; None: no per-owner limit.
        self.per_owner = max(1, per_owner) if per_owner is not None else None
        self._owners: dict[str, int] = {}
        self.retry_cap_s = max(1, retry_cap_s)
        self._q: queue.Queue[tuple[Future[Any], Callable[[], Any], float | None, float] | None] = queue.Queue(
            maxsize=capacity
        )
        self._waiting: set[Future[Any]] = set()
        #: Called with the seconds a job waited before a worker took it (the daemon's metrics).
        self.on_wait: Callable[[float], None] | None = None
        self._busy = 0
        self._started: dict[int, float] = {}  # worker thread id -> when its running job started
        self._lock = threading.Lock()
        self._initial_s = initial_job_s
        self._ewma_s: float | None = None  # measured seconds per job; None until one has run
        self._recent: deque[float] = deque(maxlen=_RECENT)  # the last measured job times
        self._threads = [
            threading.Thread(target=self._worker, name=f"{name}-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def depth(self) -> int:
        """Jobs waiting (not cancelled) plus jobs running."""
        with self._lock:
            return len(self._waiting) + self._busy

    @property
    def seconds_per_job(self) -> float:
        """The measured mean job time (the configured guess until a job has run)."""
        return self._ewma_s if self._ewma_s is not None else self._initial_s

    @property
    def admission_job_s(self) -> float:
        """A job's own time as admission plans it: the recent jobs' ``ADMIT_QUANTILE`` quantile, or their mean
        if larger (the configured guess until a job has run)."""
        with self._lock:
            recent = sorted(self._recent)
        if not recent:
            return self.seconds_per_job
        q = recent[min(len(recent) - 1, math.ceil(ADMIT_QUANTILE * len(recent)) - 1)]
        return max(q, self.seconds_per_job)

    def _ahead_job_s(self) -> float:
        """What each job ahead (running or waiting) is planned to take: ``admission_job_s`` once ``COLD_JOBS``
        jobs were measured; before that ``COLD_FACTOR`` × the larger of it and the configured guess. A job
        measured on an idle machine says little about one beside others (bench_faults: a warm-up of ~1 s,
        then 9 s per job under the fix mix; a second job planned behind the first on the warm-up's figure
        answered 504). The job's own time is not scaled: scaling it refused every request whose deadline was
        under 4 × the first measurement — on an idle server too, and for good, since nothing refused is
        measured (bench_faults: one model fix accepted in 20 s)."""
        est = self.admission_job_s
        with self._lock:
            cold = len(self._recent) < COLD_JOBS
        return max(est, self._initial_s) * COLD_FACTOR if cold else est

    def planned_finish_s(self) -> float:
        """Seconds from now until a job submitted now would finish, playing the queue forward: running jobs
        end after what remains of ``_ahead_job_s`` (at least a quarter of it), the waiting ones, each that
        long, are dealt to the earliest free worker, then this job runs (``admission_job_s``)."""
        ahead, own = self._ahead_job_s(), self.admission_job_s
        now = time.monotonic()
        with self._lock:
            running = list(self._started.values())
            waiting = len(self._waiting)
        free = sorted(
            [max(ahead - (now - t0), ahead / 4) for t0 in running] + [0.0] * (self.workers - len(running))
        )
        for _ in range(waiting):
            free[0] += ahead
            free.sort()
        return free[0] + own

    def retry_after(self) -> int:
        """Seconds a refused client should wait: until a job submitted now would start by admission's plan
        (``planned_finish_s`` less the job's own ``admission_job_s``), at least 1, at most ``retry_cap_s``."""
        start = self.planned_finish_s() - self.admission_job_s
        return max(1, min(self.retry_cap_s, math.ceil(start)))

    def owner_jobs(self, owner: str) -> int:
        """Jobs of ``owner`` queued or running."""
        with self._lock:
            return self._owners.get(owner, 0)

    def submit(
        self,
        fn: Callable[[], Any],
        deadline: float | None = None,
        owner: str | None = None,
        longer: Callable[[float], str] | None = None,
    ) -> Future[Any]:
        """Queue ``fn``. ``deadline`` (a ``time.monotonic()`` instant): refused when the planned wait (and, with
        ``count_own_time``, the job's own time: ``planned_finish_s``) would pass it — so an accepted job is
        one that can finish in time. Jobs ahead are planned with ``_ahead_job_s`` (pessimistic while cold).
        Before a job was measured only the wait behind other jobs counts: an idle cold queue takes any job,
        but the burst that meets a fresh server queues only as deep as the configured guess allows
        (bench_faults: two simultaneous first requests were both accepted, the second waited 8.7 s behind
        the first and missed its 10 s). An accepted job is dropped unrun if a worker reaches it too late.
        ``longer``: how such a refusal tells the client to ask for more time, given the seconds from now the
        job would need (the API names its request field and the seconds; without it, a job too long for its
        deadline says "ask with a longer timeout").
        ``owner``: refused when that owner already holds ``per_owner`` jobs (queued or running)."""
        if deadline is not None:
            left = deadline - time.monotonic()
            job = self.admission_job_s
            own_time = self.count_own_time and self._ewma_s is not None  # measured: it counts
            if own_time and job >= left:
                more = longer(job) if longer is not None else "ask with a longer timeout"
                raise QueueFull(
                    self.retry_after(),
                    f"one job takes up to about {job:.0f} s here, more than the request's "
                    f"deadline leaves ({max(0.0, left):.0f} s): {more}",
                )
            wait = self.planned_finish_s() - (0.0 if own_time else job)  # the wait ahead (+ its own time)
            if self.depth > 0 and wait >= left:
                reason = "the queue ahead would outlast the request's deadline"
                if longer is not None:
                    reason += f" ({max(0.0, left):.0f} s left, about {wait:.0f} s needed): {longer(wait)}"
                raise QueueFull(self.retry_after(), reason)
        limited = owner is not None and self.per_owner is not None
        fut: Future[Any] = Future()
        with self._lock:
            held = self._owners.get(owner, 0) if owner is not None else 0
            refused = self.per_owner is not None and owner is not None and held >= self.per_owner
            if not refused:
                self._waiting.add(fut)
                if limited:
                    assert owner is not None
                    self._owners[owner] = held + 1
        if refused:
            raise QueueFull(
                self.retry_after(),
                f"this client already has {held} job(s) in the {self.name} lane, its share of it "
                f"(at most {self.per_owner} per client)",
            )
        try:
            self._q.put_nowait((fut, fn, deadline, time.monotonic()))
        except queue.Full:
            self._forget(fut)
            if limited:
                assert owner is not None
                self._release(owner)
            raise QueueFull(self.retry_after()) from None
        fut.add_done_callback(self._forget)
        if limited:
            assert owner is not None
            fut.add_done_callback(lambda _: self._release(owner))
        return fut

    def _forget(self, fut: Future[Any]) -> None:
        with self._lock:
            self._waiting.discard(fut)

    def _release(self, owner: str) -> None:
        with self._lock:
            left = self._owners.get(owner, 0) - 1
            if left > 0:
                self._owners[owner] = left
            else:
                self._owners.pop(owner, None)

    def _worker(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fut, fn, deadline, queued_at = item
            with self._lock:
                self._waiting.discard(fut)
                if not fut.set_running_or_notify_cancel():
                    continue  # cancelled while waiting: already out of the depth
                self._busy += 1
                self._started[threading.get_ident()] = time.monotonic()
            if self.on_wait is not None:
                self.on_wait(time.monotonic() - queued_at)
            start = time.monotonic()
            ran, ok = False, False
            value: Any = None
            try:
                if deadline is not None and start >= deadline:
                    value = DeadlineExceeded("the request's deadline passed while it waited")
                else:
                    ran = True
                    value, ok = fn(), True
            except BaseException as exc:  # delivered to the waiting request
                value = exc
            took = time.monotonic() - start
            # The worker is free and the job measured *before* its caller hears back: a client that sends its
            # next request at once must not find the queue still counting this one (a sequential client's
            # check was refused as if behind a running job).
            with self._lock:
                self._busy -= 1
                self._started.pop(threading.get_ident(), None)
                if ran:
                    prev = self._ewma_s
                    self._ewma_s = took if prev is None else 0.7 * prev + 0.3 * took
                    self._recent.append(took)
            if ok:
                fut.set_result(value)
            else:
                assert isinstance(value, BaseException)
                fut.set_exception(value)

    def shutdown(self) -> None:
        for _ in self._threads:
            try:
                self._q.put(None, timeout=1)
            except queue.Full:
                log.warning("work queue still full at shutdown; workers exit when idle")
