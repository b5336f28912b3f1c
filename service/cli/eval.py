"""``dreamfix eval``: run fixing strategies on the frozen eval koans and report per-family metrics.

Each strategy runs the same koans through the same loop (only the Strategy differs), in chunks so partial
results are written to ``--out`` as they come (CPU runs of the default model take a long time). A koan counts
as passed only when the sandbox verified the fix: it compiles AND the koan's tests pass.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.episodes import AttemptRecord, ProblemRecord
from agent.koans import KoanFormatError, load_koans
from agent.loop import DEFAULT_OUTPUT_FORMAT, STRATEGIES, Problem, RowKey, Strategy
from agent.metrics import by_family, format_family_table, regressions
from agent.prompt import prompt_hash
from service.cli import CliError
from service.cli.fix import build_loop, build_sandbox, load_runtime
from service.cli.progress import bar
from service.settings import get_settings

ALL_STRATEGIES = ["base", "loop", "loop-suggest", "loop-hints", "rustfix"]


@dataclass(frozen=True)
class RecordedReply:
    """A greedy reply read back from a saved report (the fields the loop reads of a generation)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class GreedyReplies:
    """Greedy decoding is deterministic, so a prompt already answered — in this eval, or in a saved report of
    the same model with the same decoding parameters — gets exactly the reply it got before. Strategies that
    share a prompt (every loop's first attempt at a koan the suggestion pass did not touch is the base
    strategy's one shot) then decode it once, and a resumed or parallel run reuses what another decoded.
    A replayed reply keeps its original token counts and model seconds, so per-attempt figures stay those of
    a real decode; only the strategy's wall time is shorter, and the report counts the replayed generations
    (a reply and its continuation are two)."""

    def __init__(self, generate: Any) -> None:
        self._generate = generate
        self._replies: dict[tuple[str, RowKey], Any] = {}
        self.hits = 0
        self.misses = 0

    def __call__(self, prompts: list[list[dict[str, str]]], row_keys: list[RowKey] | None) -> list[Any]:
        routes = list(row_keys) if row_keys is not None else [None] * len(prompts)
        keys = [(prompt_hash(p), r) for p, r in zip(prompts, routes, strict=True)]
        todo = [key for key in dict.fromkeys(keys) if key not in self._replies]
        if todo:
            first = [keys.index(key) for key in todo]
            tasks = [key[1] for key in todo] if row_keys is not None else None
            for key, generation in zip(todo, self._generate([prompts[i] for i in first], tasks), strict=True):
                self._replies[key] = generation
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        return [self._replies[key] for key in keys]

    def load(self, report: dict[str, Any], model_id: str | None, max_new_tokens: int) -> int:
        """Take the greedy base-model replies of a saved report made with the same model and token limit;
        returns how many prompts were added. Sampled attempts and rows served by coefficients (a route version) are never taken."""
        if report.get("model") != model_id or report.get("max_new_tokens") != max_new_tokens:
            return 0
        added = 0
        for entry in report.get("strategies", {}).values():
            for record in entry.get("records", []):
                for a in record.get("attempts", []):
                    if (
                        not a.get("prompt_hash")
                        or "sampled" in a.get("strategy", "")
                        or a.get("route_version") is not None
                    ):
                        continue
                    key = (a["prompt_hash"], None)
                    if key not in self._replies:
                        self._replies[key] = RecordedReply(
                            a.get("reply", ""),
                            a["prompt_tokens"],
                            a["completion_tokens"],
                            a["generate_seconds"],
                        )
                        added += 1
        return added


def _round_robin(problems: list[Problem], limit: int | None) -> list[Problem]:
    """At most ``limit`` problems, taken across families in turn so every family is represented."""
    if limit is None or limit >= len(problems):
        return problems
    by_family: dict[str, list[Problem]] = {}
    for problem in problems:
        by_family.setdefault(problem.family or "-", []).append(problem)
    chosen: list[Problem] = []
    queues = [list(v) for _, v in sorted(by_family.items())]
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return sorted(chosen, key=lambda p: p.id)


def select_problems(
    split: str, families: list[str] | None, limit: int | None, koans_dir: Path | None, ids: list[str] | None
) -> list[Problem]:
    try:
        koans = load_koans(koans_dir, families)
    except KoanFormatError as exc:
        raise CliError(str(exc)) from exc
    if families:
        unknown = sorted(set(families) - {k.family for k in load_koans(koans_dir)})
        if unknown:
            raise CliError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'}: {', '.join(unknown)}")
    koans = [k for k in koans if k.split == split]
    if ids:
        koans = [k for k in koans if k.id in set(ids)]
    if not koans:
        raise CliError(f"no {split} koans match")
    return _round_robin([Problem.from_koan(k) for k in koans], limit)


def record_from_dict(data: dict[str, Any]) -> ProblemRecord:
    attempts = [AttemptRecord(**a) for a in data.get("attempts", [])]
    return ProblemRecord(**{**data, "attempts": attempts})


def _write(path: Path | None, report: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)


def _strategy_report(
    strategy: Strategy, records: list[ProblemRecord], wall: float, done: bool
) -> dict[str, Any]:
    return {
        "strategy": asdict(strategy),
        "complete": done,
        "wall_seconds": round(wall, 1),
        "stats": {name: s.to_dict() for name, s in by_family(records).items()},
        "records": [asdict(r) for r in records],
    }


def _report_tables(report: dict[str, Any]) -> None:
    """Regressions vs the base strategy, a per-family table per strategy, and the pass-rate summary."""
    strategies = report["strategies"]
    base = next((v for k, v in strategies.items() if k == "base" or k.startswith("base@")), None)
    if base is not None:
        base_records = [record_from_dict(r) for r in base["records"]]
        for name, entry in strategies.items():
            if not name.startswith("base"):
                current = [record_from_dict(r) for r in entry["records"]]
                entry["regressions_vs_base"] = regressions(base_records, current)
    for name, entry in strategies.items():
        records = [record_from_dict(r) for r in entry["records"]]
        replayed = entry.get("replayed_generations", entry.get("replayed_attempts", 0))
        title = (
            f"\n== {name} ({len(records)} koans, {entry['wall_seconds']:.0f} s wall, {replayed} replayed) =="
        )
        print(format_family_table(by_family(records), title), flush=True)
    print("\npass rate by strategy:")
    for name, entry in strategies.items():
        all_row = entry["stats"]["ALL"]
        extra = (
            f", regressions vs base: {entry['regressions_vs_base']}"
            if entry.get("regressions_vs_base")
            else ""
        )
        print(f"  {name:<13} {all_row['fixed']}/{all_row['problems']} = {all_row['pass_rate']:.1%}{extra}")


def _from_json(paths: list[str], out: Path | None) -> int:
    """Merge saved eval reports (e.g. strategies run in parallel processes) and print their tables."""
    merged: dict[str, Any] = {"strategies": {}, "sources": paths}
    for path in paths:
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read eval report {path}: {exc}") from exc
        if not isinstance(report, dict) or not isinstance(report.get("strategies"), dict):
            raise CliError(f"{path} is not a `dreamfix eval --out` report")
        for key in ("model", "split", "max_new_tokens", "prompt_lookup"):
            merged.setdefault(key, report.get(key))
        for name, entry in report["strategies"].items():
            if name not in merged["strategies"]:
                merged["strategies"][name] = {**entry, "parts": [path]}
                continue
            # The same strategy on other koans (e.g. families split across processes run side by side).
            into = merged["strategies"][name]
            seen = {r["problem_id"] for r in into["records"]}
            into["records"] += [r for r in entry["records"] if r["problem_id"] not in seen]
            into["complete"] = bool(into.get("complete")) and bool(entry.get("complete"))
            into["wall_seconds"] = max(into["wall_seconds"], entry["wall_seconds"])  # parts ran in parallel
            into["parts"].append(path)
            for key in ("replayed_generations", "replayed_attempts"):
                if key in entry:
                    into[key] = into.get(key, 0) + entry[key]
    for entry in merged["strategies"].values():
        records = [record_from_dict(r) for r in entry["records"]]
        entry["stats"] = {family: s.to_dict() for family, s in by_family(records).items()}
    _report_tables(merged)
    _write(out, merged)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    if args.from_json:
        return _from_json(args.from_json, Path(args.out) if args.out else None)
    settings = get_settings()
    chosen = args.strategy or ["loop"]
    names = ALL_STRATEGIES if "all" in chosen else list(dict.fromkeys(chosen))
    formats = list(dict.fromkeys(args.format or [DEFAULT_OUTPUT_FORMAT]))
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be >= 1")
    if args.chunk < 1:
        raise CliError("--chunk must be >= 1")
    problems = select_problems(args.split, args.family, args.limit, args.koans_dir, args.id)
    out = Path(args.out) if args.out else None
    report: dict[str, Any] = {}
    if out is not None and args.resume and out.exists():
        report = json.loads(out.read_text())
    report.setdefault("strategies", {})
    saved = dict(report)  # as recorded: its model and token limit decide whether its replies can be replayed
    sandbox = build_sandbox(settings)
    needs_model = any(STRATEGIES[n].max_attempts > 0 for n in names)
    runtime = load_runtime(settings) if needs_model else None
    report.update(
        {
            "model": runtime.model_id if runtime is not None else None,
            "split": args.split,
            "koans": [p.id for p in problems],
            "output_formats": formats,
            "max_new_tokens": args.max_new_tokens or settings.agent.max_new_tokens,
            "prompt_lookup": args.prompt_lookup,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    wrapped: list[GreedyReplies] = []

    def replay(generate: Any) -> GreedyReplies:
        wrapped.append(GreedyReplies(generate))
        return wrapped[0]

    loop = build_loop(
        settings,
        runtime,
        sandbox,
        max_new_tokens=args.max_new_tokens,
        prompt_lookup=args.prompt_lookup,
        wrap_generate=replay,
    )
    replies = wrapped[0]
    if runtime is not None:
        limit = report["max_new_tokens"]
        sources = [saved] if args.resume and saved.get("model") else []
        for path in args.replay_from or []:
            try:
                sources.append(json.loads(Path(path).read_text()))
            except (OSError, ValueError) as exc:
                raise CliError(f"cannot read --replay-from {path}: {exc}") from exc
        loaded = sum(replies.load(source, runtime.model_id, limit) for source in sources)
        if sources:
            print(
                f"replaying {loaded} recorded greedy replies (same model, max_new_tokens={limit})", flush=True
            )
    runs = [(name, fmt) for fmt in formats for name in names]
    for base_name, fmt in runs:
        if STRATEGIES[base_name].max_attempts == 0 and fmt != formats[0]:
            continue  # no model involved: the answer format changes nothing
        name = base_name if len(formats) == 1 else f"{base_name}@{fmt}"
        strategy = replace(STRATEGIES[base_name], name=name, output_format=fmt)
        if args.max_attempts is not None and base_name.startswith("loop"):  # base stays one-shot
            strategy = replace(strategy, max_attempts=args.max_attempts)
        previous = report["strategies"].get(name, {})
        records = [record_from_dict(r) for r in previous.get("records", [])] if args.resume else []
        done_ids = {r.problem_id for r in records}
        todo = [p for p in problems if p.id not in done_ids]
        wall = float(previous.get("wall_seconds", 0.0)) if args.resume else 0.0
        replayed = int(previous.get("replayed_generations", 0)) if args.resume else 0
        progress = bar(len(todo), f"eval {name}", unit="koan")
        for start in range(0, len(todo), args.chunk):
            chunk = todo[start : start + args.chunk]
            t0 = time.monotonic()
            hits_before = replies.hits
            records += loop.run(chunk, strategy)
            progress.update(len(chunk))
            wall += time.monotonic() - t0
            replayed += replies.hits - hits_before
            complete = start + args.chunk >= len(todo)
            report["strategies"][name] = _strategy_report(strategy, records, wall, complete)
            report["strategies"][name]["replayed_generations"] = replayed
            if runtime is not None:  # prompt lookup: passes, drafted/accepted tokens, prefix tokens reused
                report["lookup_stats"] = dict(runtime.lookup_stats)
            report["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
            _write(out, report)
            print(f"[{name}] {len(records)}/{len(problems)} koans done, {wall:.0f} s", flush=True)
        progress.close()
        if not todo:
            report["strategies"][name] = _strategy_report(strategy, records, wall, True)
            report["strategies"][name]["replayed_generations"] = replayed
    _report_tables(report)
    _write(out, report)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate fixing strategies on the frozen koans",
        description="Run strategies on the eval koans; print per-family pass rate, repeat-error rate, median "
        "steps and wall time; write everything (every attempt) as JSON with --out.",
    )
    parser.add_argument(
        "--strategy",
        action="append",
        choices=[*STRATEGIES, "all"],
        default=None,
        help="repeatable (best-of-N: verifier-guided sampling); 'all' = "
        + ", ".join(ALL_STRATEGIES)
        + " (default: loop)",
    )
    parser.add_argument("--split", choices=["eval", "train"], default="eval")
    parser.add_argument("--family", action="append", help="only this family (repeatable)")
    parser.add_argument("--id", action="append", help="only this koan id (repeatable)")
    parser.add_argument("--limit", type=int, help="at most N koans, taken across families in turn")
    parser.add_argument("--out", metavar="FILE.json", help="write results (updated after every chunk)")
    parser.add_argument("--resume", action="store_true", help="keep koans already done in --out")
    parser.add_argument(
        "--format",
        action="append",
        choices=["program", "edits"],
        help="answer format (repeatable: each strategy runs once per format; default: the measured best)",
    )
    parser.add_argument(
        "--max-attempts", type=int, help="model attempts of the loop strategies (base stays one shot)"
    )
    parser.add_argument("--max-new-tokens", type=int, help="default: settings.agent.max_new_tokens")
    parser.add_argument("--prompt-lookup", action="store_true", help="prompt-lookup decoding (batch 1)")
    parser.add_argument("--chunk", type=int, default=16, help="koans per loop run (results saved after each)")
    parser.add_argument("--koans-dir", type=Path, default=None)
    parser.add_argument(
        "--replay-from",
        action="append",
        metavar="FILE.json",
        help="reuse greedy replies recorded in this report for identical prompts (same model and limits)",
    )
    parser.add_argument(
        "--from-json",
        action="append",
        metavar="FILE.json",
        help="run nothing: merge these --out reports (repeatable), print their tables, write --out",
    )
    parser.set_defaults(handler=run_eval)
