"""Alembic, configured in code (no alembic.ini): the script location is the repository's ``migrations/``, or in
an installed wheel the copy shipped inside this package (``service/db/_data/migrations``, see setup.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

_BUNDLED = Path(__file__).resolve().parent / "_data" / "migrations"
MIGRATIONS_DIR = _BUNDLED if _BUNDLED.is_dir() else Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# Key of the PostgreSQL session-level advisory lock held while migrating ("dreamfix" as an int64).
MIGRATION_LOCK_KEY = 0x647265616D666978


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the schema. On PostgreSQL the whole upgrade runs under an advisory lock, so replicas starting at once
    migrate one after the other (the later ones find the schema already at head) instead of racing on DDL."""
    from service.db.session import validate_url

    if validate_url(url).get_backend_name() != "postgresql":
        command.upgrade(alembic_config(url), revision)
        return
    from sqlalchemy import text

    from service.db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                cfg = alembic_config(url)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from service.db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


if __name__ == "__main__":  # developer helper: python -m service.db.migrate revision -m "msg"
    from service.settings import get_settings

    if len(sys.argv) >= 4 and sys.argv[1] == "revision" and sys.argv[2] == "-m":
        command.revision(alembic_config(get_settings().db_url), message=sys.argv[3], autogenerate=True)
    else:
        print("usage: python -m service.db.migrate revision -m MESSAGE", file=sys.stderr)
        sys.exit(2)


def head() -> str:
    """The newest revision of the migrations this package ships (what ``upgrade`` reaches)."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert revision is not None, f"no migrations in {MIGRATIONS_DIR}"
    return revision
