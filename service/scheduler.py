"""APScheduler with a persistent SQL job store: the day and night cycles survive restarts, and a night missed
while the daemon was down runs once on start (coalesced) if within the misfire grace time.

With several replicas on one database only the elected leader (``service.leader``) runs the scheduler; the
others start it when they win the lease (the leader died), and stop it if they lose the lease."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from service.leader import LeaderElector
from service.settings import SchedulerSettings

log = logging.getLogger(__name__)

# The live job runner for the scheduled entry points below. APScheduler persists jobs by reference to a
# module-level function, so the runner is looked up here at fire time rather than pickled.
_runner: Any = None


def scheduled_run(kind: str) -> None:
    if _runner is None:
        log.warning("scheduled %s run fired before the job runner was ready; skipped", kind)
        return
    try:
        _runner.trigger(kind, "schedule")
    except Exception:
        log.exception("scheduled %s run could not start", kind)


class DreamScheduler:
    def __init__(
        self, db_url: str, settings: SchedulerSettings, runner: Any, elector: LeaderElector | None = None
    ) -> None:
        self.db_url = db_url
        self.settings = settings
        self.runner = runner
        self.elector = elector
        self._lock = threading.Lock()
        self._started_once = False
        #: Told of every change of this replica's leadership (the daemon sets its /metrics gauge).
        self.on_leadership: Callable[[bool], None] | None = None
        self.scheduler = self._make()

    def _make(self) -> BackgroundScheduler:
        return BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=self.db_url, tablename="apscheduler_jobs")},
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self.settings.misfire_grace_s,
            },
            timezone="UTC",
        )

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> None:
        """Without an elector: schedule now. With one: schedule whenever this replica leads."""
        if self.elector is None:
            self._start_jobs()
            return
        self.elector.on_change = self._on_leadership
        self.elector.start()

    def _on_leadership(self, leading: bool) -> None:
        if leading:
            self._start_jobs()
        else:
            self._stop_jobs()
        if self.on_leadership is not None:
            self.on_leadership(leading)

    def _start_jobs(self) -> None:
        global _runner
        with self._lock:
            if self.scheduler.running:
                return
            if self._started_once:  # a scheduler once shut down (pools closed) is not reused: a fresh one
                self.scheduler = self._make()
            self._started_once = True
            _runner = self.runner
            self.scheduler.start()
            for kind, cron in (("day", self.settings.day_cron), ("night", self.settings.night_cron)):
                self.scheduler.add_job(
                    scheduled_run,
                    CronTrigger.from_crontab(cron, timezone="UTC"),
                    args=[kind],
                    id=f"dreamfix-{kind}",
                    name=f"dreamfix {kind} cycle",
                    replace_existing=True,
                )
            for job in self.scheduler.get_jobs():
                log.info("scheduled %s: next at %s", job.id, job.next_run_time)

    def _stop_jobs(self) -> None:
        with self._lock:
            if self.scheduler.running:
                self.scheduler.shutdown(wait=False)

    def next_runs(self) -> dict[str, str | None]:
        if not self.scheduler.running:
            return {}
        return {
            job.id: job.next_run_time.isoformat() if job.next_run_time else None
            for job in self.scheduler.get_jobs()
        }

    def leadership(self) -> dict[str, Any]:
        """Whether this replica runs the scheduled jobs, and which replica does."""
        if self.elector is None:
            return {"scheduler": "leader" if self.running else "stopped", "holder": None}
        status = self.elector.status()
        return {"scheduler": "leader" if status["leader"] else "follower", "holder": status["holder"]}

    def stop(self) -> None:
        global _runner
        if self.elector is not None:
            self.elector.stop()  # hands the lease back: a follower takes over at its next heartbeat
        self._stop_jobs()
        _runner = None
