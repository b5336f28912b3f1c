"""Learning curve: K consecutive nights of the real night code, each followed by base vs current on the test
pool and the frozen eval koans (issue 16, "must show"). A background job, not CI:

    mkdir -p ~/lc && nohup python tests/benchmarks/learning_curve.py --data-dir ~/lc --nights 5 > ~/lc/lc.log 2>&1 &
    python tests/benchmarks/learning_curve.py --data-dir ~/lc-short --preset short --nights 3   # ~1 h a night
    python tests/benchmarks/learning_curve.py --data-dir ~/lc-pooled --preset pooled --nights 5   # ~1.5 h a night
    python tests/benchmarks/learning_curve.py --data-dir /tmp/lc-smoke --model tiny --nights 2   # smoke

``--data-dir`` holds the service's data (adapters, replay buffers, sandbox cache) and, unless ``--db`` gives
a database URL, its SQLite database; the state file and the results live there too. A known model name (the
default, ``qwen2.5-coder-0.5b-instruct``) is looked up provisioned in ``<data-dir>/models``, then in the
models of the data dir the environment names (``DREAMFIX_DATA_DIR``), then in the standard
``~/.dreamfix/models`` (``dreamfix model pull``), and handed to the nights as that folder. Each night is
``python -m service night`` in a subprocess (the real night, with the settings from the environment,
``DREAMFIX_*``, plus what the options and the preset set; what the environment sets explicitly wins over the
preset), so its wall time and peak RSS are its own. ``--preset default`` (the default) is the daemon's own
settings; ``--preset short`` (``SHORT_PRESET``) a night of the real 0.5B model in about 30–40 minutes on 2
CPU cores and a smaller evaluation (the first 20 eval koans, a 60-problem test pool). After it,
this process evaluates the base model (once per benchmark run, kept in the state) and the served versions
with two strategies — ``one_shot`` (one model reply, no suggestions) and ``served`` (the daemon's
``serving_strategy``) — on the verified test pool (agent/pools.py) and the eval koans.

Resumable: ``learning_curve.state.json`` records every finished step (a night's run id; each evaluation's
per-problem outcomes, saved every ``--chunk`` problems), so a rerun continues at the next unfinished night
or stage; a night whose run succeeded but was not recorded yet is found in the database, not re-run. A night
killed mid-way (its row left ``running``, its lease held by a dead process) is failed by the daemon's own
sweep (``JobRunner.recover``) and run again; one whose process still runs (the benchmark was stopped, its
night was not) is waited for and taken when it succeeds. Other options or another preset are refused.

Per night it appends one JSON line to ``learning_curve.jsonl`` and prints a table: for each pool and strategy
the pass rate with its 95% Wilson interval, the base model's, wins/losses and the one-sided paired sign
test's p against the base (``service.gate.sign_test_p``); the one-shot replies identical to the base
model's; the per-group R matrix (one-shot pass rate on the problems each task routes to, nights × groups),
BWT and forgetting by pass rate (a group counts from the night it was first promoted); what the gate promoted
and why; the night's wall time, peak RSS and budget status; the preset and the effective settings.
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
        "tasks": ["ownership"],  # the default coarse grouping's group of moves, borrows, mutability, ...
        "self_samples": 0,
        "gate_pool": 4,
        "test_pool": 4,
        "gate_alpha": 1.0,
        "gate_min_net_gain": 0,
    },
    "share": {"train_steps": 2, "lora_rank": 2, "k_cap": 4},
}


#: ``--preset short``: one night of the real 0.5B model in about 30–40 minutes on 2 CPU cores (int8 decode
#: ≈ 5–10 s per one-shot fix attempt, a train step ≈ 5–10 s): a 40-minute wall budget (the data and train
#: stages stop in time), 60-problem gate and test pools, 20 eval koans in the night, fewer and shorter
#: training examples and steps. Given to the nights (and this process) as DREAMFIX_* variables; a variable
#: the environment already sets wins.
SHORT_PRESET: dict[str, Any] = {
    "night": {
        "wall_budget_s": 2400,
        "gate_pool": 60,
        "test_pool": 60,
        "eval_limit": 20,
        "self_samples": 4,
        "max_examples_per_task": 16,
        "seed_steps": 12,
        "max_length": 768,
        "generated_examples": 76,
    },
    "share": {"train_steps": 12, "batch_size": 2},
}
#: ``--preset pooled``: the short preset's pools and evaluation, with one adapter for every family
#: (``router.grouping = pooled``) trained at the default night's size — at least 60 LoRA-seed steps on up to
#: 256 examples (the whole replay buffer), and with ``seed_epochs`` 1 as many more as it takes to see every
#: example once (232 examples at batch 2: 116 steps; run 3's 60 saw half of them), Phase 2 30 steps — and a
#: 120-problem gate pool (one decision gets the whole pool; at 60 problems 7 wins / 2 losses is p = 0.09) in a
#: one-hour wall budget. The size at which the dev-set sweep saw a pooled seed gain (docs/learning.md, "One
#: pooled adapter at the default night's size").
POOLED_PRESET: dict[str, Any] = {
    "night": {
        **SHORT_PRESET["night"],
        "wall_budget_s": 3600,
        "gate_pool": 120,
        "max_examples_per_task": 256,
        "seed_steps": 60,
        "seed_epochs": 1.0,
    },
    "share": {"train_steps": 30, "batch_size": 2},
    "router": {"grouping": "pooled"},
}
#: The short presets' own evaluation limit (``--koans-limit`` unless given).
SHORT_KOANS_LIMIT = 20
PRESETS: dict[str, dict[str, Any]] = {"default": {}, "short": SHORT_PRESET, "pooled": POOLED_PRESET}
#: Options added later, as a state file without them was started.
OPTION_DEFAULTS: dict[str, Any] = {"preset": "default"}
#: The night, as the daemon's CLI runs it (``dreamfix night``).
NIGHT_COMMAND = (sys.executable, "-m", "service", "night")


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
        for key, value in OPTION_DEFAULTS.items():
            saved.setdefault(key, value)
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


def provisioned_model(spec: str, data_dir: Path, environ: Mapping[str, str]) -> str:
    """The model the nights and the evaluations load. A known model name (learner.provision.KNOWN_MODELS)
    becomes its provisioned folder: in ``<data-dir>/models`` (the benchmark's own data dir), else in the
    models of the data dir ``environ`` names (``DREAMFIX_DATA_DIR``), else in the standard data dir's
    (``~/.dreamfix/models``, where ``dreamfix model pull`` puts it); a local path becomes absolute (the
    night runs in the repository root); anything else (a hub id) is handed on as it is."""
    from learner.provision import KNOWN_MODELS, is_converted
    from service.settings import _default_data_dir

    if spec not in KNOWN_MODELS:
        path = Path(spec).expanduser()
        return str(path.resolve()) if path.exists() else spec
    caches = [data_dir / "models"]
    if environ.get("DREAMFIX_DATA_DIR"):
        caches.append(Path(environ["DREAMFIX_DATA_DIR"]).expanduser() / "models")
    caches.append(_default_data_dir() / "models")
    for cache in caches:
        if is_converted(cache / spec):
            return str((cache / spec).resolve())
    raise SystemExit(
        f"model {spec!r} is not provisioned in {' nor '.join(str(c) for c in dict.fromkeys(caches))}: run "
        f"`dreamfix model pull --model {spec}` (into ~/.dreamfix/models) or pass --model FOLDER"
    )


def environment(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The DREAMFIX_* environment the nights and this process's evaluations share: the data dir, the model
    (``provisioned_model``), the preset's settings where ``environ`` (default: this process's environment)
    does not set them, and ``--test-pool``."""
    environ = os.environ if environ is None else environ
    data_dir = Path(args.data_dir).resolve()
    env = {"DREAMFIX_DATA_DIR": str(data_dir), "DREAMFIX_SCHEDULER__ENABLED": "false"}
    if args.db:
        env["DREAMFIX_DATABASE_URL"] = args.db
    explicit = {key.upper() for key in environ}
    preset: Mapping[str, Any] = PRESETS[getattr(args, "preset", "default")]
    if args.model == "tiny":
        from learner.tiny import save_tiny_model

        model_dir = data_dir / "tiny-model"
        if not (model_dir / "config.json").exists():
            save_tiny_model(model_dir, seed=0)
        env["DREAMFIX_MODEL"] = str(model_dir)
        preset = TINY_SETTINGS
    else:
        from service.settings import Settings

        spec = args.model or environ.get("DREAMFIX_MODEL") or Settings.model_fields["model"].default
        env["DREAMFIX_MODEL"] = provisioned_model(spec, data_dir, environ)
    for key, value in flatten_env("DREAMFIX_", preset).items():
        if key not in explicit:
            env[key] = value
    if args.test_pool is not None:
        env["DREAMFIX_NIGHT__TEST_POOL"] = str(args.test_pool)
    return env


def koans_limit(args: argparse.Namespace) -> int | None:
    """The benchmark's eval-koan limit: ``--koans-limit``, else the preset's."""
    if args.koans_limit is not None:
        return int(args.koans_limit)
    return None if getattr(args, "preset", "default") == "default" else SHORT_KOANS_LIMIT


def effective_settings(settings: Any, preset: str, limit: int | None) -> dict[str, Any]:
    """What a night and its evaluation ran with: the preset, the model and every agent/night/share/router
    knob (the router's grouping decides which adapters the night trains)."""
    dumped = settings.model_dump(mode="json")
    return {
        "preset": preset,
        "koans_limit": limit,
        **{key: dumped[key] for key in ("model", "model_dtype", "model_weights", "device", "threads")},
        **{key: dumped[key] for key in ("agent", "night", "share", "router")},
    }


# ---------------------------------------------------------------------------------------------- nights
def latest_night(settings: Any) -> tuple[int, str | None]:
    """The newest night run (id, status), after the daemon's sweep (``JobRunner.recover``) failed the runs
    whose process is gone (a night killed mid-way), as the night's own start-up does."""
    from service.db import migrate
    from service.db.repositories import RunRepository
    from service.db.session import Database
    from service.jobs import JobRunner

    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)
    JobRunner(settings, db, {}).recover()
    with db.session() as s:
        runs = RunRepository(s).recent("night", limit=1)
        return (runs[0].id, runs[0].status) if runs else (0, None)


def run_process(command: Sequence[str], env: Mapping[str, str]) -> tuple[int, float, float]:
    """Run ``command`` in the repository root: (exit code, wall seconds, its peak RSS in MB — the largest of
    it and the descendants it waited for, from ``wait4``)."""
    started = time.monotonic()
    proc = subprocess.Popen(list(command), env={**os.environ, **env}, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else usage.ru_maxrss / 1024
    return proc.returncode, round(time.monotonic() - started, 1), round(peak, 1)


def run_night(
    state: State,
    n: int,
    settings: Any,
    env: Mapping[str, str],
    *,
    command: Sequence[str] = NIGHT_COMMAND,
    poll_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Night ``n``: recorded already, found succeeded in the database after a crash, or run now. A night
    still running in a live process (this benchmark was stopped, the night it started was not) is waited
    for — a second one would only be refused — and taken if it succeeds."""
    entry = state.night(n)
    if "run_id" in entry:
        return entry
    before = entry.setdefault("runs_before", latest_night(settings)[0])
    state.save()
    last_id, status = latest_night(settings)
    while status in ("queued", "running"):
        print(f"== night {n}: run {last_id} is still {status} in a live process; waiting for it", flush=True)
        sleep(poll_s)
        last_id, status = latest_night(settings)
    if last_id <= before or status != "succeeded":
        print(f"== night {n}: {' '.join(command[1:])}", flush=True)
        code, wall, peak = run_process(command, env)
        print(f"== night {n}: exit {code} after {wall:.0f} s, peak RSS {peak:.0f} MB", flush=True)
        last_id, status = latest_night(settings)
        if last_id <= before or status != "succeeded":
            raise SystemExit(f"night {n} did not succeed (run {last_id}: {status}); rerun to retry it")
        entry["process"] = {"wall_s": wall, "peak_rss_mb": peak}
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
        """problem id → the task its original diagnostics route to (kept in the state with the router's
        grouping it was made with; made again under another grouping)."""
        from agent.sandbox import Job

        grouping = self.settings.router.grouping
        if "groups" not in state.data or state.data.get("groups_grouping") != grouping:
            problems = [p for pool in self.problems().values() for p in pool]
            results = self.sandbox.check_many([Job(p.source, p.mode, p.edition) for p in problems])
            state.data["groups"] = {
                p.id: self.serving.router.route(r.diagnostics).task
                for p, r in zip(problems, results, strict=True)
            }
            state.data["groups_grouping"] = grouping
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

    def run(
        self,
        results: dict[str, Any],
        save: Callable[[], None],
        *,
        base: bool,
        base_results: Mapping[str, Any] | None = None,
    ) -> bool:
        """Fill ``results[pool][strategy]`` (problem id → [fixed, first reply's sha256]) chunk by chunk.

        When nothing is served (no night has promoted a version yet), the served model is the base model
        and greedy decoding gives its replies again: ``base_results`` (finished) are copied instead of
        re-run, and True is returned."""
        pools = self.problems()
        if all(
            p.id in results.get(pool, {}).get(name, {})
            for pool in pools
            for name in STRATEGIES
            for p in pools[pool]
        ):
            return False
        if base:
            self.serving.bank = None
            self.serving.epoch = -1
        else:
            self.serving.sync()
            if base_results is not None and not self.serving.active_versions():
                for pool in pools:
                    for name in STRATEGIES:
                        copied = results.setdefault(pool, {}).setdefault(name, {})
                        copied.update({p.id: list(base_results[pool][name][p.id]) for p in pools[pool]})
                save()
                print("   current: nothing served, the base model's outcomes", flush=True)
                return True
        snapshot = self.serving.pinned_snapshot() if not base else None
        # batched greedy decoding, as the night's baseline and gate: the same replies as the daemon's
        # prompt-lookup path (int8 rows are quantized per token), several times the throughput
        from service.night import NIGHT_PROMPT_LOOKUP

        loop = self.serving.make_loop(snapshot, prompt_lookup=NIGHT_PROMPT_LOOKUP)
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
        return False


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
    process = state.night(n).get("process") or {}
    settings = state.night(n).get("settings") or state.data.get("settings") or {}
    return {
        "night": n,
        "run_id": state.night(n)["run_id"],
        "preset": settings.get("preset"),
        "eval": evals,
        "unchanged_replies": {"one_shot": unchanged, "of": total},
        # nothing was served after this night: its outcomes are the base's, copied rather than re-run
        "eval_is_base": bool(state.night(n).get("eval_is_base")),
        "R": {"groups": sorted({g for r in rows for g in r}), "rows": rows},
        "base_groups": group_rates(
            {pid: v[0] for pool in POOLS for pid, v in base[pool]["one_shot"].items()}, groups
        ),
        "transfer": transfer(rows, first),
        "promoted": summary.get("promoted", []),
        "gate": {task: d.get("reason") for task, d in gate.items()},
        # the night's per-problem gate-pool outcomes, served and each candidate (service.night.gate_outcomes;
        # None for a night from before they were recorded): a candidate paired with anything after the fact
        "gate_outcomes": summary.get("gate_outcomes"),
        "night_seconds": summary.get("night_seconds"),
        "peak_rss_mb": summary.get("peak_rss_mb"),
        # the night's process as this benchmark ran it (model load included); None when it was taken from
        # the database (its process was not this benchmark's child)
        "process_wall_s": process.get("wall_s"),
        "process_peak_rss_mb": process.get("peak_rss_mb"),
        "budget": (summary.get("budget") or {}).get("status"),
        "settings": settings,
    }


def table(lines: Sequence[Mapping[str, Any]]) -> str:
    head = "night | " + " | ".join(f"{p} {s}" for p in POOLS for s in STRATEGIES)
    head += (
        " | unchanged | BWT | forgetting | promoted | wall s (night/process) | peak RSS MB (night/process)"
    )
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
            + f" | {r['night_seconds']}/{r.get('process_wall_s')} | {r['peak_rss_mb']}/{r.get('process_peak_rss_mb')}"
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
        "--model",
        help="'tiny' for a smoke run, else a model name or folder (default: DREAMFIX_MODEL or the settings'; "
        "a known name is found provisioned in <data-dir>/models or ~/.dreamfix/models)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="default: the daemon's settings; short: a ~30-40 min night of the real model on 2 CPU cores "
        "and a smaller evaluation (SHORT_PRESET); pooled: one adapter for every family trained at the "
        "default night's size, a 120-problem gate pool, a 1 h budget (POOLED_PRESET); DREAMFIX_* variables "
        "set in the environment win",
    )
    parser.add_argument("--test-pool", type=int, help="test-pool problems drawn (default night.test_pool)")
    parser.add_argument(
        "--koans-limit",
        type=int,
        help=f"evaluate only the first N eval koans (default all 99; --preset short/pooled: {SHORT_KOANS_LIMIT})",
    )
    parser.add_argument("--chunk", type=int, default=16, help="problems per saved evaluation step")
    args = parser.parse_args(argv)
    if args.nights < 1 or args.chunk < 1:
        parser.error("--nights and --chunk must be ≥ 1")
    if args.model == "tiny" and args.preset != "default":
        parser.error("--model tiny has its own smoke settings; it takes no --preset")
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = environment(args)
    os.environ.update(env)
    from service.settings import Settings

    settings = Settings()
    limit = koans_limit(args)
    state = State(data_dir / STATE)
    state.check_options(
        {
            "db": args.db,
            "model": args.model,
            "test_pool": args.test_pool,
            "koans_limit": args.koans_limit,
            "preset": args.preset,
        }
    )
    preset = "tiny" if args.model == "tiny" else args.preset
    effective = effective_settings(settings, preset, limit)
    first = state.data.setdefault("settings", effective)
    changed = sorted(k for k in effective if first.get(k) != effective[k])
    if changed:
        print(
            f"note: settings differ from the first night's ({', '.join(changed)}): see each night's",
            flush=True,
        )
    state.save()
    print(f"preset {preset}: model {settings.model}, koans limit {limit}", flush=True)
    print("settings: " + json.dumps(effective, sort_keys=True), flush=True)
    lines = []
    for n in range(1, args.nights + 1):
        if "run_id" not in state.night(n):
            state.night(n)["settings"] = effective
        entry = run_night(state, n, settings, env)
        summary = night_summary(settings, entry["run_id"])
        entry["promoted"] = summary.get("promoted", [])
        if "report" not in entry:
            # loaded per night and dropped before the next one, so a night never shares the machine's memory
            evaluator = Evaluator(settings, limit, args.chunk)
            evaluator.run(state.data["base"], state.save, base=True)
            if evaluator.run(
                entry.setdefault("eval", {}), state.save, base=False, base_results=state.data["base"]
            ):
                entry["eval_is_base"] = True  # nothing served: the base's outcomes, not re-run
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
