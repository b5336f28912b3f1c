"""A bounded work queue that keeps model work off the event loop.

Requests beyond the queue's capacity are refused at once (the API turns that into 429 + Retry-After) instead
of piling up until every client times out. Workers are plain threads: the model and rustc release the GIL.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"work queue is full; retry after {retry_after_s}s")
        self.retry_after_s = retry_after_s


class WorkQueue:
    def __init__(self, capacity: int, workers: int = 1, name: str = "work") -> None:
        self.capacity = capacity
        self._q: queue.Queue[tuple[Future[Any], Callable[[], Any], float] | None] = queue.Queue(
            maxsize=capacity
        )
        #: Called with the seconds a job waited before a worker took it (the daemon's metrics).
        self.on_wait: Callable[[float], None] | None = None
        self._busy = 0
        self._lock = threading.Lock()
        self._avg_s = 5.0  # running mean of job time, for Retry-After
        self._threads = [
            threading.Thread(target=self._worker, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def depth(self) -> int:
        """Jobs waiting plus jobs running."""
        with self._lock:
            return self._q.qsize() + self._busy

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            self._q.put_nowait((fut, fn, time.monotonic()))
        except queue.Full:
            raise QueueFull(self.retry_after()) from None
        return fut

    def retry_after(self) -> int:
        per_worker = max(1, len(self._threads))
        return max(1, int(self._avg_s * (self.depth / per_worker)) + 1)

    def _worker(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fut, fn, queued_at = item
            if not fut.set_running_or_notify_cancel():
                continue
            if self.on_wait is not None:
                self.on_wait(time.monotonic() - queued_at)
            with self._lock:
                self._busy += 1
            start = time.monotonic()
            try:
                fut.set_result(fn())
            except BaseException as exc:  # delivered to the waiting request
                fut.set_exception(exc)
            finally:
                took = time.monotonic() - start
                with self._lock:
                    self._busy -= 1
                    self._avg_s = 0.8 * self._avg_s + 0.2 * took

    def shutdown(self) -> None:
        for _ in self._threads:
            try:
                self._q.put(None, timeout=1)
            except queue.Full:
                log.warning("work queue still full at shutdown; workers exit when idle")
