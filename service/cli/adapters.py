"""``dreamfix adapters list|rollback|export``: coefficient versions, their gate verdicts, and rollback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from service.cli import CliError
from service.db.session import Database
from service.settings import get_settings


def _db() -> Database:

    return Database(get_settings().db_url)


def _list(args: argparse.Namespace) -> int:
    from service.db.repositories import AdapterRepository

    db = _db()
    with db.session() as s:
        rows = AdapterRepository(s).versions(args.task)
        items = [
            {
                "name": f"{r.task}@v{r.version}",
                "task": r.task,
                "version": r.version,
                "status": r.status,
                "reason": r.reason,
                "params": r.params,
                "bytes": r.bytes,
                "basis_id": r.basis_id,
                "promoted_at": r.promoted_at.isoformat() if r.promoted_at else None,
            }
            for r in rows
        ]
    if args.json:
        print(json.dumps(items, indent=2))
    elif not items:
        print("no adapter versions yet (a night run creates them)")
    else:
        for it in items:
            print(f"{it['name']:<28} {it['status']:<9} {it['params']:>8} params  {it['reason']}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from service.db.repositories import AdapterRepository

    db = _db()
    try:
        with db.session() as s:
            row = AdapterRepository(s).rollback(args.task, args.version)
            active = f"{row.task}@v{row.version}" if row is not None else "the base model"
    except (LookupError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(f"{args.task} now served by {active} (running daemons pick it up within seconds)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from learner.share.artifacts import load_bases, load_task_version
    from learner.share.peft_io import export_peft, upstream_model_id
    from service.db.repositories import AdapterRepository, BasisRepository

    task, _, version = args.name.partition("@v")
    if not version.isdigit():
        raise CliError("name must look like TASK@vN")
    db = _db()
    with db.session() as s:
        row = AdapterRepository(s).get(task, int(version))
        if row is None:
            raise CliError(f"no adapter version {args.name}")
        basis = BasisRepository(s).get(row.basis_id)
        if basis is None:
            raise CliError(f"basis {row.basis_id} of {args.name} is missing")
        basis_path, task_path = basis.path, row.path
    bases = load_bases(basis_path)
    tv = load_task_version(task_path, expect_basis_id=bases.basis_id)
    settings = get_settings()
    # The version's own model, else (versions saved without one) the model this installation serves.
    base_model = args.base_model or upstream_model_id(
        tv.base_model_id or settings.model, settings.model_cache_dir
    )
    if base_model is None:
        base_model = tv.base_model_id or settings.model
        print(
            f"warning: no Hugging Face id known for model {base_model!r}; pass --base-model ORG/NAME so "
            "AutoPeftModelForCausalLM can find the base model elsewhere",
            file=sys.stderr,
        )
    try:
        folder = export_peft(
            Path(args.out),
            task=tv.task,
            version=tv.version,
            bases=bases.bases,
            coeffs_by_layer=tv.coeffs,
            base_model_id=base_model,
            basis_id=bases.basis_id,
            overwrite=args.force,
        )
    except FileExistsError:
        raise CliError(f"{args.out} already exists; pass --force to replace it") from None
    print(folder)
    return 0


def route_table(active: dict[str, int], threshold: float) -> dict[str, Any]:
    """The router's rules and each task's live version as ``TASK@vN`` (the exported PEFT folder's name), for
    a gateway that picks a per-request adapter: the first rule whose message pattern matches an error's
    message, else whose code matches, names the task; a task explaining fewer than ``threshold`` of a
    problem's errors, or without an active version, is the base model (``adapter`` null)."""
    from learner.share.artifacts import task_version_name
    from router import DEFAULT_RULES

    return {
        "format": "dreamfix-route-table/1",
        "threshold": threshold,
        "routes": [
            {
                "task": rule.task,
                "codes": sorted(rule.codes),
                "message_patterns": list(rule.message_patterns),
                "adapter": task_version_name(rule.task, active[rule.task]) if rule.task in active else None,
            }
            for rule in DEFAULT_RULES
        ],
    }


def _routes(args: argparse.Namespace) -> int:
    from service.db.repositories import AdapterRepository

    db = _db()
    try:
        with db.session() as s:
            active = {row.task: row.version for row in AdapterRepository(s).active()}
    finally:
        db.dispose()
    text = json.dumps(route_table(active, get_settings().router.confidence_threshold), indent=2) + "\n"
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as exc:
            raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
        print(args.out)
    else:
        print(text, end="")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("adapters", help="coefficient versions: list, rollback, export as PEFT LoRA")
    actions = p.add_subparsers(dest="action", required=True)
    lp = actions.add_parser("list", help="every version with its status and gate verdict")
    lp.add_argument("--task")
    lp.add_argument("--json", action="store_true")
    lp.set_defaults(handler=_list)
    rp = actions.add_parser("rollback", help="reactivate the previous (or a given) version of a task")
    rp.add_argument("task")
    rp.add_argument("--version", type=int)
    rp.set_defaults(handler=_rollback)
    ep = actions.add_parser("export", help="write TASK@vN as a standard PEFT LoRA folder")
    ep.add_argument("name", help="TASK@vN")
    ep.add_argument("--out", default=".", help="parent folder (default: here)")
    ep.add_argument("--force", action="store_true", help="overwrite an existing folder")
    ep.add_argument(
        "--base-model",
        metavar="ORG/NAME",
        help="base_model_name_or_path to write (default: the upstream id of the version's model)",
    )
    ep.set_defaults(handler=_export)
    tp = actions.add_parser("routes", help="the route table (rustc code/pattern → TASK@vN) as JSON")
    tp.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    tp.set_defaults(handler=_routes)
