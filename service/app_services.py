"""The daemon's object graph, built once from settings: database, sandbox, serving runtime, work queue, job
runner and scheduler. ``start``/``stop`` are the app's lifespan."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from service.api.metrics import ServiceMetrics
from service.compose import load_runtime, make_sandbox
from service.day import Day
from service.db import migrate
from service.db.models import AdapterVersion
from service.db.repositories import AdapterRepository, RunRepository
from service.db.session import Database
from service.jobs import JobRunner
from service.leader import LeaderElector
from service.night import Night
from service.scheduler import DreamScheduler
from service.serving import ServingRuntime
from service.settings import LimitSettings, Settings
from service.workqueue import WorkQueue

if TYPE_CHECKING:
    from learner.runtime import ModelRuntime

log = logging.getLogger(__name__)

#: A version's status after its night → the gate's decision (a promoted version may already be retired).
_GATE_DECISION = {"active": "promoted", "retired": "promoted", "rejected": "rejected", "candidate": "pending"}


def check_share(limits: LimitSettings) -> int:
    """The most checks (queued + running) one client address may hold in the check lane: half the lane."""
    return max(1, (limits.check_queue_size + limits.check_workers) // 2)


@dataclass
class Services:
    settings: Settings
    db: Database
    serving: ServingRuntime
    queue: WorkQueue
    jobs: JobRunner
    metrics: ServiceMetrics
    scheduler: DreamScheduler | None = None
    #: /v1/check and the fix fast lane: apart from the model queue, so neither waits behind the other.
    check_queue: WorkQueue | None = None
    sync_interval_s: float = 5.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        settings: Settings,
        runtime_factory: Callable[[], ModelRuntime] | None = None,
        koans_dir: Path | None = None,
        migrate_db: bool = True,
    ) -> Services:
        if migrate_db:
            migrate.upgrade(settings.db_url)  # Alembic to head; never create_all
        db = Database(settings.db_url)
        sandbox = make_sandbox(settings)
        factory = runtime_factory or (lambda: load_runtime(settings))
        serving = ServingRuntime(settings, db, sandbox, factory)
        jobs = JobRunner(
            settings,
            db,
            {
                "day": Day(serving, koans_dir),
                "night": Night(settings, db, sandbox, factory, live=serving, koans_dir=koans_dir),
            },
        )
        services = cls(
            settings=settings,
            db=db,
            serving=serving,
            queue=WorkQueue(
                settings.limits.queue_size,
                max(settings.limits.workers, settings.limits.model_workers),
                "fix",
                count_own_time=True,  # accepted = can finish before its deadline (issue 17's 0 × 504)
            ),
            jobs=jobs,
            metrics=ServiceMetrics(model=settings.model),
            check_queue=WorkQueue(
                settings.limits.check_queue_size,
                settings.limits.check_workers,
                "check",
                initial_job_s=1.0,
                per_owner=check_share(settings.limits),
            ),
        )
        serving.on_swap = services._on_swap
        sandbox.on_check = services.metrics.observe_check
        services.queue.on_wait = services.metrics.queue_wait.observe
        jobs.on_finish = services._on_run_finished
        if settings.scheduler.enabled:
            elector = LeaderElector(db, ttl_s=settings.scheduler.leader_ttl_s)
            services.scheduler = DreamScheduler(settings.db_url, settings.scheduler, jobs, elector)
            services.scheduler.on_leadership = services.metrics.scheduler_leader.set
        return services

    def start(self) -> None:
        self.jobs.recover()
        sweep = getattr(self.serving.sandbox, "sweep_stale_workdirs", None)
        if sweep is not None:
            sweep()
        try:
            with self.db.session() as s:
                last = RunRepository(s).last_succeeded("night")
                self.metrics.set_last_night(last.finished_at if last is not None else None)
        except Exception:
            log.warning("could not read the last successful night for /metrics", exc_info=True)
        self._spawn(self._load_model, "model-load")
        self._spawn(self._sync_loop, "route-sync")
        self._spawn(self._sweep_loop, "run-sweep")
        if self.scheduler is not None:
            self.scheduler.start()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _load_model(self) -> None:
        self.serving.load()
        self.metrics.model_ready.set(1 if self.serving.model_ready else 0)
        # What exists now (the model, the tokenizer, the imported libraries: ~470k objects with the tiny model)
        # lives as long as the process. Out of the collector's sight, a full collection no longer walks it:
        # under a /v1/check flood those walks stalled the event loop for ~300 ms at a time (bench_faults'
        # /readyz p99 246-300 ms in four runs; 76-91 ms frozen, docs/service.md).
        gc.collect()
        gc.freeze()

    def _sync_loop(self) -> None:
        """Replicas sharing a database pick up promotions and rollbacks within ``sync_interval_s``."""
        while not self._stop.wait(self.sync_interval_s):
            try:
                self.serving.sync()
            except Exception:
                log.warning("route sync failed; retrying", exc_info=True)

    def _sweep_loop(self) -> None:
        """Runs of processes that died after this one started are failed within a sweep interval."""
        while not self._stop.wait(self.jobs.sweep_interval_s):
            try:
                self.jobs.sweep()
            except Exception:
                log.warning("run sweep failed; retrying", exc_info=True)

    def _on_swap(self, versions: dict[str, int]) -> None:
        self.metrics.route_epoch.set(self.serving.epoch)
        for task, version in versions.items():
            self.metrics.active_version.labels(task).set(version)

    def _on_run_finished(self, run_id: int) -> None:
        """Count the run and, for a night, the gate's verdict on each version it made."""
        with self.db.session() as s:
            run = RunRepository(s).get(run_id)
            if run is None:
                return
            kind, status, finished_at = run.kind, run.status, run.finished_at
            decisions = {
                row.task: _GATE_DECISION.get(row.status, row.status)
                for row in s.scalars(select(AdapterVersion).where(AdapterVersion.run_id == run_id))
            }
        self.metrics.observe_run(kind, status, decisions)
        if kind == "night" and status == "succeeded":
            self.metrics.set_last_night(finished_at)

    def rollback(self, task: str, version: int | None) -> int | None:
        with self.db.session() as s:
            repo = AdapterRepository(s)
            if not list(repo.versions(task)):
                raise LookupError(f"no adapter versions for task {task!r}")
            row = repo.rollback(task, version)
            active = row.version if row is not None else None
        self.serving.sync()
        if active is None:
            self.metrics.active_version.labels(task).set(0)
        return active

    def leadership(self) -> dict[str, Any]:
        """For /readyz: ``{"scheduler": "leader" | "follower" | "disabled", "holder": "host:pid@start" | None}``
        (``process_identity``)."""
        if self.scheduler is None:
            return {"scheduler": "disabled", "holder": None}
        return self.scheduler.leadership()

    def stop(self) -> None:
        """The app's shutdown: running sandbox jails are killed first (their work dirs removed), so that no
        worker stays busy with them, then the queues, the runs and the database are let go."""
        self._stop.set()
        sandbox_shutdown = getattr(self.serving.sandbox, "shutdown", None)
        if sandbox_shutdown is not None:
            try:
                sandbox_shutdown()
            except Exception:
                log.warning("stopping the sandbox's running jails failed", exc_info=True)
        if self.scheduler is not None:
            self.scheduler.stop()
        self.queue.shutdown()
        if self.check_queue is not None:
            self.check_queue.shutdown()
        self.jobs.shutdown()
        self.db.dispose()
