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
preset): ``lr`` (share.seed_learning_rate, the LoRA seed's), ``steps`` (night.seed_steps), ``copy`` (night.copy_weight),
``examples`` (night.max_examples_per_task), ``rank`` (share.lora_rank), ``thr`` (share.variance_threshold,
Phase 1's kept variance: how much of the seed the basis keeps). Each row: the dev problems the group
routes, base and recipe pass counts, wins/losses and the one-sided sign-test p against the base model, the
seed's first and last loss, seconds, per-problem outcomes. Resumable: ``--out`` keeps finished recipes (and the base's outcomes).
One model job: do not run it beside another.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from router.tasks import POOLED_TASK
from tests.benchmarks.learning_curve import PRESETS, SHORT_PRESET, provisioned_model

#: Dev problems' generator seed: the pools' namespace (agent.pools.POOL_SEED_BASE), past the gate and test
#: pools' own seeds.
DEV_SEED_OFFSET = 3
RECIPE_KEYS = {
    "lr": ("share", "seed_learning_rate", float),
    "steps": ("night", "seed_steps", int),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--night-dir", required=True, type=Path, help="a night's data dir (its replay/ buffers)"
    )
    parser.add_argument(
        "--group",
        required=True,
        help=f"a group of the coarse router; {POOLED_TASK!r}: one adapter on every group's buffer (router.grouping=pooled)",
    )
    parser.add_argument(
        "--dev", type=int, default=120, help="dev problems drawn (all groups; the group's are used)"
    )
    parser.add_argument("--nights", type=int, default=5, help="night draws 1..N kept out of the dev set")
    parser.add_argument("--recipes", nargs="+", required=True)
    parser.add_argument(
        "--model",
        default="qwen2.5-coder-0.5b-instruct",
        help="a model name (found provisioned as learning_curve.py finds it) or a folder",
    )
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)

    from agent.sandbox import Job
    from learner.replay import mix
    from learner.share.layer import attach_share
    from learner.share.phases import phase1
    from learner.share.seeds import train_lora_seed
    from service.compose import load_runtime, make_sandbox
    from service.db import migrate
    from service.db.session import Database
    from service.gate import sign_test_p
    from service.night import evaluate_problems, gate_strategy, train_config
    from service.serving import ServingRuntime

    args.model = provisioned_model(args.model, args.night_dir, os.environ)
    state: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    state.setdefault("rows", {})
    work = Path(tempfile.mkdtemp(prefix="recipe-sweep-"))
    cache = args.night_dir / "sandbox-cache"  # the night's verdicts, reused
    pooled = args.group == POOLED_TASK
    base_settings = settings_for({}, work, args.model, cache, pooled)
    migrate.upgrade(base_settings.db_url)
    db = Database(base_settings.db_url)
    sandbox = make_sandbox(base_settings)
    examples = buffered_examples(args.night_dir / "replay", args.group)
    if not examples:
        raise SystemExit(f"no buffered examples for {args.group} under {args.night_dir / 'replay'}")

    def shadow(settings: Any) -> Any:
        serving = ServingRuntime(settings, db, sandbox, lambda: load_runtime(settings))
        serving.runtime = load_runtime(settings)
        return serving

    serving = shadow(base_settings)
    if "problems" not in state:
        problems = dev_problems(args.dev, sandbox, args.nights)
        results = sandbox.check_many([Job(p.source, p.mode, p.edition) for p in problems])
        routed = [
            p
            for p, r in zip(problems, results, strict=True)
            if serving.router.route(r.diagnostics).task == args.group
        ]
        state["problems"] = [
            {k: getattr(p, k) for k in ("id", "source", "mode", "edition", "tests", "family")} for p in routed
        ]
    from agent.problems import Problem

    problems = [Problem(**p) for p in state["problems"]]
    strategy = gate_strategy(base_settings)
    print(f"{args.group}: {len(examples)} buffered examples, {len(problems)} routed dev problems", flush=True)
    if "base" not in state:
        started = time.monotonic()
        state["base"] = evaluate_problems(serving, problems, strategy)
        state["base_s"] = round(time.monotonic() - started, 1)
        args.out.write_text(json.dumps(state, indent=1))
    base: dict[str, bool] = state["base"]
    print(f"base: {sum(base.values())}/{len(base)} ({state['base_s']} s)", flush=True)
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
        seed = train_lora_seed(
            runtime.model,
            runtime.tokenizer,
            chosen,
            args.group,
            train.seed_config(),
            base_model_id=runtime.model_id,
        )
        result = phase1([seed.seed], threshold=train.threshold, cap=train.k_cap)
        serving.bank = attach_share(runtime.model, result.bases, base_model_id=runtime.model_id)
        runtime.bank = serving.bank
        serving.bank.set_task(args.group, result.coefficients[args.group], 1)
        outcome = evaluate_problems(serving, problems, strategy)
        wins = sum(outcome[i] and not base[i] for i in base)
        losses = sum(base[i] and not outcome[i] for i in base)
        row = {
            "recipe": recipe,
            "examples": len(chosen),
            "passed": sum(outcome.values()),
            "base": sum(base.values()),
            "n": len(base),
            "wins": wins,
            "losses": losses,
            "p": round(sign_test_p(wins, losses), 4),
            "loss_first_last": [round(seed.losses[0], 4), round(seed.losses[-1], 4)] if seed.losses else None,
            "seconds": round(time.monotonic() - started, 1),
            "outcomes": outcome,  # problem id → fixed, for pairing recipes with each other
        }
        state["rows"][text] = row
        args.out.write_text(json.dumps(state, indent=1))
        print(json.dumps({text: row}), flush=True)
        del serving, runtime

    print(f"\n{'recipe':<28} {'pass':>9} {'base':>9} {'W/L':>7} {'p':>7} {'loss':>17}")
    for text, row in state["rows"].items():
        loss = row["loss_first_last"]
        print(
            f"{text:<28} {row['passed']:>4}/{row['n']:<4} {row['base']:>4}/{row['n']:<4} "
            f"{row['wins']:>3}/{row['losses']:<3} {row['p']:>7.3f} {loss!s:>17}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
