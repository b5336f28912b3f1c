"""Which first-night training recipe helps one group? A LoRA seed per recipe, on the examples a real night
buffered for that group, gated as the night gates (Phase 1 projection, one-shot, the group's routed problems)
— but on a *dev* set of generated problems from their own seed, disjoint by normalised hash from the gate
and test pools, the eval koans, the train koans and the night draws, so choosing a recipe here never looks
at the problems that promote (gate pool) or report (test pool, frozen koans).

    python tests/benchmarks/recipe_sweep.py --night-dir ~/lc-short --group ownership --dev 120 \\
        --recipes "lr=5e-3" "lr=1e-3" "lr=1e-3,copy=0.3" --out ~/sweep-ownership.json

``--group all`` trains one adapter on every group's buffer together and routes with ``router.grouping =
pooled`` (every dev problem with a routable diagnostic is its).

A recipe is ``key=value`` pairs over the night's settings it starts from (the learning curve's short
preset): ``lr`` (share.seed_learning_rate, the LoRA seed's), ``steps`` (night.seed_steps), ``epochs``
(night.seed_epochs: at least that many passes over the examples, ``TrainConfig.seed_steps_for``), ``copy``
(night.copy_weight), ``examples`` (night.max_examples_per_task), ``rank`` (share.lora_rank), ``thr``
(share.variance_threshold, Phase 1's kept variance: how much of the seed the basis keeps). Each row: the dev
problems the group routes, base and recipe pass counts, wins/losses and the one-sided sign-test p against
the base model, the seed's steps and first and last loss, seconds, per-problem outcomes. Resumable:
``--out`` keeps finished rows (and the base's outcomes). One model job: do not run it beside another.

The night itself, after the fact (the night's database: ``<night-dir>/dreamfix.db`` unless ``--night-db``;
its newest succeeded night unless ``--night-run``):

* ``--candidate [TASK@vN ...]`` adds a row per stored candidate adapter (the night's candidate for
  ``--group`` when none is named; rejected ones too), loaded from the night's database with its basis and
  evaluated beside the recipes on the same problems.
* ``--pool gate`` evaluates on the night's own verified gate pool (``service.night.gate_problems``, redrawn
  at the night's ``night.gate_pool``: the summary's ``gate_pool.size``, or ``--gate-pool``) instead of the
  dev set. Rows run the problems routed to the group; the others keep the base's outcome (the night's
  one-shot shortcut, exact). When the night's summary holds its per-problem outcomes (``gate_outcomes``,
  service/night.py) every row is also paired with the night's served model as the gate pairs it (W/L and
  the sign test's p against served, its own outcomes on the routed problems, served's elsewhere). After the
  fact this selects nothing: a recipe is chosen on the dev set, never on the gate pool.

    python tests/benchmarks/recipe_sweep.py --night-dir ~/lcp --group all --dev 120 --candidate \\
        --recipes "lr=1e-3,examples=256,steps=60" --out ~/sweep-dev.json
    python tests/benchmarks/recipe_sweep.py --night-dir ~/lcp --group all --pool gate --candidate \\
        --recipes "lr=1e-3,examples=256,steps=60" --out ~/sweep-gate.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from router.tasks import POOLED_TASK
from tests.benchmarks.learning_curve import PRESETS, SHORT_PRESET, provisioned_model

#: Dev problems' generator seed: the pools' namespace (agent.pools.POOL_SEED_BASE), past the gate and test
#: pools' own seeds.
DEV_SEED_OFFSET = 3
#: Where the rows are evaluated: a dev set of its own (the default) or the night's gate pool.
POOLS = ("dev", "gate")
#: A candidate row's key in ``--out``'s rows: ``candidate:TASK@vN``.
CANDIDATE_ROW = "candidate:"
RECIPE_KEYS = {
    "lr": ("share", "seed_learning_rate", float),
    "steps": ("night", "seed_steps", int),
    "epochs": ("night", "seed_epochs", float),
    "copy": ("night", "copy_weight", float),
    "examples": ("night", "max_examples_per_task", int),
    "rank": ("share", "lora_rank", int),
    "thr": ("share", "variance_threshold", float),
}


def night_sizes() -> list[dict[str, int]]:
    """The gate/test pool sizes and night draws of every preset the learning curve runs and of the daemon's
    defaults: a dev problem must be apart from all of them (pools of other sizes hold other problems)."""
    from service.settings import NightSettings

    default = NightSettings()
    keys = ("gate_pool", "test_pool", "generated_examples")
    nights = [{}, *(preset.get("night", {}) for preset in PRESETS.values())]
    sizes = {tuple(int(night.get(k, getattr(default, k))) for k in keys) for night in nights}
    return [dict(zip(keys, size, strict=True)) for size in sorted(sizes)]


def parse_recipe(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in RECIPE_KEYS:
            raise SystemExit(f"unknown recipe key {key!r}: one of {', '.join(RECIPE_KEYS)}")
        out[key] = RECIPE_KEYS[key][2](value)
    return out


def settings_for(
    recipe: dict[str, Any], data_dir: Path, model: str, cache: Path, pooled: bool = False
) -> Any:
    from service.settings import Settings

    values: dict[str, Any] = {k: dict(v) for k, v in SHORT_PRESET.items()}
    for key, value in recipe.items():
        section, field, _ = RECIPE_KEYS[key]
        values.setdefault(section, {})[field] = value
    values["model"] = model
    values["scheduler"] = {"enabled": False}
    if pooled:
        values["router"] = {"grouping": "pooled"}
    return Settings(data_dir=data_dir, sandbox_cache=cache, **values)


def buffered_examples(replay_dir: Path, group: str) -> list[Any]:
    """The examples a night buffered for ``group``; for the pooled task, every group's buffer together."""
    from learner.replay import ReplayBuffer

    buffer = ReplayBuffer(replay_dir, cap=10**6)
    names = buffer.groups() if group == POOLED_TASK else [group]
    return [e.example for name in names for e in buffer.load(name)]


def dev_problems(n: int, sandbox: Any, nights: int) -> list[Any]:
    """``n`` verified generated problems disjoint from the pools and night draws 1..nights of every preset and
    of the daemon's defaults (``night_sizes``), and from the koans."""
    from agent.dataset import verify_examples
    from agent.koans import eval_koans, load_koans
    from agent.pools import POOL_SEED_BASE, build_pools, example_hashes
    from agent.problems import Problem
    from service.night import generated_draws

    sizes = night_sizes()
    real = [build_pools(size["gate_pool"], size["test_pool"], eval_koans()) for size in sizes]
    taken: set[str] = set()
    for koan in load_koans():
        taken |= example_hashes(koan)
    for run_id in range(1, nights + 1):
        for count in {size["generated_examples"] for size in sizes}:
            for draw in generated_draws(count, seed=run_id):
                taken |= example_hashes(draw)
    drawn = build_pools(2 * n, 0, eval_koans(), gate_seed=POOL_SEED_BASE + DEV_SEED_OFFSET).gate
    fresh = [
        e
        for e in drawn
        if not (example_hashes(e) & taken)
        and not any(pools.blocks(e.broken) or pools.blocks(e.fixed) for pools in real)
    ]
    verdicts = verify_examples(sandbox, fresh)
    # the draw is ordered family by family: take the verified ones round-robin over the families, so that
    # the first n cover every family (a plain [:n] kept only the first half of the families, alphabetically)
    by_family: dict[str, list[Any]] = {}
    for e, why in zip(fresh, verdicts, strict=True):
        if why is None:
            by_family.setdefault(e.family, []).append(e)
    ok = [e for column in itertools.zip_longest(*by_family.values()) for e in column if e is not None][:n]
    return [
        Problem(f"dev-{i:04d}-{e.family}", e.broken, e.mode, e.edition, e.tests, e.family)
        for i, e in enumerate(ok)
    ]


def parse_version(text: str) -> tuple[str, int]:
    """``TASK@vN`` (an adapter version, as a night's summary names its candidates) → (task, N)."""
    task, sep, version = text.partition("@v")
    if not sep or not task or not version.isdigit():
        raise SystemExit(f"a candidate is TASK@vN (e.g. all@v1), got {text!r}")
    return task, int(version)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--night-dir", required=True, type=Path, help="a night's data dir (its replay/ buffers, its database)"
    )
    parser.add_argument(
        "--group",
        required=True,
        help=f"a group of the coarse router; {POOLED_TASK!r}: one adapter on every group's buffer (router.grouping=pooled)",
    )
    parser.add_argument(
        "--pool",
        choices=POOLS,
        default="dev",
        help="dev: a dev set apart from everything the night selects or reports on (default); gate: the "
        "night's own gate pool, paired with its served outcomes where the night recorded them",
    )
    parser.add_argument(
        "--dev", type=int, default=120, help="dev problems drawn (all groups; the group's are used)"
    )
    parser.add_argument("--nights", type=int, default=5, help="night draws 1..N kept out of the dev set")
    parser.add_argument("--recipes", nargs="*", default=[], help="recipes to train, e.g. lr=1e-3,epochs=1")
    parser.add_argument(
        "--candidate",
        nargs="*",
        metavar="TASK@vN",
        help="also evaluate the night's stored candidate adapter(s): the night's candidate for --group when "
        "none is named",
    )
    parser.add_argument(
        "--night-run",
        type=int,
        help="the night (run id) of --candidate and --pool gate (default: the newest)",
    )
    parser.add_argument("--night-db", help="the night's database URL (default: SQLite in --night-dir)")
    parser.add_argument(
        "--gate-pool",
        type=int,
        help="--pool gate: the night.gate_pool the night drew (default: its summary's gate_pool.size)",
    )
    parser.add_argument(
        "--model",
        default="qwen2.5-coder-0.5b-instruct",
        help="a model name (found provisioned as learning_curve.py finds it) or a folder",
    )
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    if not args.recipes and args.candidate is None:
        parser.error("nothing to evaluate: give --recipes, --candidate or both")
    for text in args.recipes:
        parse_recipe(text)  # refused now, not after the model and the base's evaluation
    for spec in args.candidate or []:
        task, _ = parse_version(spec)
        if task != args.group:
            parser.error(f"--candidate {spec} is not an adapter of --group {args.group}")
    if args.gate_pool is not None and args.gate_pool < 1:
        parser.error("--gate-pool must be ≥ 1")
    return args


def night_db_url(night_dir: Path, url: str | None) -> str:
    """The night's database: ``url``, else the daemon's SQLite default in its data dir."""
    return url or f"sqlite:///{night_dir / 'dreamfix.db'}"


def night_run(db: Any, run_id: int | None) -> tuple[int, dict[str, Any]]:
    """(id, summary) of night ``run_id``, else of the newest succeeded night."""
    from service.db.repositories import RunRepository

    with db.session() as s:
        repo = RunRepository(s)
        if run_id is not None:
            run = repo.get(run_id)
            if run is None or run.kind != "night":
                raise SystemExit(f"run {run_id} is not a night of this database")
        else:
            run = next((r for r in repo.recent("night", limit=1000) if r.status == "succeeded"), None)
            if run is None:
                raise SystemExit("no succeeded night in the night's database")
        return int(run.id), dict(run.summary or {})


def candidate_versions(specs: Sequence[str], group: str, summary: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The candidates to evaluate: those named, else the night's own candidate for ``group``."""
    if specs:
        return [parse_version(spec) for spec in specs]
    named = (summary.get("candidates") or {}).get(group)
    if named is None:
        have = ", ".join(sorted(summary.get("candidates") or {})) or "none"
        raise SystemExit(f"the night has no candidate for {group!r} (its candidates: {have}); name one")
    return [parse_version(named)]


def load_candidate(db: Any, task: str, version: int, cache: Path, model_id: str) -> tuple[Any, Any]:
    """A stored adapter version (any status) and its basis, from the database's artifacts (sha256-checked,
    as a replica loads them): (the basis's layer bases, the task's coefficients)."""
    from learner.share.artifacts import load_bases, load_task_version
    from service.db.artifacts import local_artifact
    from service.db.repositories import AdapterRepository, BasisRepository

    with db.session() as s:
        row = AdapterRepository(s).get(task, version)
        if row is None:
            raise SystemExit(f"no adapter {task}@v{version} in the night's database")
        basis_row = BasisRepository(s).get(row.basis_id)
        if basis_row is None:
            raise SystemExit(f"{task}@v{version}: its basis {row.basis_id} is not in the night's database")
        basis = load_bases(local_artifact(basis_row, cache, f"basis {basis_row.id}"))
        coeffs = load_task_version(
            local_artifact(row, cache, f"{task}@v{version}"),
            expect_basis_id=basis.basis_id,
            expect_base_model_id=model_id,
        ).coeffs
    return basis.bases, coeffs


def gate_pool_size(explicit: int | None, summary: Mapping[str, Any]) -> int:
    """The night.gate_pool the night drew its gate pool at: ``--gate-pool``, else its summary's."""
    if explicit is not None:
        return explicit
    size = (summary.get("gate_pool") or {}).get("size")
    if size is None:
        raise SystemExit(
            "the night's summary does not say its gate pool's size (a night from before it was recorded): "
            "pass --gate-pool (its night.gate_pool)"
        )
    return int(size)


def load_state(path: Path, pool: str, night: int | None) -> dict[str, Any]:
    """``--out``'s saved rows to resume; a file of another pool or another night is refused (a file from
    before ``--pool`` is a dev-set one)."""
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if state.get("problems") is not None and state.get("pool", "dev") != pool:
        raise SystemExit(
            f"{path} holds rows on the {state.get('pool', 'dev')} pool, not {pool}: use another --out"
        )
    if night is not None and state.get("night_run") not in (None, night):
        raise SystemExit(
            f"{path} holds rows for night run {state['night_run']}, not {night}: use another --out"
        )
    state.setdefault("rows", {})
    state["pool"] = pool
    if night is not None:
        state["night_run"] = night
    return state


def paired(reference: Mapping[str, bool], outcome: Mapping[str, bool]) -> dict[str, Any]:
    """``outcome`` against ``reference`` on the problems both have: n, passes, wins/losses, the one-sided
    sign test's p for a gain (``service.gate.sign_test_p``)."""
    from service.gate import sign_test_p

    ids = sorted(set(reference) & set(outcome))
    wins = sum(1 for i in ids if outcome[i] and not reference[i])
    losses = sum(1 for i in ids if reference[i] and not outcome[i])
    return {
        "n": len(ids),
        "passed": sum(1 for i in ids if outcome[i]),
        "reference": sum(1 for i in ids if reference[i]),
        "wins": wins,
        "losses": losses,
        "p": sign_test_p(wins, losses),
    }


def comparisons(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every row of ``state`` (the base first) as the table shows it: passes on the whole pool and the paired
    comparison with the base model; with the night's served outcomes (``--pool gate``), with those as well.
    A row's outcomes are the problems it ran (those routed to the group); elsewhere it is the base model
    (against the base) or, as in the night's one-shot gate, the served model (against served)."""
    base: dict[str, bool] = state["base"]
    served: dict[str, bool] | None = state.get("served")
    rows = [("base", None, base)]
    rows += [(name, row, row["outcomes"]) for name, row in state["rows"].items()]
    out = []
    for name, row, own in rows:
        line: dict[str, Any] = {"row": name, "vs_base": paired(base, {**base, **own})}
        if row is not None:
            line["loss"] = row.get("loss_first_last")
            line["steps"] = row.get("steps")
        if served is not None:
            line["vs_served"] = paired(served, {**served, **own})
        out.append(line)
    return out


def table(state: Mapping[str, Any]) -> str:
    lines = comparisons(state)
    with_served = "served" in state
    head = f"{'row':<44} {'pass':>9} {'W/L':>7} {'p':>8}"
    if with_served:
        head += f" {'served':>9} {'W/L':>7} {'p':>8}"
    out = [head + f"  {'steps':>5} {'loss first, last':>18}"]
    for line in lines:
        b = line["vs_base"]
        text = (
            f"{line['row']:<44} {b['passed']:>4}/{b['n']:<4} {b['wins']:>3}/{b['losses']:<3} {b['p']:>8.3g}"
        )
        if with_served:
            v = line["vs_served"]
            text += f" {v['reference']:>4}/{v['n']:<4} {v['wins']:>3}/{v['losses']:<3} {v['p']:>8.3g}"
        loss = line.get("loss")
        text += f"  {line.get('steps') or '':>5} {'' if loss is None else str(loss):>18}"
        out.append(text.rstrip())
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from agent.koans import eval_koans
    from agent.pools import build_pools
    from agent.problems import Problem
    from agent.sandbox import Job
    from learner.replay import mix
    from learner.share.layer import attach_share
    from learner.share.phases import phase1
    from learner.share.seeds import train_lora_seed
    from service.compose import load_runtime, make_sandbox
    from service.db import migrate
    from service.db.session import Database
    from service.night import evaluate_problems, gate_problems, gate_strategy, train_config
    from service.serving import ServingRuntime

    args.model = provisioned_model(args.model, args.night_dir, os.environ)
    # the night's database, for its candidates and its gate pool
    night_db = (
        Database(night_db_url(args.night_dir, args.night_db))
        if args.candidate is not None or args.pool == "gate"
        else None
    )
    run_id, summary = night_run(night_db, args.night_run) if night_db is not None else (None, {})
    candidates = candidate_versions(args.candidate, args.group, summary) if args.candidate is not None else []
    state = load_state(args.out, args.pool, run_id)
    work = Path(tempfile.mkdtemp(prefix="recipe-sweep-"))
    cache = args.night_dir / "sandbox-cache"  # the night's verdicts, reused
    pooled = args.group == POOLED_TASK
    base_settings = settings_for({}, work, args.model, cache, pooled)
    migrate.upgrade(base_settings.db_url)
    db = Database(base_settings.db_url)
    sandbox = make_sandbox(base_settings)
    examples = buffered_examples(args.night_dir / "replay", args.group)
    if args.recipes and not examples:
        raise SystemExit(f"no buffered examples for {args.group} under {args.night_dir / 'replay'}")

    def shadow(settings: Any) -> Any:
        serving = ServingRuntime(settings, db, sandbox, lambda: load_runtime(settings))
        serving.runtime = load_runtime(settings)
        return serving

    serving = shadow(base_settings)
    if "problems" not in state:
        if args.pool == "dev":
            drawn = dev_problems(args.dev, sandbox, args.nights)
        else:
            size = gate_pool_size(args.gate_pool, summary)
            drawn = gate_problems(sandbox, build_pools(size, 0, eval_koans()).gate)
            state["gate_pool_size"] = size
        results = sandbox.check_many([Job(p.source, p.mode, p.edition) for p in drawn])
        routed = {
            p.id
            for p, r in zip(drawn, results, strict=True)
            if serving.router.route(r.diagnostics).task == args.group
        }
        # the dev set keeps only the group's problems; the gate pool all of them (its pass counts are the
        # night's), the rows running the routed ones
        kept = [p for p in drawn if p.id in routed] if args.pool == "dev" else drawn
        state["problems"] = [
            {k: getattr(p, k) for k in ("id", "source", "mode", "edition", "tests", "family")} for p in kept
        ]
        state["routed"] = sorted(routed)
    problems = [Problem(**p) for p in state["problems"]]
    # a file from before "routed" was kept holds the group's problems only
    routed_ids = set(state["routed"]) if "routed" in state else {p.id for p in problems}
    routed_problems = [p for p in problems if p.id in routed_ids]
    night_outcomes = summary.get("gate_outcomes") or {}
    if args.pool == "gate" and night_outcomes.get("served") is not None:
        state["served"] = night_outcomes["served"]
    strategy = gate_strategy(base_settings)
    if strategy.max_attempts != 1:
        raise SystemExit("the rows run only the group's problems: exact for a one-shot gate only")
    print(
        f"{args.group}: {len(examples)} buffered examples; {args.pool} pool: {len(problems)} problems, "
        f"{len(routed_problems)} routed to the group",
        flush=True,
    )
    if "base" not in state:
        started = time.monotonic()
        state["base"] = evaluate_problems(serving, problems, strategy)
        state["base_s"] = round(time.monotonic() - started, 1)
        args.out.write_text(json.dumps(state, indent=1))
    base: dict[str, bool] = state["base"]
    print(f"base: {sum(base.values())}/{len(base)} ({state['base_s']} s)", flush=True)
    if "served" in state:
        served = paired(state["served"], base)
        if served["n"] != len(problems):
            print(
                f"warning: the night recorded {len(state['served'])} gate problems, {served['n']} of them "
                f"among these {len(problems)}: paired on those (another --gate-pool?)",
                flush=True,
            )
        print(
            f"the night's served model (run {run_id}): {served['reference']}/{served['n']}; the base here "
            f"{served['wins']} wins / {served['losses']} losses against it",
            flush=True,
        )

    def evaluate_row(serving: Any, started: float, extra: dict[str, Any]) -> dict[str, Any]:
        outcome = evaluate_problems(serving, routed_problems, strategy)
        vs_base = paired(base, {**base, **outcome})
        return {
            **extra,
            "passed": vs_base["passed"],
            "base": vs_base["reference"],
            "n": vs_base["n"],
            "wins": vs_base["wins"],
            "losses": vs_base["losses"],
            "p": round(vs_base["p"], 4),
            "seconds": round(time.monotonic() - started, 1),
            # problem id → fixed on the problems the row ran (the group's), for pairing rows with each other
            "outcomes": outcome,
        }

    def save(name: str, row: dict[str, Any]) -> None:
        state["rows"][name] = row
        args.out.write_text(json.dumps(state, indent=1))
        print(json.dumps({name: {k: v for k, v in row.items() if k != "outcomes"}}), flush=True)

    del serving
    for text in args.recipes:
        if text in state["rows"]:
            continue
        recipe = parse_recipe(text)
        settings = settings_for(recipe, work, args.model, cache, pooled)
        train = train_config(settings)
        started = time.monotonic()
        serving = shadow(settings)
        runtime = serving.runtime
        chosen = mix(examples, [], settings.night.max_examples_per_task, random.Random(f"sweep:{args.group}"))
        steps = train.seed_steps_for(len(chosen))
        seed = train_lora_seed(
            runtime.model,
            runtime.tokenizer,
            chosen,
            args.group,
            train.seed_config(steps=steps),
            base_model_id=runtime.model_id,
        )
        result = phase1([seed.seed], threshold=train.threshold, cap=train.k_cap)
        serving.bank = attach_share(runtime.model, result.bases, base_model_id=runtime.model_id)
        runtime.bank = serving.bank
        serving.bank.set_task(args.group, result.coefficients[args.group], 1)
        loss = [round(seed.losses[0], 4), round(seed.losses[-1], 4)] if seed.losses else None
        extra = {"recipe": recipe, "examples": len(chosen), "steps": steps, "loss_first_last": loss}
        save(text, evaluate_row(serving, started, extra))
        del serving, runtime

    for task, version in candidates:
        name = f"{CANDIDATE_ROW}{task}@v{version}"
        if name in state["rows"]:
            continue
        assert night_db is not None
        started = time.monotonic()
        serving = shadow(base_settings)
        runtime = serving.runtime
        bases, coeffs = load_candidate(night_db, task, version, work / "db-cache", runtime.model_id)
        serving.bank = attach_share(runtime.model, bases, base_model_id=runtime.model_id)
        runtime.bank = serving.bank
        serving.bank.set_task(task, coeffs, version)
        extra = {"candidate": f"{task}@v{version}", "night_run": run_id, "loss_first_last": None}
        row = evaluate_row(serving, started, extra)
        night_gate = (night_outcomes.get("candidates") or {}).get(task)
        if (
            args.pool == "gate"
            and night_gate is not None
            and (summary.get("candidates") or {}).get(task) == extra["candidate"]
        ):
            # the night gated this very candidate on these problems: greedy decoding should agree
            row["agrees_with_nights_gate"] = sum(night_gate.get(i) == ok for i, ok in row["outcomes"].items())
        save(name, row)
        del serving, runtime

    print()
    print(table(state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
