"""Alembic environment. The URL comes from the caller's Config (``dreamfix db upgrade``) or DREAMFIX_* settings."""

from __future__ import annotations

from alembic import context

from service.db.models import Base
from service.db.session import make_engine

config = context.config
target_metadata = Base.metadata

# Tables the application does not model: APScheduler creates and owns its job store table.
UNMANAGED_TABLES = frozenset({"apscheduler_jobs"})


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Keep autogenerate (and ``alembic check``) away from tables owned by other libraries."""
    if type_ == "table" and name in UNMANAGED_TABLES:
        return False
    table = getattr(obj, "table", None)
    if type_ in ("index", "column", "unique_constraint", "foreign_key_constraint") and table is not None:
        return table.name not in UNMANAGED_TABLES
    return True


def _url() -> str:
    # Plain `alembic` reads [tool.alembic] from pyproject.toml and has no ini section: the URL then comes from settings.
    has_section = config.file_config.has_section(config.config_ini_section)
    url = config.get_main_option("sqlalchemy.url") if has_section else None
    if url:
        return url
    from service.settings import get_settings

    return get_settings().db_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        engine = make_engine(_url())
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=True,
                include_object=include_object,
            )
            with context.begin_transaction():
                context.run_migrations()
        engine.dispose()
    else:
        context.configure(
            connection=connectable,
            target_metadata=target_metadata,
            render_as_batch=True,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
