"""APScheduler with a persistent SQL job store: the day and night cycles survive restarts, and a night missed
while the daemon was down runs once on start (coalesced) if within the misfire grace time."""

from __future__ import annotations

import logging
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

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
    def __init__(self, db_url: str, settings: SchedulerSettings, runner: Any) -> None:
        self.settings = settings
        self.runner = runner
        self.scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=db_url, tablename="apscheduler_jobs")},
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": settings.misfire_grace_s,
            },
            timezone="UTC",
        )

    def start(self) -> None:
        global _runner
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

    def next_runs(self) -> dict[str, str | None]:
        return {
            job.id: job.next_run_time.isoformat() if job.next_run_time else None
            for job in self.scheduler.get_jobs()
        }

    def stop(self) -> None:
        global _runner
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        _runner = None
