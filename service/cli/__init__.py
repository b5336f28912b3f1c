"""The ``dreamfix`` command. Each sub-command lives in its own module here and registers itself through
``register(subparsers)``; this module only wires them together, so adding a command never touches others."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from service.logging import setup_logging
from service.settings import get_settings

# Module names under service.cli, in the order they appear in --help.
COMMAND_MODULES = [
    "serve",
    "check",
    "fix",
    "koans",
    "day_night",
    "eval",
    "experiment",
    "adapters",
    "model",
    "db",
]

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dreamfix")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamfix", description="Self-improving Rust compile-error repair.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"service.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"service.cli.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def _database_error(exc: BaseException) -> str | None:
    """A one-line message for a bad database URL or an unreachable database; None for anything else. Only
    checks modules that are already loaded, so a command that never touched the database pays nothing."""
    session = sys.modules.get("service.db.session")
    if session is not None and isinstance(exc, session.DatabaseUrlError):
        return str(exc)
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"cannot reach the database: {detail[0] if detail else type(exc).__name__}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = get_settings()
    setup_logging("DEBUG" if args.verbose else settings.log_level, settings.log_json)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except CliError as exc:
        print(f"dreamfix: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        message = _database_error(exc)
        if message is None:
            raise
        print(f"dreamfix: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `dreamfix koans list --json | head`: the reader left, not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
