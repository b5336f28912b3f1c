"""Issue 17, runs: at most one queued day run and one queued night run (409 beyond), on a real SQLite
database migrated by Alembic, with run bodies that block until released."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.sandbox import Sandbox, SandboxConfig
from service.db import migrate
from service.db.models import Lease
from service.db.repositories import NightLock
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


def test_a_night_lease_left_by_a_dead_process_is_taken_over_at_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, scheduler={"enabled": False})
    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)
    # A real process that held the lease and was killed: its pid is gone, its lease row 30 minutes ahead.
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead.kill()
    dead.wait()
    with db.session() as s:
        s.add(
            Lease(
                name="night",
                holder=f"{socket.gethostname()}:{dead.pid}",
                expires_at=datetime.now(UTC) + timedelta(minutes=30),
            )
        )
    lock = NightLock(db)
    try:
        assert lock.acquire()
        # A live holder on this host (this test's parent process) still keeps it.
        lock.release()
        with db.session() as s:
            s.add(
                Lease(
                    name="night",
                    holder=f"{socket.gethostname()}:{os.getppid()}",
                    expires_at=datetime.now(UTC) + timedelta(minutes=30),
                )
            )
        assert not NightLock(db).acquire()
    finally:
        db.dispose()


def test_stale_sandbox_work_dirs_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "work"
    root.mkdir()
    left = root / f"dreamfix-sbx-{dead.pid}-abc123"
    (left / "src").mkdir(parents=True)
    (left / "src" / "main.rs").write_text("fn main() {}\n")
    legacy = root / "dreamfix-sbx-q1w2e3"
    legacy.mkdir()
    os.utime(legacy, (0, 0))
    mine = root / f"dreamfix-sbx-{os.getpid()}-live"
    mine.mkdir()
    sandbox = Sandbox(SandboxConfig(work_root=root))
    # A real check names its dir after this process and removes it afterwards.
    assert sandbox.check("fn main() {}\n").ok
    removed = sandbox.sweep_stale_workdirs()
    assert sorted(removed) == sorted([left, legacy])
    assert [p.name for p in root.iterdir()] == [mine.name]
