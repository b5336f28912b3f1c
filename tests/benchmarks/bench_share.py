"""Share benchmark: forward cost of routed layers vs the base model and vs PEFT LoRA, swap latency, and
bytes per task.

    python tests/benchmarks/bench_share.py                 # default model if provisioned, else tiny
    python tests/benchmarks/bench_share.py --model tiny
    python tests/benchmarks/bench_share.py --model ~/.dreamfix/models/<folder> --tokens 16 --repeats 5

Variants run interleaved (round robin, minimum and median of ``--repeats``) so that load from other jobs on
a shared CPU hits them all alike; times are process CPU time (see ``timed``), so use ``--threads 1``. Forward = one prefill pass over (batch × tokens) random token ids, no KV cache;
time per token = pass time / (batch × tokens). The bases come from Phase 1 over random rank-8 LoRA seeds
(8 of them, cap 32) — the worst case for k; trained seeds share more and give smaller k.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from learner import routing
from learner.share.accounting import layer_shapes, lora_params, task_cost
from learner.share.layer import attach_share, find_target_layers
from learner.share.math import LoraSeed, SeedLayer, TaskCoefficients
from learner.share.peft_io import export_peft
from learner.share.phases import phase1

TARGETS = ["q_proj", "v_proj"]


def find_default_model() -> Path | None:
    root = Path.home() / ".dreamfix" / "models"
    for config in sorted(root.glob("*/config.json")):
        return config.parent
    return None


def load_model(spec: str) -> tuple[Any, str]:
    if spec == "tiny":
        from learner.tiny import build_tiny_model

        return build_tiny_model(seed=0)[0], "tiny-qwen2 (hidden 64, 2 layers)"
    if spec == "qwen0.5b-shapes":
        # Qwen2.5-Coder-0.5B's exact architecture with random weights: compute cost does not depend on the
        # values, so this measures the real shapes when the weights are not provisioned.
        from transformers import Qwen2Config, Qwen2ForCausalLM

        config = Qwen2Config(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
        torch.manual_seed(0)
        return Qwen2ForCausalLM(config).eval(), "Qwen2.5-0.5B architecture, random weights"
    from transformers import AutoModelForCausalLM

    folder = find_default_model() if spec == "default" else Path(spec).expanduser()
    if folder is None:
        print("default model not provisioned under ~/.dreamfix/models: using the tiny model", file=sys.stderr)
        return load_model("tiny")
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    return model, folder.name


def random_seeds(model: torch.nn.Module, count: int, rank: int) -> list[LoraSeed]:
    g = torch.Generator().manual_seed(0)
    layers = find_target_layers(model, TARGETS)
    return [
        LoraSeed(
            name=f"seed{i}",
            layers={
                key: SeedLayer(
                    a=torch.randn(rank, lin.in_features, generator=g) / lin.in_features**0.5,
                    b=torch.randn(lin.out_features, rank, generator=g) * 0.01,
                    scaling=2.0,
                )
                for key, lin in layers.items()
            },
        )
        for i in range(count)
    ]


def random_task(bases: dict, p: int, seed: int) -> dict[str, TaskCoefficients]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: TaskCoefficients(
            torch.randn(b.k_beta, p, generator=g) * 0.1, torch.randn(b.k_alpha, p, generator=g) * 0.1
        )
        for k, b in bases.items()
    }


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds the process spent in ``fn``. On a CPU shared with other jobs wall time mostly measures
    how often we were preempted; with one intra-op thread, process CPU time measures the work itself."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def layer_benchmark(model: Any, snap: Any, tokens: int, repeats: int) -> dict[str, Any]:
    """One q_proj and one v_proj of the model in isolation: base nn.Linear vs the ShareLinear routed to one
    task vs to a different task per row. Many cheap interleaved repeats give stable ratios even when the
    whole-model timings drown in other jobs' noise."""
    from learner.share.layer import share_layers

    layers = share_layers(model)
    picked = [next(m for k, m in layers.items() if k.endswith(name)) for name in TARGETS]
    out: dict[str, Any] = {}
    for layer in picked:
        for batch in (8, 32):
            x = torch.randn(batch, tokens, layer.in_features)
            cases = {
                "base": (None, layer.base),
                "one task": (snap.rows(["t0"] * batch), layer),
                "mixed": (snap.rows([f"t{i}" for i in range(batch)]), layer),
            }
            times: dict[str, list[float]] = {name: [] for name in cases}
            with torch.no_grad():
                for _ in range(repeats):
                    for name, (rows, module) in cases.items():
                        start = time.process_time()
                        if rows is None:
                            module(x)
                        else:
                            with routing.routed(rows, snap):
                                module(x)
                        times[name].append(time.process_time() - start)
            best = {name: min(t) for name, t in times.items()}
            key = f"layer {layer.key.rsplit('.', 1)[-1]} {layer.out_features}x{layer.in_features} b{batch}"
            out[key] = {
                "base_us": 1e6 * best["base"],
                "one_task_us": 1e6 * best["one task"],
                "mixed_us": 1e6 * best["mixed"],
                "one_task_overhead": best["one task"] / best["base"] - 1,
                "mixed_vs_one_task_throughput": best["one task"] / best["mixed"],
            }
    return {"layer_microbench": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="default", help="'default', 'tiny', 'qwen0.5b-shapes' or a model folder"
    )
    parser.add_argument("--tokens", type=int, default=16, help="tokens per row in each forward")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--p", type=int, default=1, help="pseudo-rank of the benchmarked tasks")
    parser.add_argument("--skip-peft", action="store_true")
    parser.add_argument(
        "--layer-only", action="store_true", help="only the per-layer micro-benchmark (stable on a busy CPU)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, model_name = load_model(args.model)
    vocab = model.config.vocab_size
    seeds = random_seeds(model, count=8, rank=8)
    bases = phase1(seeds, threshold=0.6, cap=32).bases
    peft_model = None
    peft_tasks: list[str] = []
    if not args.skip_peft:
        import tempfile

        from peft import PeftModel

        peft_base = copy.deepcopy(model)
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(8):
                folder = export_peft(
                    tmp, task=f"t{i}", version=1, bases=bases, coeffs_by_layer=random_task(bases, args.p, i)
                )
                if peft_model is None:
                    peft_model = PeftModel.from_pretrained(peft_base, str(folder), adapter_name=f"t{i}")
                else:
                    peft_model.load_adapter(str(folder), adapter_name=f"t{i}")
                peft_tasks.append(f"t{i}")
    bank = attach_share(model, bases)
    for i in range(32):
        bank.set_task(f"t{i}", random_task(bases, args.p, i), version=1)
    snap = bank.snapshot()

    g = torch.Generator().manual_seed(1)
    ids = {b: torch.randint(0, vocab, (b, args.tokens), generator=g) for b in (8, 32)}
    layer_figures = layer_benchmark(model, snap, args.tokens, repeats=max(50, 20 * args.repeats))
    if args.layer_only:
        print(
            json.dumps({"model": model_name, "threads": torch.get_num_threads(), **layer_figures}, indent=2)
        )
        return 0

    def forward(batch: int, tasks: list[str | None] | None) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                if tasks is None:
                    return model(ids[batch])
                with routing.routed(snap.rows(tasks), snap):
                    return model(ids[batch])

        return run

    variants: dict[str, Callable[[], object]] = {
        "base b8": forward(8, None),
        "routed 1 task b8": forward(8, ["t0"] * 8),
        "routed mixed 8 tasks b8": forward(8, [f"t{i}" for i in range(8)]),
        "base b32": forward(32, None),
        "routed 1 task b32": forward(32, ["t0"] * 32),
        "routed mixed 32 tasks b32": forward(32, [f"t{i}" for i in range(32)]),
    }
    if peft_model is not None:
        pm = peft_model

        def peft_one() -> object:
            pm.set_adapter("t0")
            with torch.no_grad():
                return pm(ids[8])

        def peft_switch() -> object:  # one task per batch: switch adapter, run a batch of its 8 rows
            out = None
            for name in peft_tasks:
                pm.set_adapter(name)
                with torch.no_grad():
                    out = pm(ids[8])
            return out

        def peft_mixed() -> object:  # PEFT's own mixed-adapter batch
            with torch.no_grad():
                return pm(ids[8], adapter_names=peft_tasks)

        variants["peft 1 adapter b8"] = peft_one
        variants["peft mixed 8 adapters b8 (adapter_names)"] = peft_mixed
        variants["peft switch 8 adapters, 8 batches of b8"] = peft_switch

    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    tokens_per_pass = {
        name: (32 if "b32" in name else 8) * args.tokens * (8 if "switch" in name else 1) for name in variants
    }
    # Minimum over the interleaved repeats: other jobs on a shared CPU only ever add time.
    per_token_ms = {name: 1000 * min(t) / tokens_per_pass[name] for name, t in times.items()}
    median_ms = {name: 1000 * statistics.median(t) / tokens_per_pass[name] for name, t in times.items()}

    swap_s: list[float] = []
    for i in range(20):
        coeffs = random_task(bases, args.p, 100 + i)
        start = time.perf_counter()
        bank.set_task("t0", coeffs, version=2 + i)
        swap_s.append(time.perf_counter() - start)  # wall time: what a waiting request would see

    shapes = layer_shapes(model, TARGETS)
    cost = task_cost(bank.bases, pseudo_rank=args.p, lora_rank=8)
    ks = sorted({(b.k_beta, b.k_alpha) for b in bank.bases.values()})
    figures = {
        "model": model_name,
        "threads": torch.get_num_threads(),
        "tokens_per_row": args.tokens,
        "repeats": args.repeats,
        **layer_figures,
        "per_token_ms": per_token_ms,
        "per_token_ms_median": median_ms,
        "routed_overhead_b8": per_token_ms["routed 1 task b8"] / per_token_ms["base b8"] - 1,
        "routed_overhead_b32": per_token_ms["routed 1 task b32"] / per_token_ms["base b32"] - 1,
        "mixed8_vs_one_task_throughput": per_token_ms["routed 1 task b8"]
        / per_token_ms["routed mixed 8 tasks b8"],
        "mixed32_vs_one_task_throughput": per_token_ms["routed 1 task b32"]
        / per_token_ms["routed mixed 32 tasks b32"],
        "swap_ms_median": 1000 * statistics.median(swap_s),
        "swap_ms_max": 1000 * max(swap_s),
        "tasks_in_bank": len(bank.tasks()),
        "layers": len(shapes),
        "k_beta_k_alpha": ks,
        "share_params_per_task": cost.share_params,
        "share_bytes_per_task_fp32": cost.share_bytes,
        "lora_r8_params_per_task": lora_params(shapes, 8),
        "lora_r8_bytes_per_task_fp32": cost.lora_bytes,
        "bytes_ratio": cost.ratio,
        "basis_bytes_fp32_once": cost.basis_bytes,
        "break_even_tasks": cost.break_even_tasks(),
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
