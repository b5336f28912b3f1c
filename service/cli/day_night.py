"""``dreamfix day`` / ``dreamfix night``: run one cycle now, in this process, and print its summary."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from service.cli import CliError
from service.cli.progress import bar
from service.settings import get_settings


@contextmanager
def _steps_into(progress: Any) -> Iterator[None]:
    """Each line the run logs (``RunContext.log``: a seed trained, a gate verdict) advances the bar and
    shows as its postfix; elapsed time comes with the bar."""

    from service.jobs import RUN_LINE

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.msg == RUN_LINE and isinstance(record.args, tuple):
                progress.set_postfix_str(str(record.args[-1])[:60], refresh=False)
                progress.update(1)

    handler = _Handler(level=logging.INFO)
    jobs_log = logging.getLogger("service.jobs")
    jobs_log.addHandler(handler)
    try:
        yield
    finally:
        jobs_log.removeHandler(handler)


def _run(args: argparse.Namespace) -> int:
    from service.app_services import Services
    from service.compose import CompositionError
    from service.db.repositories import RunRepository

    settings = get_settings()
    settings = settings.model_copy(
        update={"scheduler": settings.scheduler.model_copy(update={"enabled": False})}
    )
    try:
        services = Services.build(settings)
    except CompositionError as exc:
        raise CliError(str(exc)) from exc
    services.jobs.recover()
    if args.kind == "day":
        services.serving.load()
        if not services.serving.model_ready:
            raise CliError(services.serving.model_error or "the model did not load")
    with bar(None, args.kind, unit="step") as progress, _steps_into(progress):
        run_id = services.jobs.run_now(args.kind, "cli")
    with services.db.session() as s:
        run = RunRepository(s).get(run_id)
        assert run is not None
        out = {
            "run_id": run.id,
            "kind": run.kind,
            "status": run.status,
            "error": run.error,
            "summary": run.summary,
        }
    print(json.dumps(out, indent=2, default=str))
    services.stop()
    return 0 if out["status"] == "succeeded" else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for kind, text in (
        ("day", "practise on koans and failed client problems now"),
        ("night", "train, gate and promote now"),
    ):
        p = sub.add_parser(kind, help=f"run one {kind} cycle: {text}")
        p.set_defaults(handler=_run, kind=kind)
