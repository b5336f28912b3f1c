"""Learning curve: K consecutive nights of the real night code, each followed by base vs current on the test
pool and the frozen eval koans (issue 16, "must show"). A background job, not CI:

    nohup python tests/benchmarks/learning_curve.py --data-dir ~/lc --nights 5 > ~/lc/lc.log 2>&1 &
    python tests/benchmarks/learning_curve.py --data-dir /tmp/lc-smoke --model tiny --nights 2   # smoke

``--data-dir`` holds the service's data (models, adapters, replay buffers, sandbox cache) and, unless
``--db`` gives a database URL, its SQLite database; the state file and the results live there too. Each
night is ``python -m service night`` in a subprocess (the real night, with the settings from the
environment, ``DREAMFIX_*``, plus what the options set), so its wall time and peak RSS are its own. After it,
this process evaluates the base model (once per benchmark run, kept in the state) and the served versions
with two strategies — ``one_shot`` (one model reply, no suggestions) and ``served`` (the daemon's
``serving_strategy``) — on the verified test pool (agent/pools.py) and the eval koans.

Resumable: ``learning_curve.state.json`` records every finished step (a night's run id; each evaluation's
per-problem outcomes, saved every ``--chunk`` problems), so a rerun continues at the next unfinished night
or stage; a night whose run succeeded but was not recorded yet is found in the database, not re-run.

Per night it appends one JSON line to ``learning_curve.jsonl`` and prints a table: for each pool and strategy
the pass rate with its 95% Wilson interval, the base model's, wins/losses and the one-sided paired sign
test's p against the base (``service.gate.sign_test_p``); the one-shot replies identical to the base
model's; the per-group R matrix (one-shot pass rate on the problems each task routes to, nights × groups),
BWT and forgetting by pass rate (a group counts from the night it was first promoted); what the gate promoted
and why; the night's wall time, peak RSS and budget status.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from service.gate import sign_test_p, wilson_interval  # noqa: E402

STATE = "learning_curve.state.json"
RESULTS = "learning_curve.jsonl"
POOLS = ("test_pool", "koans")
STRATEGIES = ("one_shot", "served")

#: Settings for ``--model tiny``: a smoke run that exercises every stage in minutes (tests/helpers.py's).
TINY_SETTINGS: dict[str, Any] = {
    "agent": {"max_attempts": 2, "max_new_tokens": 16},
    "night": {
        "min_examples_per_task": 2,
        "seed_steps": 2,
        "generated_examples": 0,
        "eval_limit": 4,
        "max_length": 384,
        "tasks": ["moves", "mutability"],
        "self_samples": 0,
        "gate_pool": 4,
        "test_pool": 4,
        "gate_alpha": 1.0,
        "gate_min_net_gain": 0,
    },
    "share": {"train_steps": 2, "lora_rank": 2, "k_cap": 4},
}


# ---------------------------------------------------------------------------------------------- stats
def wilson(k: int, n: int) -> tuple[float, float] | None:
    """The 95% Wilson score interval of k successes in n trials, to 4 places (None for n = 0)."""
    interval = wilson_interval(k, n)
    return None if interval is None else (round(interval[0], 4), round(interval[1], 4))


def compare(base: Mapping[str, bool], current: Mapping[str, bool]) -> dict[str, Any]:
    """Current vs base on the same problems: pass rates, Wilson intervals, discordant pairs, sign test."""
    ids = sorted(base)
    k, k0, n = sum(current[i] for i in ids), sum(base[i] for i in ids), len(ids)
    wins = sum(1 for i in ids if current[i] and not base[i])
    losses = sum(1 for i in ids if base[i] and not current[i])
    return {
        "n": n,
        "pass": k,
        "rate": round(k / n, 4) if n else None,
        "ci95": wilson(k, n),
        "base_pass": k0,
        "base_rate": round(k0 / n, 4) if n else None,
        "base_ci95": wilson(k0, n),
        "wins": wins,
        "losses": losses,
        "p_vs_base": sign_test_p(wins, losses),
    }


def group_rates(fixed: Mapping[str, bool], group_of: Mapping[str, str | None]) -> dict[str, float]:
    by: dict[str, list[bool]] = {}
    for pid, ok in fixed.items():
        group = group_of.get(pid)
        if group is not None:
            by.setdefault(group, []).append(ok)
    return {g: round(sum(v) / len(v), 4) for g, v in sorted(by.items())}


def transfer(rows: Sequence[Mapping[str, float]], first_promoted: Mapping[str, int]) -> dict[str, Any]:
    """BWT and forgetting by pass rate over nights (``rows[n]``: group → rate after night n+1). A group
    counts from the night it was first promoted (1-based) and only when that was before the last night:
    BWT = mean (R[last][g] − R[first][g]); forgetting = mean (max over first ≤ n < last of R[n][g] −
    R[last][g])."""
    last = len(rows)
    groups = [g for g, n in sorted(first_promoted.items()) if n < last and g in rows[-1]]
    if not groups:
        return {"groups": [], "bwt": None, "forgetting": None}
    bwt = [rows[-1][g] - rows[first_promoted[g] - 1][g] for g in groups]
    forget = [
        max(rows[n][g] for n in range(first_promoted[g] - 1, last - 1) if g in rows[n]) - rows[-1][g]
        for g in groups
    ]
    return {
        "groups": groups,
        "bwt": round(sum(bwt) / len(bwt), 4),
        "forgetting": round(sum(forget) / len(forget), 4),
    }


# ---------------------------------------------------------------------------------------------- state
class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self.data.setdefault("nights", {})
        self.data.setdefault("base", {})

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def night(self, n: int) -> dict[str, Any]:
        entry: dict[str, Any] = self.data["nights"].setdefault(str(n), {})
        return entry

    def check_options(self, options: dict[str, Any]) -> None:
        saved = self.data.setdefault("options", options)
        changed = sorted(k for k in options if k != "nights" and saved.get(k) != options[k])
        if changed:
            raise SystemExit(
                f"{self.path} was started with other options ({', '.join(changed)}): use another --data-dir"
            )


# ---------------------------------------------------------------------------------------------- settings
def flatten_env(prefix: str, values: Mapping[str, Any]) -> dict[str, str]:
    """Nested settings as DREAMFIX_A__B environment variables (lists and bools as JSON). None cannot be
    written for a plain field, so it is refused."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, Mapping):
            out.update(flatten_env(f"{name}__", value))
        elif value is None:
            raise ValueError(f"{name}: None cannot be passed through the environment")
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, bool)) else str(value)
    return out


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The DREAMFIX_* environment the nights and this process's evaluations share."""
    data_dir = Path(args.data_dir).resolve()
    env = {"DREAMFIX_DATA_DIR": str(data_dir), "DREAMFIX_SCHEDULER__ENABLED": "false"}
    if args.db:
        env["DREAMFIX_DATABASE_URL"] = args.db
    if args.model == "tiny":
        from learner.tiny import save_tiny_model

        model_dir = data_dir / "tiny-model"
        if not (model_dir / "config.json").exists():
            save_tiny_model(model_dir, seed=0)
        env["DREAMFIX_MODEL"] = str(model_dir)
        for key, value in flatten_env("DREAMFIX_", TINY_SETTINGS).items():
            env.setdefault(key, value)
    elif args.model:
        env["DREAMFIX_MODEL"] = args.model
    if args.test_pool is not None:
        env["DREAMFIX_NIGHT__TEST_POOL"] = str(args.test_pool)
    return env


# ---------------------------------------------------------------------------------------------- nights
def latest_night(settings: Any) -> tuple[int, str | None]:
    from service.db import migrate
    from service.db.repositories import RunRepository
    from service.db.session import Database

    migrate.upgrade(settings.db_url)
    with Database(settings.db_url).session() as s:
        runs = RunRepository(s).recent("night", limit=1)
        return (runs[0].id, runs[0].status) if runs else (0, None)


def run_night(state: State, n: int, settings: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """Night ``n``: recorded already, found succeeded in the database after a crash, or run now."""
    entry = state.night(n)
    if "run_id" in entry:
        return entry
    before = entry.setdefault("runs_before", latest_night(settings)[0])
    state.save()
    last_id, status = latest_night(settings)
    if last_id <= before or status != "succeeded":
        print(f"== night {n}: python -m service night", flush=True)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "service", "night"], env={**os.environ, **env}, cwd=REPO)
        print(f"== night {n}: exit {proc.returncode} after {time.monotonic() - started:.0f} s", flush=True)
        last_id, status = latest_night(settings)
        if last_id <= before or status != "succeeded":
            raise SystemExit(f"night {n} did not succeed (run {last_id}: {status}); rerun to retry it")
    entry["run_id"] = last_id
    state.save()
    return entry


def night_summary(settings: Any, run_id: int) -> dict[str, Any]:
    from service.db.repositories import RunRepository
    from service.db.session import Database

    with Database(settings.db_url).session() as s:
        run = RunRepository(s).get(run_id)
        assert run is not None
        return dict(run.summary)


# ---------------------------------------------------------------------------------------------- eval
class Evaluator:
    """One model in this process: the base model (no bank), then the served versions after each night."""

    def __init__(self, settings: Any, koans_limit: int | None, chunk: int) -> None:
        from agent.koans import eval_koans
        from agent.pools import build_pools
        from service.compose import load_runtime, make_sandbox
        from service.db.session import Database
        from service.serving import ServingRuntime

        self.settings = settings
        self.chunk = chunk
        self.sandbox = make_sandbox(settings)
        self.serving = ServingRuntime(
            settings, Database(settings.db_url), self.sandbox, lambda: load_runtime(settings)
        )
        self.serving.runtime = load_runtime(settings)
        evals = eval_koans()
        self.koans = evals[:koans_limit] if koans_limit else evals
        self.pools = build_pools(settings.night.gate_pool, settings.night.test_pool, evals)
        self._problems: dict[str, list[Any]] | None = None

    def problems(self) -> dict[str, list[Any]]:
        from agent.dataset import verify_examples
        from agent.problems import Problem

        if self._problems is None:
            verdicts = verify_examples(self.sandbox, self.pools.test)
            test = [
                Problem(f"test-{i:04d}-{e.family}", e.broken, e.mode, e.edition, e.tests, e.family)
                for i, (e, why) in enumerate(zip(self.pools.test, verdicts, strict=True))
                if why is None
            ]
            self._problems = {"test_pool": test, "koans": [Problem.from_koan(k) for k in self.koans]}
        return self._problems

    def groups(self, state: State) -> dict[str, str | None]:
        """problem id → the task its original diagnostics route to (kept in the state)."""
        from agent.sandbox import Job

        if "groups" not in state.data:
            problems = [p for pool in self.problems().values() for p in pool]
            results = self.sandbox.check_many([Job(p.source, p.mode, p.edition) for p in problems])
            state.data["groups"] = {
                p.id: self.serving.router.route(r.diagnostics).task
                for p, r in zip(problems, results, strict=True)
            }
            state.save()
        groups: dict[str, str | None] = state.data["groups"]
        return groups

    def strategy(self, name: str) -> Any:
        from agent.loop import DEFAULT_OUTPUT_FORMAT, Strategy
        from service.compose import serving_strategy

        if name == "served":
            return serving_strategy(self.settings)
        hints = self.settings.agent.hints
        return Strategy(
            "one-shot",
            max_attempts=1,
            suggestions_first=False,
            hints=hints,
            output_format=DEFAULT_OUTPUT_FORMAT,
        )

    def run(self, results: dict[str, Any], save: Callable[[], None], *, base: bool) -> None:
        """Fill ``results[pool][strategy]`` (problem id → [fixed, first reply's sha256]) chunk by chunk."""
        pools = self.problems()
        if all(
            p.id in results.get(pool, {}).get(name, {})
            for pool in pools
            for name in STRATEGIES
            for p in pools[pool]
        ):
            return
        if base:
            self.serving.bank = None
            self.serving.epoch = -1
        else:
            self.serving.sync()
        snapshot = self.serving.pinned_snapshot() if not base else None
        loop = self.serving.make_loop(snapshot)
        for pool, problems in pools.items():
            for name in STRATEGIES:
                done: dict[str, Any] = results.setdefault(pool, {}).setdefault(name, {})
                todo = [p for p in problems if p.id not in done]
                for start in range(0, len(todo), self.chunk):
                    for record in loop.run(todo[start : start + self.chunk], self.strategy(name)):
                        done[record.problem_id] = [record.fixed, first_reply_hash(record)]
                    save()
                    print(
                        f"   {'base' if base else 'current'} {pool} {name}: {len(done)}/{len(problems)}",
                        flush=True,
                    )


def first_reply_hash(record: Any) -> str | None:
    for attempt in record.attempts:
        if attempt.reply:
            return hashlib.sha256(attempt.reply.encode()).hexdigest()[:16]
    return None


# ---------------------------------------------------------------------------------------------- report
def night_report(
    n: int, state: State, summary: Mapping[str, Any], groups: Mapping[str, str | None]
) -> dict[str, Any]:
    base, current = state.data["base"], state.night(n)["eval"]
    evals = {
        pool: {
            name: compare(
                {i: v[0] for i, v in base[pool][name].items()},
                {i: v[0] for i, v in current[pool][name].items()},
            )
            for name in STRATEGIES
        }
        for pool in POOLS
    }
    unchanged = total = 0
    for pool in POOLS:
        for pid, (_, reply) in current[pool]["one_shot"].items():
            total += 1
            unchanged += reply is not None and reply == base[pool]["one_shot"][pid][1]
    one_shot = {pid: v[0] for pool in POOLS for pid, v in current[pool]["one_shot"].items()}
    state.night(n)["R_row"] = group_rates(one_shot, groups)
    first: dict[str, int] = {}
    for m in range(1, n + 1):
        for name in state.night(m).get("promoted", []):
            first.setdefault(name.split("@")[0], m)
    rows = [state.night(m)["R_row"] for m in range(1, n + 1)]
    gate = summary.get("gate", {})
    return {
        "night": n,
        "run_id": state.night(n)["run_id"],
        "eval": evals,
        "unchanged_replies": {"one_shot": unchanged, "of": total},
        "R": {"groups": sorted({g for r in rows for g in r}), "rows": rows},
        "base_groups": group_rates(
            {pid: v[0] for pool in POOLS for pid, v in base[pool]["one_shot"].items()}, groups
        ),
        "transfer": transfer(rows, first),
        "promoted": summary.get("promoted", []),
        "gate": {task: d.get("reason") for task, d in gate.items()},
        "night_seconds": summary.get("night_seconds"),
        "peak_rss_mb": summary.get("peak_rss_mb"),
        "budget": (summary.get("budget") or {}).get("status"),
    }


def table(lines: Sequence[Mapping[str, Any]]) -> str:
    head = "night | " + " | ".join(f"{p} {s}" for p in POOLS for s in STRATEGIES)
    head += " | unchanged | BWT | forgetting | promoted | wall s | peak RSS MB"
    out = [head]
    for r in lines:
        cells = []
        for pool in POOLS:
            for name in STRATEGIES:
                e = r["eval"][pool][name]
                ci = e["ci95"] or (0, 0)
                cells.append(f"{e['rate']} [{ci[0]}, {ci[1]}] base {e['base_rate']} p={e['p_vs_base']:.3g}")
        t = r["transfer"]
        u = r["unchanged_replies"]
        out.append(
            f"{r['night']} | "
            + " | ".join(cells)
            + f" | {u['one_shot']}/{u['of']} | {t['bwt']} | {t['forgetting']} | {','.join(r['promoted']) or '-'}"
            + f" | {r['night_seconds']} | {r['peak_rss_mb']}"
        )
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", required=True, help="the service's data dir (and the state and results)"
    )
    parser.add_argument("--db", help="database URL (default: SQLite in --data-dir)")
    parser.add_argument("--nights", type=int, default=5)
    parser.add_argument(
        "--model", help="'tiny' for a smoke run, else a model name or folder (default: settings)"
    )
    parser.add_argument("--test-pool", type=int, help="test-pool problems drawn (default night.test_pool)")
    parser.add_argument(
        "--koans-limit", type=int, help="evaluate only the first N eval koans (default all 99)"
    )
    parser.add_argument("--chunk", type=int, default=16, help="problems per saved evaluation step")
    args = parser.parse_args(argv)
    if args.nights < 1 or args.chunk < 1:
        parser.error("--nights and --chunk must be ≥ 1")
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = environment(args)
    os.environ.update(env)
    from service.settings import Settings

    settings = Settings()
    state = State(data_dir / STATE)
    state.check_options(
        {"db": args.db, "model": args.model, "test_pool": args.test_pool, "koans_limit": args.koans_limit}
    )
    state.save()
    lines = []
    for n in range(1, args.nights + 1):
        entry = run_night(state, n, settings, env)
        summary = night_summary(settings, entry["run_id"])
        entry["promoted"] = summary.get("promoted", [])
        if "report" not in entry:
            # loaded per night and dropped before the next one, so a night never shares the machine's memory
            evaluator = Evaluator(settings, args.koans_limit, args.chunk)
            evaluator.run(state.data["base"], state.save, base=True)
            evaluator.run(entry.setdefault("eval", {}), state.save, base=False)
            entry["report"] = night_report(n, state, summary, evaluator.groups(state))
            state.save()
            with (data_dir / RESULTS).open("a") as fh:
                fh.write(json.dumps(entry["report"]) + "\n")
            del evaluator
        lines.append(entry["report"])
        print(table(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
