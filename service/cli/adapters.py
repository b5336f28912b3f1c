"""``dreamfix adapters list|rollback|export|import|routes``: coefficient versions, their gate verdicts,
rollback, PEFT LoRA export, and seeding Phase 1 from PEFT LoRA adapters."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from router import TaskRouter
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
    from service.db.artifacts import ArtifactIntegrityError, local_artifact
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
        cache = get_settings().adapters_dir / "db-cache"
        try:
            basis_path = local_artifact(basis, cache, f"basis {basis.id}")
            task_path = local_artifact(row, cache, args.name)
        except ArtifactIntegrityError as exc:
            raise CliError(str(exc)) from exc
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


def _import_seeds(paths: list[str], tasks: list[str] | None) -> list[Any]:
    """One Phase 1 seed per PEFT folder, named by ``--task`` (in order) or by the folder."""
    from learner.share.artifacts import ArtifactError, check_task_name
    from learner.share.peft_io import import_peft

    names = tasks or [Path(p).resolve().name for p in paths]
    if len(names) != len(paths):
        raise CliError(f"{len(paths)} adapter folders but {len(names)} --task names; give one per folder")
    if len(set(names)) != len(names):
        raise CliError(f"task names must be distinct, got {names}")
    router = get_settings().router
    routed = router.task_router().tasks
    for name in names:
        if name not in routed:
            print(
                f"warning: nothing routes to {name!r} with router.grouping={router.grouping!r} (tasks: "
                f"{', '.join(routed)}); its versions are stored but not served under this grouping",
                file=sys.stderr,
            )
    seeds = []
    for path, name in zip(paths, names, strict=True):
        try:
            seeds.append(import_peft(path, name=check_task_name(name)))
        except (ArtifactError, ValueError) as exc:
            raise CliError(str(exc)) from exc
    return seeds


def _served_model_id() -> str | None:
    """The id a loaded runtime reports for the configured model (what versions are checked against)."""
    from learner.provision import ProvisionError, resolve_model

    settings = get_settings()
    try:
        return resolve_model(settings.model, settings.model_cache_dir, convert_gguf=False).name
    except (OSError, ValueError, ProvisionError):
        return None


def _import(args: argparse.Namespace) -> int:
    """PEFT LoRA adapters → Phase 1: a basis and one version per task, in the database like a night's."""
    from learner.share.artifacts import save_bases
    from learner.share.phases import phase1
    from service.db.repositories import BasisRepository

    seeds = _import_seeds(args.paths, args.task)
    settings = get_settings()
    db = _db()
    try:
        with db.session() as s:
            if BasisRepository(s).latest() is not None:
                raise CliError(
                    "a basis exists already (Phase 1 has run); imported adapters can only seed an empty "
                    "installation"
                )
        try:
            result = phase1(
                seeds, threshold=args.threshold or settings.share.variance_threshold, cap=settings.share.k_cap
            )
        except ValueError as exc:
            raise CliError(f"cannot build a basis from these adapters: {exc}") from exc
        model_id = _served_model_id()
        basis_file = settings.adapters_dir / "basis-import.safetensors"
        basis_id = save_bases(basis_file, result.bases, model_id)
        names = _record_import(db, result, basis_id, basis_file, model_id, args.activate)
    finally:
        db.dispose()
    status = (
        "active" if args.activate else "candidate (the next night trains in this basis; --activate serves it)"
    )
    for name in names:
        print(f"{name} {status}")
    print(f"basis {basis_id}: k per layer {sorted({(b.k_beta, b.k_alpha) for b in result.bases.values()})}")
    return 0


def _record_import(
    db: Database, result: Any, basis_id: str, basis_file: Path, model_id: str | None, activate: bool
) -> list[str]:
    """The basis and each task's version in one transaction (bytes and sha256 in the rows)."""
    from learner.share.artifacts import save_task_version
    from service.db.repositories import AdapterRepository, BasisRepository, RouteStateRepository

    settings = get_settings()
    names = []
    with db.session() as s:
        BasisRepository(s).add(
            basis_id,
            str(basis_file),
            model_id or settings.model,
            {"origin": "peft-import", "seeds": sorted(result.coefficients)},
        )
        repo = AdapterRepository(s)
        for task, coeffs in sorted(result.coefficients.items()):
            version = repo.next_version(task)
            path = save_task_version(
                settings.adapters_dir / "tasks",
                task=task,
                version=version,
                coeffs_by_layer=coeffs,
                basis_id=basis_id,
                base_model_id=model_id,
            )
            params = sum(int(c.eb.numel() + c.ea.numel()) for c in coeffs.values())
            row = repo.add(
                task=task,
                version=version,
                status="candidate",
                path=str(path),
                basis_id=basis_id,
                base_model_id=model_id or settings.model,
                params=params,
                bytes=4 * params,
                reason="imported from a PEFT adapter",
            )
            if activate:
                repo.promote(row)
            names.append(f"{task}@v{version}")
        if activate:
            RouteStateRepository(s).bump(basis_id=basis_id)
    return names


def route_table(active: dict[str, int], router: TaskRouter) -> dict[str, Any]:
    """The router's rules and the live version of each rule's group as ``GROUP@vN`` (the exported PEFT
    folder's name), for a gateway that picks a per-request adapter as ``TaskRouter.route`` does: an error is
    explained by every rule whose message pattern matches its message, else (none matching) whose pattern
    matches its rendered text, else whose code matches; it counts once for each of those rules' groups; the
    group explaining most errors wins (ties: the group of the earliest rule that explained one), and one
    explaining fewer than ``threshold`` of them, or without an active version, is the base model
    (``adapter`` null). With ``router.grouping`` = fine every rule is its own group."""
    from learner.share.artifacts import task_version_name

    return {
        "format": "dreamfix-route-table/2",
        "threshold": router.threshold,
        "routes": [
            {
                "task": rule.task,
                "group": (group := router.group_of[rule.task]),
                "codes": sorted(rule.codes),
                "message_patterns": list(rule.message_patterns),
                "adapter": task_version_name(group, active[group]) if group in active else None,
            }
            for rule in router.rules
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
    text = json.dumps(route_table(active, get_settings().router.task_router()), indent=2) + "\n"
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
    ip = actions.add_parser(
        "import", help="seed Phase 1 from PEFT LoRA adapter folders: a basis and one version per task"
    )
    ip.add_argument(
        "paths", nargs="+", metavar="PATH", help="PEFT LoRA folders (adapter_config.json + weights)"
    )
    ip.add_argument("--task", action="append", help="the task of each PATH, in order (default: folder name)")
    ip.add_argument("--threshold", type=float, help="explained-variance threshold (default: share setting)")
    ip.add_argument(
        "--activate", action="store_true", help="serve the imported versions now (default: candidates only)"
    )
    ip.set_defaults(handler=_import)
    tp = actions.add_parser("routes", help="the route table (rustc code/pattern → TASK@vN) as JSON")
    tp.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    tp.set_defaults(handler=_routes)
