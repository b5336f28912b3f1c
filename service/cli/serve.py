"""``dreamfix serve``: the daemon — HTTP API, day/night scheduler, hot-swap."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from service.cli import CliError
from service.settings import get_settings

log = logging.getLogger(__name__)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app
    from service.api.slowclient import server_options
    from service.app_services import Services
    from service.compose import CompositionError

    settings = get_settings()
    if args.no_scheduler:
        settings = settings.model_copy(
            update={"scheduler": settings.scheduler.model_copy(update={"enabled": False})}
        )
    from service.db.session import wait_for_database

    wait_for_database(settings.db_url, settings.database_wait_s, log)
    try:
        services = Services.build(settings)
    except CompositionError as exc:
        raise CliError(str(exc)) from exc
    if settings.admin_token is None:
        log.warning("DREAMFIX_ADMIN_TOKEN is not set: the admin API answers 403")
    app = create_app(services)
    # On SIGTERM/SIGINT: requests in flight get shutdown_grace_s, then they are cancelled and the app's
    # shutdown (Services.stop) kills the sandbox jails still running and removes their work dirs.
    options: dict[str, Any] = {
        **server_options(settings.limits),
        "timeout_graceful_shutdown": settings.limits.shutdown_grace_s,
    }
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,
        **options,
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the daemon: API + day/night scheduler")
    p.add_argument("--host", help="bind address (default DREAMFIX_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default DREAMFIX_PORT, 8000)")
    p.add_argument("--no-scheduler", action="store_true", help="serve only; no scheduled day/night runs")
    p.set_defaults(handler=_serve)
