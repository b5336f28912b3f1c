"""Repositories and migrations against SQLite and PostgreSQL (see tests/db_fixtures.py)."""

from __future__ import annotations

import socket
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect

from agent.episodes import AttemptRecord, ProblemRecord
from service.db import migrate
from service.db.models import Lease, Run
from service.db.repositories import (
    AdapterRepository,
    EpisodeRepository,
    NightLock,
    RouteStateRepository,
    RunRepository,
)
from service.db.session import Database


def _attempt(i: int, fixed: bool, task: str | None = "borrowck") -> AttemptRecord:
    return AttemptRecord(
        problem_id="p1",
        content_hash="h" * 64,
        attempt=i,
        strategy="model",
        route_task=task,
        route_version=3 if task else None,
        prompt_hash=f"{i:064d}",
        model_id="tiny",
        error_codes_before=["E0382"],
        error_codes_after=[] if fixed else ["E0382"],
        diff="--- a\n+++ b\n",
        verdict="ok" if fixed else "compile_error",
        fixed=fixed,
        candidate="fn main() {}",
        prompt_tokens=100 + i,
        completion_tokens=20,
    )


def _record(fixed: bool = True, family: str | None = "moves") -> ProblemRecord:
    attempts = [_attempt(0, False), _attempt(1, fixed)]
    return ProblemRecord(
        problem_id="p1",
        content_hash="h" * 64,
        family=family,
        source="fn main() { let s = String::new(); let t = s; drop(s); }",
        final_code="fn main() {}",
        fixed=fixed,
        verified=True,
        steps_to_green=2 if fixed else None,
        final_status="fixed" if fixed else "gave_up",
        strategy="loop",
        error_codes=["E0382"],
        attempts=attempts,
        route_task="borrowck",
        route_version=3,
    )


def test_migrations_create_every_table_and_downgrade_cleanly(db_url: str) -> None:
    db = Database(db_url)
    tables = set(inspect(db.engine).get_table_names())
    assert {"runs", "problems", "attempts", "adapter_versions", "bases", "route_state", "leases"} <= tables
    assert "apscheduler_jobs" in tables
    db.dispose()
    migrate.downgrade(db_url, "base")
    db = Database(db_url)
    assert "problems" not in set(inspect(db.engine).get_table_names())
    db.dispose()


def test_episode_round_trip_keeps_every_attempt(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as s:
        run = RunRepository(s).create("day", "cli")
        problem = EpisodeRepository(s).save(
            _record(), origin="koan", problem_ref="moves-001", mode="bin", edition="2021", run_id=run.id
        )
        pid = problem.id
    with db.session() as s:
        got = EpisodeRepository(s).get(pid)
        assert got is not None
        assert [a.attempt for a in got.attempts] == [0, 1]
        assert got.attempts[1].fixed and not got.attempts[0].fixed
        assert got.attempts[0].prompt_tokens == 100
        assert got.route_task == "borrowck" and got.route_version == 3
        assert got.error_codes == ["E0382"]
    db.dispose()


def test_episode_search_filters_and_paginates(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as s:
        repo = EpisodeRepository(s)
        for i in range(7):
            repo.save(
                _record(fixed=i % 2 == 0, family="moves" if i < 4 else "traits"),
                origin="client" if i < 5 else "koan",
                problem_ref=f"r{i}",
                mode="bin",
                edition="2021",
            )
    with db.session() as s:
        repo = EpisodeRepository(s)
        total, page = repo.search(limit=3, offset=0)
        assert total == 7 and len(page) == 3
        assert page[0].problem_ref == "r6"  # newest first
        total, page = repo.search(family="moves", fixed=True)
        assert total == 2 and {p.problem_ref for p in page} == {"r0", "r2"}
        assert len(repo.recent_client_failures()) == 2  # r1, r3 (r5 is a koan)
        assert [p.problem_ref for p in repo.verified_fixes()] == ["r0", "r2", "r4", "r6"]
    db.dispose()


def test_promotion_and_rollback_keep_one_active_version_and_bump_the_epoch(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as s:
        repo = AdapterRepository(s)
        start = RouteStateRepository(s).get().epoch
        for _ in range(3):
            v = repo.next_version("borrowck")
            row = repo.add(
                task="borrowck",
                version=v,
                status="candidate",
                path=f"/x/{v}",
                basis_id="b1",
                base_model_id="m",
            )
            repo.promote(row)
        assert [r.version for r in repo.versions("borrowck") if r.status == "active"] == [3]
        assert RouteStateRepository(s).get().epoch == start + 3
    with db.session() as s:
        repo = AdapterRepository(s)
        back = repo.rollback("borrowck")
        assert back is not None and back.version == 2
        assert repo.active_for("borrowck").version == 2  # type: ignore[union-attr]
        with pytest.raises(LookupError):
            repo.rollback("borrowck", to_version=9)
        repo.add(task="borrowck", version=4, status="rejected", path="/x/4", basis_id="b1", base_model_id="m")
        with pytest.raises(ValueError, match="rejected"):
            repo.rollback("borrowck", to_version=4)
    db.dispose()


def test_rolling_back_the_only_version_returns_the_task_to_base(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as s:
        repo = AdapterRepository(s)
        repo.promote(
            repo.add(task="t", version=1, status="candidate", path="p", basis_id="b", base_model_id="m")
        )
        assert repo.rollback("t") is None
        assert repo.active_for("t") is None
    db.dispose()


def test_abandoned_runs_are_marked_failed(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as s:
        runs = RunRepository(s)
        dead_here = runs.create("night", "schedule")
        runs.start(dead_here.id)
        alive_here = runs.create("day", "schedule")
        runs.start(alive_here.id)  # owned by this very process: alive
        silent_replica = runs.create("night", "schedule")
        runs.start(silent_replica.id)
        dead = subprocess.Popen(["true"])
        dead.wait()
        s.get(Run, dead_here.id).owner = f"{socket.gethostname()}:{dead.pid}"  # type: ignore[union-attr]
        replica = s.get(Run, silent_replica.id)
        assert replica is not None
        replica.owner = "other-host:1"
        replica.heartbeat_at = datetime.now(UTC) - timedelta(hours=2)
    with db.session() as s:
        failed = RunRepository(s).fail_abandoned(stale_after=timedelta(hours=1))
        assert sorted(failed) == sorted([dead_here.id, silent_replica.id])
        assert s.get(Run, dead_here.id).status == "failed"  # type: ignore[union-attr]
        assert s.get(Run, alive_here.id).status == "running"  # type: ignore[union-attr]
    db.dispose()


def test_night_lock_is_exclusive(db_url: str) -> None:
    db = Database(db_url)
    first, second = NightLock(db), NightLock(Database(db_url))
    assert first.acquire()
    if db.dialect == "postgresql":
        assert not second.acquire()  # a different connection cannot take the advisory lock
    else:  # SQLite: a lease held by another live process blocks, an expired one does not
        first.release()
        with db.session() as s:
            s.add(
                Lease(
                    name="night", holder="other-host:1", expires_at=datetime.now(UTC) + timedelta(minutes=5)
                )
            )
        assert not second.acquire()
        with db.session() as s:
            s.get(Lease, "night").expires_at = datetime.now(UTC) - timedelta(seconds=1)  # type: ignore[union-attr]
    first.release()
    assert second.acquire()
    second.release()
    second.db.dispose()
    db.dispose()
