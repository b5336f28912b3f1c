"""What one sampling step costs beside the model: the top-p nucleus over the default model's vocabulary.

    python tests/benchmarks/bench_sampling.py [--vocab 151936] [--rounds 5] [--threads 1]

Per batch size, interleaved round by round: the full-vocabulary sort (what ``ModelRuntime._choose`` did
until 2026-12-07) and ``learner.runtime.nucleus`` (the most likely ``NUCLEUS_CANDIDATES`` tokens first, the
full sort only when their mass does not exceed top_p), each followed by the per-row multinomial draw.
The logits are real: the default model (float32 here) reads a koan's serving prompt followed by the koan's
reference fix as its reply, and each reply position's next-token logits is one decode step's (temperature
0.7, top_p 0.95, the night's sampling settings). Prints milliseconds per decode step (medians over rounds),
how often the shortcut had to fall back to the full sort, and the load average. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.koans import load_koans
from agent.prompt import build_messages
from agent.sandbox import Sandbox
from learner.runtime import NUCLEUS_CANDIDATES, ModelRuntime, nucleus

ROOT = Path(__file__).resolve().parents[2]


def reply_logits(model: str, koans: int) -> torch.Tensor:
    """Next-token logits at every reply position of ``koans`` koans' serving prompt + reference fix."""
    rt = ModelRuntime.load(model, dtype="float32", device="cpu", weights="float")
    sandbox, rows = Sandbox(), []
    for koan in sorted(load_koans(ROOT / "koans"), key=lambda k: k.id)[:koans]:
        diagnostics = sandbox.check(koan.broken, mode=koan.mode, edition=koan.edition).diagnostics
        messages = build_messages(koan.broken, diagnostics, hints=False)
        prompt = rt.tokenizer(rt.render(messages), add_special_tokens=False)["input_ids"]
        reply = rt.tokenizer(f"```rust\n{koan.fixed}```", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = rt.model(torch.tensor([prompt + reply])).logits[0, len(prompt) - 1 : -1]
        rows.append(logits.float())
    return torch.cat(rows)


def full_sort_step(probs: torch.Tensor, top_p: float) -> list[int]:
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    return [int(torch.multinomial(kept[j], 1)) for j in range(len(kept))]


def nucleus_step(probs: torch.Tensor, top_p: float) -> list[int]:
    kept, ids = nucleus(probs, top_p)
    return [int(ids[j, torch.multinomial(kept[j], 1)]) for j in range(len(kept))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(Path.home() / ".dreamfix/models/qwen2.5-coder-0.5b-instruct"))
    ap.add_argument("--koans", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}; threads {args.threads}")
    steps = torch.softmax(reply_logits(args.model, args.koans) / 0.7, dim=-1)
    covered = (steps.topk(NUCLEUS_CANDIDATES, dim=-1).values.sum(dim=-1) > 0.95).float().mean()
    print(
        f"{len(steps)} real decode steps, vocab {steps.shape[-1]}: the top {NUCLEUS_CANDIDATES} tokens hold "
        f"the nucleus in {covered:.1%} of them (the rest fall back to the full sort)"
    )
    g = torch.Generator().manual_seed(0)
    for batch in (1, 4, 8):
        times: dict[str, list[float]] = {"full sort": [], "nucleus()": []}
        for _ in range(args.rounds):
            probs = steps[torch.randint(0, len(steps), (batch,), generator=g)]
            for name, step in (("full sort", full_sort_step), ("nucleus()", nucleus_step)):
                t = time.perf_counter()
                step(probs, 0.95)
                times[name].append((time.perf_counter() - t) * 1e3)
        full, fast = (statistics.median(v) for v in times.values())
        print(
            f"batch {batch}: full sort {full:7.1f} ms/step   nucleus() {fast:6.1f} ms/step   ({full / fast:.0f}x)"
        )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
