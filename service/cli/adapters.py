"""``dreamfix adapters list|rollback|export``: coefficient versions, their gate verdicts, and rollback."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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
    from learner.share.peft_io import export_peft
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
    try:
        folder = export_peft(
            Path(args.out),
            task=tv.task,
            version=tv.version,
            bases=bases.bases,
            coeffs_by_layer=tv.coeffs,
            base_model_id=tv.base_model_id,
            basis_id=bases.basis_id,
            overwrite=args.force,
        )
    except FileExistsError:
        raise CliError(f"{args.out} already exists; pass --force to replace it") from None
    print(folder)
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
    ep.set_defaults(handler=_export)
