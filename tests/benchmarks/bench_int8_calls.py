"""How the int8 layers call fbgemm, side by side in one process: decode and prefill speed of three variants
of the same int8 model, whose outputs are bit-identical (the script checks the texts).

* ``sentinel, unfused``: each linear layer quantizes its per-token-scaled rows with fbgemm's dynamic
  kernel, a +1/−1 sentinel row appended to pin the call's range to [−1, 1] (the construction before
  2026-12-07 23:00 UTC, re-created here as the reference);
* ``fixed grid, unfused``: the same grid passed to fbgemm directly (``quant.input_grid``), one call per layer;
* ``fixed grid, fused``: the CPU default — q/k/v and gate/up share one call (``quant.fuse_siblings``).

Rounds interleave the variants (order reversed every other round); batch 8 runs on even rounds only.
Medians are printed with every round's figure, so a paired count of wins can be read off.

    python tests/benchmarks/bench_int8_calls.py --rounds 8 --tokens 40
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from learner import quant  # noqa: E402
from learner.runtime import GenerationParams, ModelRuntime  # noqa: E402
from tests.benchmarks.bench_decode import prompts  # noqa: E402

_sentinels: dict[int, torch.Tensor] = {}


def sentinel_call(rows: torch.Tensor, packed: Any) -> torch.Tensor:
    """The earlier construction: the dynamic kernel on the rows plus a +1/−1 row, that row sliced off."""
    width = rows.shape[1]
    if width not in _sentinels:
        row = torch.zeros(1, width)
        row[0, 0], row[0, 1] = 1.0, -1.0
        _sentinels[width] = row
    both = torch.cat([rows, _sentinels[width]])
    return quant._ops.linear_dynamic(both, packed, quant.reduce_range())[:-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fused = ModelRuntime.load(args.model, dtype="float32", device="cpu", weights="int8")
    plain = ModelRuntime.load(args.model, dtype="float32", device="cpu", weights="float")
    quant.quantize_for_decode(plain.model, fuse=False)
    fixed = quant._fixed_grid_linear
    arms = {
        "sentinel, unfused": (plain, sentinel_call),
        "fixed grid, unfused": (plain, fixed),
        "fixed grid, fused": (fused, fixed),
    }
    batch8 = prompts(8)
    one, full = GenerationParams(max_new_tokens=1), GenerationParams(max_new_tokens=args.tokens)
    figures: dict[str, dict[str, list[float]]] = {name: {"b1": [], "b8": [], "prefill": []} for name in arms}
    texts: dict[str, list[str]] = {}
    load_before = os.getloadavg()
    try:
        for r in range(args.rounds):
            for name in list(arms) if r % 2 == 0 else list(reversed(arms)):
                rt, call = arms[name]
                quant._fixed_grid_linear = call
                for label, batch in (("b1", batch8[:1]), ("b8", batch8)):
                    if label == "b8" and r % 2:
                        continue
                    t0 = time.perf_counter()
                    rt.generate(batch, one)
                    t_prefill = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    out = rt.generate(batch, full)
                    t_full = time.perf_counter() - t0
                    decoded = max(o.completion_tokens for o in out) - 1
                    figures[name][label].append(len(batch) * decoded / (t_full - t_prefill))
                    if label == "b1":
                        figures[name]["prefill"].append(out[0].prompt_tokens / t_prefill)
                    else:
                        texts[name] = [o.text for o in out]
    finally:
        quant._fixed_grid_linear = fixed
    load_after = os.getloadavg()
    print(
        f"threads {args.threads}, {args.tokens} greedy tokens, load {load_before[0]:.2f} → {load_after[0]:.2f}"
    )
    for name, cell in figures.items():
        rounds = ", ".join(f"{x:.1f}" for x in cell["b1"])
        print(
            f"{name:20s} decode b1 {statistics.median(cell['b1']):6.2f} tok/s [{rounds}]  "
            f"b8 {statistics.median(cell['b8']):6.1f}  prefill b1 {statistics.median(cell['prefill']):6.1f}"
        )
    reference = texts["sentinel, unfused"]
    same = {name: texts[name] == reference for name in arms}
    print("batch-8 texts equal the sentinel construction's:", same)
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
