"""Issue 17, runs: at most one queued day run and one queued night run (409 beyond), on a real SQLite
database migrated by Alembic, with run bodies that block until released."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox import (
    Sandbox,
    SandboxConfig,
    own_start_ticks,
    pid_alive,
    process_start_ticks,
    workdir_owner,
)
from service.db import migrate
from service.db.models import Lease, Run
from service.db.repositories import NightLock, RunRepository, parse_identity, process_identity
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


def test_a_process_is_its_pid_and_its_start_time() -> None:
    """Field 22 of /proc/<pid>/stat: the same for the same process, and a pid whose start time differs is
    another process (a restarted container's daemon gets pid 1 again)."""
    me = own_start_ticks()
    assert me is not None and me == process_start_ticks(os.getpid())
    assert pid_alive(os.getpid()) and pid_alive(os.getpid(), me)
    assert not pid_alive(os.getpid(), me + 1)
    parent = os.getppid()
    assert pid_alive(parent, process_start_ticks(parent))
    assert not pid_alive(parent, (process_start_ticks(parent) or 0) + 1)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = process_start_ticks(child.pid)
        assert started is not None and started >= me
        assert process_identity(child.pid) == f"{socket.gethostname()}:{child.pid}@{started}"
    finally:
        child.kill()
        child.wait()
    assert process_start_ticks(child.pid) is None and not pid_alive(child.pid, started)
    assert process_identity() == f"{socket.gethostname()}:{os.getpid()}@{me}"
    assert parse_identity(process_identity()) == (socket.gethostname(), os.getpid(), me)
    assert parse_identity("old-host:42") == ("old-host", 42, None)


def test_a_lease_and_runs_of_our_pid_with_another_start_time_are_taken_over(tmp_path: Path) -> None:
    """The holder's pid is alive (it is ours) but it started at another time: gone, not alive."""
    settings = Settings(data_dir=tmp_path, scheduler={"enabled": False})
    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)
    host, me = socket.gethostname(), own_start_ticks()
    assert me is not None
    reused = f"{host}:{os.getpid()}@{me + 1}"  # our pid, an earlier life of it
    parent = process_identity(os.getppid())  # a live process of this host, with its real start time
    try:
        with db.session() as s:
            s.add(Lease(name="night", holder=reused, expires_at=datetime.now(UTC) + timedelta(minutes=30)))
        assert NightLock(db).acquire()  # taken over at once, not after its expiry
        with db.session() as s:
            lease = s.get(Lease, "night")
            assert lease is not None and lease.holder == process_identity()
            lease.holder = parent
        assert not NightLock(db).acquire()  # a live holder keeps it
        with db.session() as s:
            owners = {
                "reused": reused,
                "mine": process_identity(),
                "parent": parent,
                "legacy-parent": f"{host}:{os.getppid()}",  # an older version's host:pid, pid alive
            }
            ids = {}
            for name, owner in owners.items():
                run = Run(kind="day", trigger="test", status="running", owner=owner, log="", summary={})
                s.add(run)
                s.flush()
                ids[name] = run.id
        with db.session() as s:
            # Fresh heartbeats: only the identity can tell that the first run's process is gone.
            failed = RunRepository(s).fail_abandoned(timedelta(minutes=30))
        assert failed == [ids["reused"]]
        with db.session() as s:
            run = s.get(Run, ids["reused"])
            assert run is not None and run.status == "failed" and "abandoned" in (run.error or "")
    finally:
        db.dispose()


def test_a_sandbox_dir_of_our_pid_with_another_start_time_is_swept(tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    me = own_start_ticks()
    assert me is not None
    reused = root / f"dreamfix-sbx-{os.getpid()}-{me + 1}-abc123"  # our pid, an earlier life of it
    (reused / "src").mkdir(parents=True)
    live = root / f"dreamfix-sbx-{os.getpid()}-{me}-def456"
    live.mkdir()
    assert workdir_owner(reused.name) == (os.getpid(), me + 1)
    assert workdir_owner(f"dreamfix-sbx-{os.getpid()}-q1w2e3") == (os.getpid(), None)
    assert workdir_owner("dreamfix-sbx-q1w2e3") is None
    sandbox = Sandbox(SandboxConfig(work_root=root))
    assert sandbox.sweep_stale_workdirs() == [reused]
    assert [p.name for p in root.iterdir()] == [live.name]


def test_a_running_night_gives_its_lease_back_at_shutdown(tmp_path: Path) -> None:
    from service.night import Night

    settings = Settings(data_dir=tmp_path, scheduler={"enabled": False})
    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)
    loading = threading.Event()
    release = threading.Event()

    def slow_model() -> Any:  # the night's private model load, held open until the test is done
        loading.set()
        release.wait(30)
        raise RuntimeError("model load abandoned by the test")

    night = Night(settings, db, Sandbox(SandboxConfig(work_root=tmp_path / "work")), slow_model)
    jobs = JobRunner(settings, db, {"night": night})
    try:
        run_id = jobs.trigger("night", "test")
        assert loading.wait(30)  # the night holds its lease and is loading its model
        with db.session() as s:
            assert s.get(Lease, "night") is not None
        jobs.shutdown()
        with db.session() as s:
            assert s.get(Lease, "night") is None
    finally:
        release.set()
        jobs.futures[run_id].exception(timeout=30)
        db.dispose()


def test_the_periodic_sweep_fails_queued_runs_of_dead_processes(tmp_path: Path, tiny_model_dir: Path) -> None:
    from service.app_services import Services
    from service.db.models import Run
    from tests.helpers import make_settings

    settings = make_settings(tmp_path, tiny_model_dir, night={"heartbeat_s": 0.5})
    services = Services.build(settings)
    services.start()
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        # Rows left after start-up: a queued run of a process that is gone, and one of a live process.
        with services.db.session() as s:
            gone = Run(
                kind="night", trigger="admin", status="queued", owner=f"{socket.gethostname()}:{dead.pid}"
            )
            alive = Run(
                kind="day", trigger="admin", status="queued", owner=f"{socket.gethostname()}:{os.getppid()}"
            )
            s.add_all([gone, alive])
            s.flush()
            gone_id, alive_id = gone.id, alive.id
        deadline = time.monotonic() + 10
        while True:
            with services.db.session() as s:
                status = s.get(Run, gone_id).status  # type: ignore[union-attr]
            if status == "failed" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == "failed"
        with services.db.session() as s:
            run = s.get(Run, gone_id)
            assert run is not None and "abandoned" in (run.error or "")
            assert s.get(Run, alive_id).status == "queued"  # type: ignore[union-attr]
    finally:
        services.stop()
