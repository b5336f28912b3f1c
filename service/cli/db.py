"""``dreamfix db upgrade|downgrade|current``: Alembic migrations on the configured database."""

from __future__ import annotations

import argparse

from service.db import migrate
from service.settings import get_settings


def _handle(args: argparse.Namespace) -> int:
    url = args.url or get_settings().db_url
    if args.action == "upgrade":
        migrate.upgrade(url, args.revision or "head")
    elif args.action == "downgrade":
        migrate.downgrade(url, args.revision or "-1")
    print(f"database at revision {migrate.current(url)}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("db", help="database migrations (Alembic)")
    p.add_argument("action", choices=["upgrade", "downgrade", "current"])
    p.add_argument("revision", nargs="?", help="target revision (default: head / one step down)")
    p.add_argument("--url", help="database URL (default: DREAMFIX_DATABASE_URL or the SQLite default)")
    p.set_defaults(handler=_handle)
