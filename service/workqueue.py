"""A bounded work queue that keeps model work off the event loop.

Requests beyond the queue's capacity are refused at once (the API turns that into 429 + Retry-After) instead
of piling up until every client times out. Workers are plain threads: the model and rustc release the GIL.

Admission is honest: the queue measures how long a job takes (an exponentially weighted mean of the jobs it
ran), and Retry-After is that mean times the jobs ahead per worker, capped. A job whose wait alone would eat
its deadline is refused up front; a cancelled job leaves the queue (and its depth) at once, and a job whose
deadline passed while it waited is dropped unrun (``DeadlineExceeded``).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

#: The longest Retry-After the service ever announces.
RETRY_AFTER_CAP_S = 120


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
    ) -> None:
        #: Admission counts the job's own expected time (the measured mean) as well as the wait ahead: for
        #: queues whose jobs cost about the same (model fixes); a lane of very uneven jobs (checks) leaves it off.
        self.count_own_time = count_own_time
        self.capacity = capacity
        self.workers = max(1, workers)
        self.retry_cap_s = max(1, retry_cap_s)
        self._q: queue.Queue[tuple[Future[Any], Callable[[], Any], float | None, float] | None] = queue.Queue(
            maxsize=capacity
        )
        self._waiting: set[Future[Any]] = set()
        #: Called with the seconds a job waited before a worker took it (the daemon's metrics).
        self.on_wait: Callable[[float], None] | None = None
        self._busy = 0
        self._lock = threading.Lock()
        self._initial_s = initial_job_s
        self._ewma_s: float | None = None  # measured seconds per job; None until one has run
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

    def estimated_wait_s(self, ahead: int | None = None) -> float:
        """Seconds until a job submitted now starts: the mean job time × jobs ahead per worker."""
        n = self.depth if ahead is None else ahead
        return self.seconds_per_job * n / self.workers

    def retry_after(self) -> int:
        return max(1, min(self.retry_cap_s, math.ceil(self.estimated_wait_s())))

    def submit(self, fn: Callable[[], Any], deadline: float | None = None) -> Future[Any]:
        """Queue ``fn``. ``deadline`` (a ``time.monotonic()`` instant): refused when the wait ahead (and, with
        ``count_own_time``, the job's own expected time) would pass it — measured means only, nothing is refused
        before one job was measured — so an accepted job is one that can finish in time; dropped unrun if a
        worker reaches it too late."""
        ahead = self.depth
        if deadline is not None and self._ewma_s is not None:
            left = deadline - time.monotonic()
            own = self.seconds_per_job if self.count_own_time else 0.0
            if self.count_own_time and own >= left:
                raise QueueFull(
                    self.retry_after(),
                    f"one job takes about {self.seconds_per_job:.0f} s here, more than the request's deadline "
                    f"leaves ({max(0.0, left):.0f} s): ask with a longer timeout",
                )
            if ahead > 0 and self.estimated_wait_s(ahead) + own >= left:
                raise QueueFull(self.retry_after(), "the queue ahead would outlast the request's deadline")
        fut: Future[Any] = Future()
        with self._lock:
            self._waiting.add(fut)
        try:
            self._q.put_nowait((fut, fn, deadline, time.monotonic()))
        except queue.Full:
            with self._lock:
                self._waiting.discard(fut)
            raise QueueFull(self.retry_after()) from None
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: Future[Any]) -> None:
        with self._lock:
            self._waiting.discard(fut)

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
            if self.on_wait is not None:
                self.on_wait(time.monotonic() - queued_at)
            start = time.monotonic()
            ran = False
            try:
                if deadline is not None and start >= deadline:
                    fut.set_exception(DeadlineExceeded("the request's deadline passed while it waited"))
                else:
                    ran = True
                    fut.set_result(fn())
            except BaseException as exc:  # delivered to the waiting request
                fut.set_exception(exc)
            finally:
                took = time.monotonic() - start
                with self._lock:
                    self._busy -= 1
                    if ran:
                        prev = self._ewma_s
                        self._ewma_s = took if prev is None else 0.7 * prev + 0.3 * took

    def shutdown(self) -> None:
        for _ in self._threads:
            try:
                self._q.put(None, timeout=1)
            except queue.Full:
                log.warning("work queue still full at shutdown; workers exit when idle")
