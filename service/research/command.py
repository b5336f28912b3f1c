"""``dreamfix experiment run`` behind the CLI's lazy import: the config from the options, then each stage
run and recorded in the ``experiment_runs`` table."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from agent.generators import registry
from router import TaskRouter
from service.cli import CliError
from service.cli.progress import bar, write
from service.compose import load_runtime, make_sandbox
from service.db import migrate
from service.db.repositories import ExperimentRepository
from service.db.session import Database
from service.night import train_config
from service.research import STAGES
from service.research.experiment import Experiment, ExperimentConfig
from service.settings import Settings, get_settings


def config_from(args: argparse.Namespace, settings: Settings | None = None) -> ExperimentConfig:
    """The experiment's config from the options; ``--recipe night`` takes every training option from the
    night's settings (``service.night.train_config``), so the numbers describe what the night runs."""
    values: dict[str, Any] = {}
    for f in fields(ExperimentConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    try:
        if getattr(args, "recipe", None) == "night":
            config = ExperimentConfig.from_train(train_config(settings or get_settings()), **values)
        else:
            config = ExperimentConfig(**values)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    unknown = sorted(set(config.tasks) - set(registry()))
    if unknown:
        raise CliError(f"unknown task(s) {unknown}; tasks are koan families: {', '.join(sorted(registry()))}")
    if len(config.tasks) < 2:
        raise CliError("an experiment needs at least two tasks")
    return config


def run(args: argparse.Namespace, root: Path) -> int:
    """``dreamfix experiment run``: the stages asked for, each recorded in ``experiment_runs``."""
    stages = list(STAGES) if "all" in args.stage else list(dict.fromkeys(args.stage))
    settings = get_settings()
    config = config_from(args, settings)
    runtime = load_runtime(settings)
    try:
        experiment = Experiment(
            root,
            config,
            runtime,
            make_sandbox(settings),
            TaskRouter(threshold=settings.router.confidence_threshold),  # experiments train per family
            koans_dir=args.koans_dir,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    migrate.upgrade(settings.db_url)  # like the daemon: Alembic to head, so the experiment_runs table exists
    db = Database(settings.db_url)
    with bar(len(stages), "experiment run", unit="stage") as progress:
        experiment.progress = write  # messages above the bar (plain prints when it is hidden)
        for stage in stages:
            progress.set_postfix_str(stage)
            _run_stage(experiment, db, stage, args.name, config)
            progress.update(1)
    return 0


def headline(stage: str, result: dict[str, Any]) -> dict[str, Any]:
    """What goes into the database row: the stage's summary figures, not every per-koan score."""
    keep = {
        "seeds": ["examples", "seeds"],
        "strategies": ["summary", "bytes_per_task"],
        "heatmap": ["families", "matrix", "applied_check"],
        "sequential": ["tasks", "R", "metrics", "base", "share_merges", "score"],
        "subspace": ["disjoint_tasks", "other_seeds"],
        "sweep": ["points", "held_out_task"],
    }[stage]
    out = {k: result[k] for k in keep if k in result}
    out["wall_seconds_this_run"] = result.get("wall_seconds_this_run")
    if stage == "subspace":
        out = {
            k: {"comparison_summary": v.get("comparison_summary"), "loo": v.get("leave_one_out_summary")}
            for k, v in out.items()
            if isinstance(v, dict)
        }
    return out


def _run_stage(experiment: Any, db: Database, stage: str, name: str, config: Any) -> None:
    """One stage, recorded in ``experiment_runs`` (failed/interrupted rows say why)."""
    with db.session() as s:
        run_id = ExperimentRepository(s).start(stage, name, {"stage": stage, **vars(config)}).id
    started = time.monotonic()
    try:
        result = experiment.run(stage)
    except KeyboardInterrupt:
        with db.session() as s:
            ExperimentRepository(s).fail(run_id, "interrupted", status="interrupted")
        raise
    except Exception as exc:
        with db.session() as s:
            ExperimentRepository(s).fail(run_id, f"{type(exc).__name__}: {exc}")
        raise
    with db.session() as s:
        ExperimentRepository(s).finish(run_id, headline(stage, result), time.monotonic() - started)
    write(f"== {stage} done in {time.monotonic() - started:.0f} s → {experiment.result_path(stage)}")
    write(json.dumps(headline(stage, result), indent=1))
