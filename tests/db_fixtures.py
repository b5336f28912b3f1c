"""Database fixtures: every persistence test runs against SQLite AND PostgreSQL, each test on a freshly
migrated database (PostgreSQL: a throwaway database created on the server named by
DREAMFIX_TEST_POSTGRES_URL). Under CI an unreachable PostgreSQL is a failure, not a skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.db import migrate

POSTGRES_URL = os.environ.get(
    "DREAMFIX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_admin_url() -> str:
    return make_url(POSTGRES_URL).set(database="postgres").render_as_string(hide_password=False)


def _postgres_available() -> str | None:
    try:
        engine = create_engine(_postgres_admin_url())
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # the reason goes into the skip/fail message
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@contextmanager
def fresh_postgres_database(*, migrated: bool = True) -> Iterator[str]:
    """A throwaway database on the test PostgreSQL server (migrated to head unless ``migrated=False``),
    dropped afterwards."""
    problem = _postgres_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI: {problem}")
        pytest.skip(f"PostgreSQL unavailable: {problem}")
    name = f"dreamfix_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(_postgres_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        if migrated:
            migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """A migrated, empty database URL of each dialect."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/dreamfix.db"
        migrate.upgrade(url)
        yield url
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url
