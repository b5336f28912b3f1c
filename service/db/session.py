"""Engine and session factory. SQLite gets WAL and a busy timeout so the API and the scheduler threads can
share it; PostgreSQL is used as is."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

SUPPORTED_BACKENDS = ("sqlite", "postgresql")


class DatabaseUrlError(ValueError):
    """A database URL that cannot name a supported database; the message says what to write instead."""


def validate_url(url: str) -> URL:
    """Parse ``url`` or raise DatabaseUrlError with a one-line reason (the password is never echoed)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(
            "cannot parse the database URL; expected e.g. sqlite:////path/dreamfix.db or "
            "postgresql+psycopg://user:password@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        raise DatabaseUrlError(
            "database URL scheme postgres:// is not understood by SQLAlchemy; write postgresql+psycopg://"
            + parsed.render_as_string(hide_password=True).split("://", 1)[1]
        )
    if backend not in SUPPORTED_BACKENDS:
        raise DatabaseUrlError(f"unsupported database backend {backend!r}; use sqlite or postgresql+psycopg")
    return parsed


def wait_for_database(url: str, timeout_s: float, log: logging.Logger | None = None) -> int:
    """Block until ``SELECT 1`` succeeds, retrying with capped exponential backoff for at most ``timeout_s``
    seconds (a database container that starts after the daemon). Returns the attempts used; re-raises the last
    connection error when time runs out. A bad URL fails at once (DatabaseUrlError): waiting cannot fix it."""
    log = log or logging.getLogger(__name__)
    deadline = time.monotonic() + timeout_s
    delay = 0.25
    engine = make_engine(url)
    attempt = 0
    try:
        while True:
            attempt += 1
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return attempt
            except OperationalError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                reason = str(exc.orig or exc).strip().splitlines()[0]
                log.warning(
                    "database not reachable yet (attempt %d, retrying in %.1fs): %s", attempt, delay, reason
                )
                time.sleep(min(delay, left))
                delay = min(delay * 2, 5.0)
    finally:
        engine.dispose()


def make_engine(url: str) -> Engine:
    validate_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()
