"""Frozen-prefix cache vs full forwards on the default model: LoRA seed steps and edit-NLL scoring, side by
side in one run (same examples, same adapted layers), with the numerical difference between the two paths.

    DREAMFIX_THREADS=1 python tests/benchmarks/bench_prefix_cache.py --layers 18,19,20,21,22,23 --steps 3

"cold" = the cache starts empty (its prefix passes are counted in the time), "warm" = the same work again
with the prefixes already cached — what every later training run and scoring pass of an experiment pays.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from agent.koans import train_koans
from agent.loop import DEFAULT_OUTPUT_FORMAT
from agent.prompt import training_example
from agent.sandbox import Job
from learner.share.examples import encode_example
from learner.share.prefix import FrozenPrefix
from learner.share.seeds import SeedConfig, train_lora_seed
from router import TaskRouter
from service.compose import load_runtime, make_sandbox
from service.research.data import eval_items
from service.research.experiment import ExperimentConfig
from service.research.scoring import reference_nll
from service.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", default="18,19,20,21,22,23")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--family", default="borrows")
    parser.add_argument("--items", type=int, default=4, help="eval koans scored")
    args = parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")]

    settings = get_settings()
    runtime = load_runtime(settings)
    sandbox = make_sandbox(settings)
    model, tokenizer = runtime.model, runtime.tokenizer
    koans = [k for k in train_koans() if k.family == args.family][: args.steps * args.batch_size]
    checks = sandbox.check_many([Job(k.broken, k.mode, k.edition) for k in koans])
    examples = [
        training_example(k.broken, c.diagnostics, k.fixed, False, DEFAULT_OUTPUT_FORMAT)
        for k, c in zip(koans, checks, strict=True)
    ]
    families = sorted({k.family for k in train_koans()})
    items = eval_items(sandbox, TaskRouter(), families=families, per_family=1)[: args.items]
    config = SeedConfig(
        rank=8,
        alpha=16,
        target_modules=ExperimentConfig(layers=layers).target_names(model),
        steps=args.steps,
        batch_size=args.batch_size,
        max_length=1024,
        progress=False,
    )
    tokens = [len(encode_example(tokenizer, m, a, 1024).input_ids) for m, a in examples]
    print(
        f"model {runtime.model_id}, threads {torch.get_num_threads()}, adapted layers {layers}, "
        f"{len(examples)} training examples ({sum(tokens) // len(tokens)} tokens mean), {len(items)} eval koans"
    )

    reference_nll(runtime, items[:1])  # warm-up: first-call allocations are not charged to either path
    rows: list[tuple[str, float, float]] = []

    def timed(label: str, fn, unit: int) -> object:
        started = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - started
        rows.append((label, seconds, seconds / unit))
        print(f"{label:<34} {seconds:8.1f} s  {seconds / unit:7.2f} s/unit", flush=True)
        return out

    full = timed(
        "LoRA steps, full forward",
        lambda: train_lora_seed(model, tokenizer, examples, "f", config),
        args.steps,
    )
    prefix = FrozenPrefix(model, min(layers))
    cold = timed(
        "LoRA steps, prefix cache (cold)",
        lambda: train_lora_seed(model, tokenizer, examples, "c", config, prefix=prefix),
        args.steps,
    )
    warm = timed(
        "LoRA steps, prefix cache (warm)",
        lambda: train_lora_seed(model, tokenizer, examples, "w", config, prefix=prefix),
        args.steps,
    )
    score_full = timed("edit-NLL scoring, full forward", lambda: reference_nll(runtime, items), len(items))
    timed("edit-NLL scoring, prefix (cold)", lambda: reference_nll(runtime, items, prefix=prefix), len(items))
    score_warm = timed(
        "edit-NLL scoring, prefix (warm)", lambda: reference_nll(runtime, items, prefix=prefix), len(items)
    )
    by = {label: per for label, _s, per in rows}
    loss_diff = max(abs(a - b) for a, b in zip(full.losses, warm.losses, strict=True))
    nll_diff = max(abs(a["edit_nll"] - b["edit_nll"]) for a, b in zip(score_full, score_warm, strict=True))
    summary = {
        "training_speedup_cold": round(
            by["LoRA steps, full forward"] / by["LoRA steps, prefix cache (cold)"], 2
        ),
        "training_speedup_warm": round(
            by["LoRA steps, full forward"] / by["LoRA steps, prefix cache (warm)"], 2
        ),
        "scoring_speedup_warm": round(
            by["edit-NLL scoring, full forward"] / by["edit-NLL scoring, prefix (warm)"], 2
        ),
        "max_loss_difference": loss_diff,
        "losses_full": [round(x, 5) for x in full.losses],
        "losses_cached": [round(x, 5) for x in cold.losses],
        "max_edit_nll_difference": nll_diff,
        "cache": prefix.stats(),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
