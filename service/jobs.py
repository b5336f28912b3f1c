"""Day and night runs: one row per run, a heartbeat while it works, one run at a time per process and one
night at a time across replicas (``NightLock``). A run that dies with its process is marked failed by the
next start (``recover``) and by the periodic sweep of any live daemon (``sweep``; both
``RunRepository.fail_abandoned``); since promotion is the last, transactional step of a night, such a run
never leaves anything half-promoted."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from service.db.repositories import RunRepository
from service.db.session import Database
from service.settings import Settings

log = logging.getLogger(__name__)
#: How a run's log line is logged (the CLI's progress bar recognises it).
RUN_LINE = "run %d (%s): %s"


class RunConflict(Exception):
    """A night is already queued or running, or a run of that kind is already queued."""


@dataclass
class RunContext:
    run_id: int
    kind: str
    db: Database
    settings: Settings
    summary: dict[str, Any] = field(default_factory=dict)

    def log(self, line: str) -> None:
        log.info(RUN_LINE, self.run_id, self.kind, line)
        with self.db.session() as s:
            RunRepository(s).append_log(self.run_id, line)


RunBody = Callable[[RunContext], dict[str, Any]]


class JobRunner:
    def __init__(self, settings: Settings, db: Database, bodies: dict[str, RunBody]) -> None:
        self.settings = settings
        self.db = db
        self.bodies = bodies
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dreamfix-run")
        self._trigger_lock = threading.Lock()
        self.futures: dict[int, Future[None]] = {}
        #: Called with the run id after a run's outcome is committed (the daemon's metrics).
        self.on_finish: Callable[[int], None] | None = None

    def recover(self) -> list[int]:
        """At start-up: runs left behind by a dead process are failed, never resumed half-way."""
        stale = timedelta(seconds=max(120.0, 4 * self.settings.night.heartbeat_s))
        with self.db.session() as s:
            failed = RunRepository(s).fail_abandoned(stale)
        if failed:
            log.warning("marked abandoned runs as failed: %s", failed)
        return failed

    def sweep(self) -> list[int]:
        """Periodically: heartbeat this process's queued runs, then fail the runs of processes that are gone
        (queued or running, owner-less or not), as ``recover`` does at start-up."""
        mine = [run_id for run_id, fut in self.futures.items() if not fut.done()]
        with self.db.session() as s:
            RunRepository(s).touch_queued(mine)
        return self.recover()

    @property
    def sweep_interval_s(self) -> float:
        return max(1.0, 2 * self.settings.night.heartbeat_s)

    def trigger(self, kind: str, trigger: str) -> int:
        if kind not in self.bodies:
            raise ValueError(f"unknown run kind {kind!r}; expected one of {sorted(self.bodies)}")
        with self._trigger_lock, self.db.session() as s:
            runs = RunRepository(s)
            active = runs.running(kind)
            if kind == "night" and active:
                busy = active[0]
                raise RunConflict(f"night run {busy.id} is already {busy.status}; one night at a time")
            queued = [r for r in active if r.status == "queued"]
            if queued:
                raise RunConflict(f"{kind} run {queued[0].id} is already queued; at most one waits at a time")
            run_id = runs.create(kind, trigger).id
        self.futures[run_id] = self._pool.submit(self.execute, run_id, kind)
        return run_id

    def run_now(self, kind: str, trigger: str = "cli") -> int:
        """Trigger and wait (the CLI's ``dreamfix day``/``night``)."""
        run_id = self.trigger(kind, trigger)
        self.futures[run_id].result()
        return run_id

    def execute(self, run_id: int, kind: str) -> None:
        ctx = RunContext(run_id, kind, self.db, self.settings)
        with self.db.session() as s:
            RunRepository(s).start(run_id)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(run_id, stop), daemon=True)
        beat.start()
        try:
            summary = self.bodies[kind](ctx)
        except RunConflict as exc:
            self._finish(run_id, "failed", ctx.summary, str(exc))
        except Exception as exc:
            log.exception("run %d (%s) failed", run_id, kind)
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._finish(run_id, "failed", ctx.summary, detail)
        else:
            self._finish(run_id, "succeeded", summary, None)
        finally:
            stop.set()

    def _finish(self, run_id: int, status: str, summary: dict[str, Any], error: str | None) -> None:
        with self.db.session() as s:
            RunRepository(s).finish(run_id, status, summary, error)
        if self.on_finish is not None:
            try:
                self.on_finish(run_id)
            except Exception:
                log.warning("run %d: the finish hook failed", run_id, exc_info=True)

    def _heartbeat(self, run_id: int, stop: threading.Event) -> None:
        while not stop.wait(self.settings.night.heartbeat_s):
            try:
                with self.db.session() as s:
                    run = RunRepository(s).get(run_id)
                    if run is not None:
                        from service.db.models import utcnow

                        run.heartbeat_at = utcnow()
            except Exception:
                log.warning("heartbeat for run %d failed", run_id, exc_info=True)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for body in self.bodies.values():
            release = getattr(body, "release_lease", None)
            if release is not None:  # the night's lease goes with the process, not after its TTL
                try:
                    release()
                except Exception:
                    log.warning("releasing the night lease at shutdown failed", exc_info=True)
