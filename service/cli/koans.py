"""``dreamfix koans list|show|validate|baseline|generate``: the koan library. The logic lives in agent.validation."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from agent.koans import SPLITS, Koan, KoanFormatError, load_koans
from agent.validation import family_rows, rustfix_baseline, validate_koans
from service.cli import CliError
from service.cli.check import build_sandbox
from service.cli.progress import bar
from service.settings import get_settings


def _load(args: argparse.Namespace, family: str | None = None, split: str | None = None) -> list[Koan]:
    directory: Path | None = args.koans_dir
    if directory is not None and not directory.is_dir():
        raise CliError(f"no koan folder at {directory}")
    try:
        koans = load_koans(directory)
    except KoanFormatError as exc:
        raise CliError(f"the koan library is malformed: {exc}") from exc
    except OSError as exc:
        raise CliError(f"cannot read the koan library: {exc}") from exc
    if family and not any(k.family == family for k in koans):
        known = sorted({k.family for k in koans})
        raise CliError(f"no koans in family {family!r}; families: {', '.join(known) or 'none'}")
    return [
        k for k in koans if (family is None or k.family == family) and (split is None or k.split == split)
    ]


def _summary(koan: Koan) -> dict[str, object]:
    return {
        "id": koan.id,
        "family": koan.family,
        "split": koan.split,
        "codes": list(koan.codes),
        "mode": koan.mode,
        "edition": koan.edition,
        "title": koan.title,
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    koans = _load(args, args.family, args.split)
    if args.json:
        print(json.dumps([_summary(k) for k in koans]))
        return 0
    rows = [(k.id, k.split, k.mode, ",".join(k.codes), k.title) for k in koans]
    print(_table(("id", "split", "mode", "codes", "title"), rows))
    print(f"{len(koans)} koans")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    matches = [k for k in _load(args) if k.id == args.id]
    if not matches:
        raise CliError(f"no koan with id {args.id!r} (see `dreamfix koans list`)")
    koan = matches[0]
    if args.json:
        print(
            json.dumps(
                {**_summary(koan), **{f: getattr(koan, f) for f in ("broken", "fixed", "tests", "notes")}}
            )
        )
        return 0
    print(f"{koan.id}: {koan.title}")
    print(f"family {koan.family}, split {koan.split}, mode {koan.mode}, edition {koan.edition}")
    print(f"codes: {', '.join(koan.codes)}")
    for name in ("broken", "fixed", "tests"):
        print(f"\n--- {name} ---\n{getattr(koan, name).strip()}")
    if koan.notes:
        print(f"\nnotes: {koan.notes}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    koans = _load(args, args.family)
    if not koans:
        raise CliError("no koans to validate")
    with bar(len(koans), "koans validate", unit="koan") as progress:
        report = validate_koans(
            build_sandbox(get_settings()),
            koans,
            stub_check=not args.no_stub_check,
            on_done=lambda _check: progress.update(1),
        )
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0 if report.ok else 1
    rows = [(r.family, r.train, r.eval, r.ok, r.failed) for r in family_rows(report.checks)]
    total = (
        "total",
        *(sum(getattr(r, f) for r in family_rows(report.checks)) for f in ("train", "eval", "ok", "failed")),
    )
    print(_table(("family", "train", "eval", "ok", "failed"), [*rows, total]))
    for check in report.failures:
        print(f"\nFAIL {check.koan_id} [{check.split}]")
        for problem in check.problems:
            print("  " + problem.replace("\n", "\n    "))
    return 0 if report.ok else 1


def cmd_baseline(args: argparse.Namespace) -> int:
    koans = _load(args, args.family, "eval")
    if not koans:
        raise CliError("no eval koans")
    rows = rustfix_baseline(build_sandbox(get_settings()), koans)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows]))
        return 0
    table = [
        (
            r.family,
            r.koans,
            f"{r.fixed_machine_applicable} ({r.rate_machine_applicable:.0%})",
            f"{r.fixed_with_maybe_incorrect} ({r.rate_with_maybe_incorrect:.0%})",
        )
        for r in rows
    ]
    print("rustfix baseline on the eval split (fixed = compiles and passes the koan's tests)")
    print(_table(("family", "koans", "MachineApplicable", "+MaybeIncorrect"), table))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from agent.dataset import FamilyReport, build_dataset, write_jsonl
    from agent.generators import registry

    evals = _load(args, None, "eval")
    families = [args.family] if args.family else sorted(registry())
    with bar(len(families), "koans generate", unit="family") as progress:

        def done(report: FamilyReport) -> None:
            progress.set_postfix_str(report.family, refresh=False)
            progress.update(1)

        examples, reports = build_dataset(
            build_sandbox(get_settings()),
            evals,
            per_family=args.per_family,
            seed=args.seed,
            families=families,
            verify=not args.no_verify,
            on_family=done,
        )
    if args.out:
        write_jsonl(args.out, examples)
    summary = [
        {
            "family": r.family,
            "drawn": r.drawn,
            "valid": r.valid,
            "invalid": r.invalid,
            "dropped_as_eval": r.too_close,
            "closest_eval_distance": None if r.closest_distance is None else round(r.closest_distance, 4),
            "closest_eval_koan": r.closest_koan,
            "failures": r.failures[:5],
        }
        for r in reports
    ]
    if args.json:
        print(json.dumps({"total_valid": len(examples), "families": summary}))
    else:
        rows = [
            (
                s["family"],
                s["drawn"],
                s["valid"],
                s["invalid"],
                s["dropped_as_eval"],
                s["closest_eval_distance"],
                s["closest_eval_koan"],
            )
            for s in summary
        ]
        print(
            _table(
                ("family", "drawn", "valid", "invalid", "dropped", "closest distance", "closest eval koan"),
                rows,
            )
        )
        print(f"total valid unique examples: {len(examples)}" + (f" → {args.out}" if args.out else ""))
    return 0 if all(r.invalid == 0 for r in reports) else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("koans", help="the koan library: list, show, validate, baseline, generate")
    sub = parser.add_subparsers(dest="koans_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--koans-dir", type=Path, default=None, help="a koan folder other than the repository's koans/"
    )

    p = sub.add_parser("list", parents=[common], help="list koans")
    p.add_argument("--json", action="store_true")
    p.add_argument("--split", choices=SPLITS)
    p.add_argument("--family")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("show", parents=[common], help="show one koan")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser(
        "validate",
        parents=[common],
        help="prove every koan through the sandbox",
        description="Every broken program fails with exactly its declared codes, every fix compiles and "
        "passes its tests, and the tests fail once the fix's function bodies are stubbed out. Exit 1 if any "
        "koan fails.",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--family")
    p.add_argument("--no-stub-check", action="store_true", help="skip the stubbed-variant check")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser(
        "baseline", parents=[common], help="rustfix baseline: eval koans fixed by rustc's own suggestions"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--family")
    p.set_defaults(handler=cmd_baseline)

    p = sub.add_parser(
        "generate",
        parents=[common],
        help="training data: verified generator draws that never reproduce an eval koan",
        description="Draws distinct examples per family, drops any within similarity 0.9 of an eval koan, "
        "verifies the rest through the sandbox (broken fails with its codes, the fix passes its tests) and "
        "reports the closest distance to the eval split per family. Exit 1 if any draw is invalid.",
    )
    p.add_argument("--per-family", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family")
    p.add_argument("--out", type=Path, help="write the valid examples as JSON lines")
    p.add_argument("--no-verify", action="store_true", help="skip the sandbox (fast look at the draws)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_generate)
