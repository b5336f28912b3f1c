"""Experiment runs: the 0002 migration (SQLite and PostgreSQL), models-vs-migrations drift, the repository."""

from __future__ import annotations

from datetime import UTC

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.db import migrate
from service.db.models import Base
from service.db.repositories import ExperimentRepository
from service.db.session import Database


def _tables(url: str) -> set[str]:
    db = Database(url)
    try:
        return set(inspect(db.engine).get_table_names())
    finally:
        db.dispose()


def test_migration_creates_experiment_runs_with_its_index(db_url: str) -> None:
    assert migrate.current(db_url) == migrate.head()
    db = Database(db_url)
    insp = inspect(db.engine)
    columns = {c["name"]: c for c in insp.get_columns("experiment_runs")}
    assert set(columns) == {
        "id",
        "kind",
        "name",
        "status",
        "config",
        "result",
        "error",
        "started_at",
        "finished_at",
        "wall_seconds",
    }
    assert (
        columns["result"]["nullable"] and columns["error"]["nullable"] and columns["wall_seconds"]["nullable"]
    )
    assert not columns["config"]["nullable"]
    indexes = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("experiment_runs")}
    assert indexes.get("ix_experiment_runs_kind") == ["kind"]
    db.dispose()


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    migrate.downgrade(db_url, "0001")
    tables = _tables(db_url)
    assert "experiment_runs" not in tables and "problems" in tables
    assert migrate.current(db_url) == "0001"
    migrate.upgrade(db_url)
    assert "experiment_runs" in _tables(db_url)
    migrate.downgrade(db_url, "base")
    assert "experiment_runs" not in _tables(db_url) and "problems" not in _tables(db_url)
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head() and "experiment_runs" in _tables(db_url)


def test_models_match_migrations(db_url: str) -> None:
    """Autogenerate against the migrated database finds nothing to do: a model change without a migration fails."""
    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(ctx, Base.metadata)
    finally:
        db.dispose()
    # APScheduler's job store is created by 0001 but is not one of our models.
    diffs = [d for d in diffs if not (isinstance(d, tuple) and "apscheduler_jobs" in repr(d))]
    assert diffs == []


def test_experiment_repository_lifecycle(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as s:
        repo = ExperimentRepository(s)
        first = repo.start("heatmap", "families", {"tasks": ["moves", "lifetimes"], "seed": 0})
        second = repo.start("sequential", "naive", {"order": ["a", "b"]})
        third = repo.start("sequential", "share", {"order": ["a", "b"]})
        ids = first.id, second.id, third.id
    with db.session() as s:
        repo = ExperimentRepository(s)
        repo.update(ids[0], {"rows_done": 1})
        repo.update(ids[1], {"R": [[0.5]]})
    with db.session() as s:
        repo = ExperimentRepository(s)
        run = repo.get(ids[0])
        assert run is not None and run.status == "running" and run.result == {"rows_done": 1}
        assert run.config == {"tasks": ["moves", "lifetimes"], "seed": 0}
        repo.finish(ids[0], {"matrix": [[0.9, 0.1], [0.6, 0.8]]}, wall_seconds=12.5)
        repo.fail(ids[1], "Traceback: boom")
        repo.fail(ids[2], "KeyboardInterrupt", status="interrupted")
        with pytest.raises(ValueError, match="interrupted"):
            repo.fail(ids[2], "x", status="succeeded")
        with pytest.raises(LookupError):
            repo.update(10_000, {})
    with db.session() as s:
        repo = ExperimentRepository(s)
        done = repo.get(ids[0])
        assert done is not None and done.status == "succeeded" and done.wall_seconds == 12.5
        assert done.result == {"matrix": [[0.9, 0.1], [0.6, 0.8]]} and done.error is None
        assert done.finished_at is not None and done.started_at is not None
        failed = repo.get(ids[1])
        assert failed is not None and failed.status == "failed" and failed.error == "Traceback: boom"
        assert failed.result == {"R": [[0.5]]}  # the partial result survives the failure
        assert failed.wall_seconds is not None and failed.wall_seconds >= 0
        interrupted = repo.get(ids[2])
        assert interrupted is not None and interrupted.status == "interrupted"

        latest = repo.latest("sequential")
        assert latest is not None and latest.id == ids[2]
        named = repo.latest("sequential", name="naive")
        assert named is not None and named.id == ids[1]
        assert repo.latest("sweep") is None
        assert [r.id for r in repo.list()] == list(reversed(ids))
        assert [r.id for r in repo.list(kind="sequential")] == [ids[2], ids[1]]
        assert [r.id for r in repo.list(limit=1)] == [ids[2]]
        assert repo.get(10_000) is None
        if db.dialect == "postgresql":
            assert done.started_at.tzinfo is not None and done.started_at.utcoffset() == UTC.utcoffset(None)
    db.dispose()
