"""Sampling throughput of best-of-n: candidates verified per CPU-second at n = 1, 4, 8 (and pass@n).

    python tests/benchmarks/bench_search.py [--koans 6] [--n 1 4 8] [--weights int8] [--threads 2] [--json OUT]

For each eval koan (one per family, in order), the serving prompt (rustc diagnostics, no hints) is sampled
n times in one batched call (temperature 0.7, top-p 0.95, each row its own seed), every candidate is parsed
and verified in the sandbox (2 parallel checks), and CPU time is counted for this process *and* its rustc
children (getrusage), so the figure is what the machine spends, not what one thread waits. The n values run
interleaved per koan. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.koans import load_koans  # noqa: E402
from agent.prompt import build_messages, parse_reply  # noqa: E402
from agent.sandbox import Sandbox  # noqa: E402
from learner.runtime import GenerationParams, ModelRuntime  # noqa: E402


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--weights", default="int8", choices=["float", "int8"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--koans", type=int, default=6)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rt = ModelRuntime.load(
        args.model, dtype="float32", device="cpu", threads=args.threads, weights=args.weights
    )
    sandbox = Sandbox()
    by_family: dict[str, Any] = {}
    for koan in sorted(load_koans(ROOT / "koans"), key=lambda k: k.id):
        if koan.split == "eval":
            by_family.setdefault(koan.family, koan)
    koans = list(by_family.values())[: args.koans]
    totals = {n: {"cpu_s": 0.0, "wall_s": 0.0, "candidates": 0, "solved": 0} for n in args.n}
    load_before = os.getloadavg()[0]
    for i, koan in enumerate(koans):
        diags = sandbox.check(koan.broken, mode=koan.mode, edition=koan.edition).diagnostics
        messages = build_messages(koan.broken, diags, hints=False)
        for n in args.n:
            params = GenerationParams(
                max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95, seed=1000 + i
            )
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            outs = rt.generate([messages] * n, params)
            cands = [parse_reply(g.text, koan.broken, "program") for g in outs]
            todo = [c for c in cands if c is not None]
            with ThreadPoolExecutor(max_workers=2) as pool:
                jobs = [(c, koan.mode, koan.edition, koan.tests) for c in todo]
                results = list(pool.map(lambda job: sandbox.verify(*job), jobs))
            t = totals[n]
            t["cpu_s"] += cpu_seconds() - cpu0
            t["wall_s"] += time.perf_counter() - wall0
            t["candidates"] += n
            t["solved"] += int(any(r.ok for r in results))
        print(f"{koan.id}: " + ", ".join(f"n={n} solved {totals[n]['solved']}" for n in args.n), flush=True)
    print(
        f"\n{args.weights}, {args.threads} threads, {len(koans)} koans, load {load_before:.2f} → {os.getloadavg()[0]:.2f}"
    )
    print("n   candidates/CPU-s   CPU-s/koan   wall-s/koan   pass@n")
    for n, t in totals.items():
        print(f"{n:<3} {t['candidates'] / t['cpu_s']:17.3f} {t['cpu_s'] / len(koans):12.1f} "
              f"{t['wall_s'] / len(koans):13.1f}   {t['solved']}/{len(koans)}")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps({"weights": args.weights, "koans": [k.id for k in koans], "totals": totals})
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
