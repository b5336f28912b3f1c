"""``dreamfix experiment``: Share experiments on the frozen eval koans (see service/research/).

    dreamfix experiment run STAGE [STAGE ...] --name NAME [options]   run stages (resumes an existing NAME)
    dreamfix experiment list                                          runs recorded in the database
    dreamfix experiment show --name NAME [STAGE]                      a stage's saved result (JSON)

Long CPU runs belong in the background (``nohup dreamfix experiment run all --name x &``); every stage
writes its partial results as it goes and skips finished work when started again with the same options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from service.cli import CliError
from service.research import STAGES  # one tuple, in a package __init__ that imports nothing (no torch)
from service.settings import get_settings


def _experiment_dir(name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise CliError(f"bad experiment name {name!r}: use letters, digits, '-' or '_'")
    return get_settings().data_dir / "experiments" / name


def _run(args: argparse.Namespace) -> int:
    from service.research.command import run  # torch and the model load only for this sub-command

    return run(args, _experiment_dir(args.name))


def _list(args: argparse.Namespace) -> int:
    from service.db import migrate
    from service.db.repositories import ExperimentRepository
    from service.db.session import Database

    url = get_settings().db_url
    migrate.upgrade(url)
    db = Database(url)
    with db.session() as s:
        rows = [
            (r.id, r.kind, r.name, r.status, r.wall_seconds, r.started_at)
            for r in ExperimentRepository(s).list(args.kind)
        ]
    if not rows:
        print("no experiment runs recorded yet")
    for run_id, kind, name, status, wall, started in rows:
        wall_text = f"{wall:.0f} s" if wall is not None else "-"
        print(f"{run_id:>4} {kind:<11} {name:<20} {status:<12} {wall_text:>8}  {started:%Y-%m-%d %H:%M}")
    return 0


def _show(args: argparse.Namespace) -> int:
    root = _experiment_dir(args.name)
    if not root.exists():
        raise CliError(f"no experiment named {args.name!r} in {root.parent}")
    path = root / f"{args.stage}.json" if args.stage else root / "config.json"
    if not path.exists():
        raise CliError(f"experiment {args.name!r} has no {args.stage or 'config'} result yet")
    print(path.read_text())
    return 0


def _report(args: argparse.Namespace) -> int:
    from service.research.report import markdown

    root = _experiment_dir(args.name)
    if not (root / "config.json").exists():
        raise CliError(f"no experiment {args.name!r} in {root.parent}")
    print(markdown(root, args.figures, args.figures_link))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="Share experiments: strategies, forgetting heatmap, sequential learning, subspace, sweeps",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="experiment_command", required=True)
    run = sub.add_parser("run", help="run stages (resumable)")
    run.add_argument("stage", nargs="+", choices=[*STAGES, "all"])
    run.add_argument("--name", required=True, help="experiment folder under <data_dir>/experiments/")
    run.add_argument(
        "--tasks", type=lambda s: [t for t in s.split(",") if t], help="comma-separated families"
    )
    run.add_argument("--per-task", dest="per_task", type=int)
    run.add_argument("--eval-per-family", dest="eval_per_family", type=int)
    run.add_argument("--score-all-families", dest="score_all_families", action="store_true", default=None)
    run.add_argument("--pass-rate", dest="pass_rate", action="store_true", default=None)
    run.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 20,21,22,23")
    run.add_argument(
        "--no-prefix-cache",
        dest="prefix_cache",
        action="store_false",
        default=None,
        help="run every layer on every pass (default: the unadapted layers below --layers run once per sequence)",
    )
    run.add_argument(
        "--recipe",
        choices=["night"],
        help="night: every training option (LoRA rank and targets, steps and epochs, learning rates, "
        "batch size, max length, seed, p, threshold, k cap, copy weight) from the night's settings",
    )
    run.add_argument("--lora-rank", dest="lora_rank", type=int)
    run.add_argument("--seed-steps", dest="seed_steps", type=int)
    run.add_argument(
        "--seed-epochs",
        dest="seed_epochs",
        type=float,
        help="> 0: each LoRA seed trains at least this many passes over its examples (default 0: --seed-steps)",
    )
    run.add_argument("--seed-lr", dest="seed_lr", type=float, help="LoRA seeds' learning rate (default 2e-3)")
    run.add_argument("--phase2-steps", dest="phase2_steps", type=int)
    run.add_argument(
        "--phase2-lr", dest="phase2_lr", type=float, help="Share coefficients' learning rate (default 5e-3)"
    )
    run.add_argument(
        "--threshold", type=float, help="Phase 1 explained-variance threshold (default 0.6; 1.0 = full span)"
    )
    run.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, help="per pass-rate generation")
    run.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 0,1")
    run.add_argument("--batch-size", dest="batch_size", type=int)
    run.add_argument("--k-cap", dest="k_cap", type=int)
    run.add_argument("--pseudo-rank", dest="pseudo_rank", type=int)
    run.add_argument("--phi", type=int)
    run.add_argument("--koans-dir", type=Path, default=None)
    run.set_defaults(handler=_run)
    lst = sub.add_parser("list", help="experiment runs recorded in the database")
    lst.add_argument("--kind", choices=list(STAGES))
    lst.set_defaults(handler=_list)
    show = sub.add_parser("show", help="print a stage's saved result")
    show.add_argument("--name", required=True)
    show.add_argument("stage", nargs="?", choices=list(STAGES))
    show.set_defaults(handler=_show)
    report = sub.add_parser("report", help="markdown tables of every recorded stage (for docs/results.md)")
    report.add_argument("--name", required=True)
    report.add_argument("--figures", type=Path, help="copy the figures into this folder and link them")
    report.add_argument("--figures-link", help="how the markdown refers to that folder (default: its path)")
    report.set_defaults(handler=_report)
