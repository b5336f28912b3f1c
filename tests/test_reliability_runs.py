"""Issue 17, runs: at most one queued day run and one queued night run (409 beyond), on a real SQLite
database migrated by Alembic, with run bodies that block until released."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from service.db import migrate
from service.db.session import Database
from service.jobs import JobRunner, RunConflict, RunContext
from service.settings import Settings


def test_at_most_one_queued_run_per_kind(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, scheduler={"enabled": False})
    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)
    release = threading.Event()
    started = threading.Event()

    def body(ctx: RunContext) -> dict[str, object]:
        started.set()
        assert release.wait(30)
        return {}

    jobs = JobRunner(settings, db, {"day": body, "night": body})
    try:
        first_day = jobs.trigger("day", "test")
        assert started.wait(30)  # the single worker now runs it: the next day run only waits
        queued_day = jobs.trigger("day", "test")
        with pytest.raises(RunConflict, match="already queued"):
            jobs.trigger("day", "test")
        queued_night = jobs.trigger("night", "test")
        with pytest.raises(RunConflict):
            jobs.trigger("night", "test")
        release.set()
        for run_id in (first_day, queued_day, queued_night):
            jobs.futures[run_id].result(timeout=30)
        # Once drained, new runs are accepted again.
        jobs.futures[jobs.trigger("day", "test")].result(timeout=30)
    finally:
        release.set()
        jobs.shutdown()
        db.dispose()
