"""Sampling throughput of best-of-n: candidates verified per CPU-second at n = 1, 4, 8, and pass@k.

    python tests/benchmarks/bench_search.py [--koans 6] [--n 1 4 8] [--weights int8] [--threads 2] [--json OUT]
    nohup python tests/benchmarks/bench_search.py --pool gate --problems 200 --n 1 4 8 --throughput-first 24 \
        --out-dir ~/search-gate > ~/search-gate/log 2>&1 &      # the base model's ceiling on the gate pool

Problems: the eval koans (one per family, in order: ``--pool koans``), or the night's gate or test pool of
generated problems (``--pool gate|test``: agent/pools.py, the same draw the night uses, verified in the
sandbox first). Each problem's serving prompt (its rustc diagnostics, with the daemon's hints setting) is
sampled n times in one batched call (temperature 0.7, top-p 0.95, each row its own seed), every candidate is
parsed and judged as the night judges (``judge_candidate``: compiles, tests pass, no original test deleted;
2 parallel checks), samples stop at their prompt's length like the night's (``--length-cap``), and CPU time is counted for this process *and* its
rustc children (getrusage), so the figure is what the machine spends, not what one thread waits. The n values
run interleaved per problem; ``--throughput-first K`` runs the smaller n only on the first K problems (the
largest n always runs: pass@k for every k ≤ n is estimated from its samples, with the unbiased estimator
1 − C(n−c, k)/C(n, k) of Chen et al. 2021, c = passing samples, and a 95% normal interval over problems).

``--out-dir`` makes it resumable: one JSON line per finished (problem, n) in ``search.jsonl``; a rerun skips
them, and ``--report-only`` prints the figures of the rows done so far. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.dataset import verify_examples  # noqa: E402
from agent.koans import load_koans  # noqa: E402
from agent.pools import build_pools, source_hash  # noqa: E402
from agent.prompt import build_messages, parse_reply  # noqa: E402
from agent.sandbox import Sandbox  # noqa: E402
from agent.validation import judge_candidate  # noqa: E402
from learner.runtime import GenerationParams, ModelRuntime  # noqa: E402
from service.night import NIGHT_SAMPLE_LENGTH_CAP  # noqa: E402

#: How candidates are judged, recorded with each resumable row (``judge_candidate``: the night's judge).
JUDGE = "judge_candidate"


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% normal interval (clipped to [0, 1])."""
    m = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return m, max(0.0, m - half), min(1.0, m + half)


def problems_for(pool: str, count: int, sandbox: Sandbox) -> list[tuple[str, Any]]:
    """(id, problem) pairs; a problem has broken, mode, edition, tests."""
    koans = sorted(load_koans(ROOT / "koans"), key=lambda k: k.id)
    if pool == "koans":
        by_family: dict[str, Any] = {}
        for koan in koans:
            if koan.split == "eval":
                by_family.setdefault(koan.family, koan)
        return [(k.id, k) for k in list(by_family.values())[:count]]
    evals = [k for k in koans if k.split == "eval"]
    pools = build_pools(count, count, evals)  # the test pool is drawn after the gate pool, as in the night
    drawn = pools.gate if pool == "gate" else pools.test
    problems = verify_examples(sandbox, drawn)
    kept = [e for e, why in zip(drawn, problems, strict=True) if why is None]
    return [(f"{e.family}/{source_hash(e.broken)[:12]}", e) for e in kept]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--weights", default="int8", choices=["float", "int8"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pool", default="koans", choices=["koans", "gate", "test"])
    ap.add_argument("--koans", type=int, default=6, help="with --pool koans: how many (one per family)")
    ap.add_argument("--problems", type=int, default=200, help="with --pool gate|test: problems drawn")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--throughput-first", type=int, help="run the smaller n only on the first K problems")
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument(
        "--length-cap",
        type=float,
        default=NIGHT_SAMPLE_LENGTH_CAP,
        help="each sample stops at this multiple of its prompt's tokens (the night's sampler; 0 = no cap)",
    )
    ap.add_argument("--no-hints", action="store_true", help="prompt without the fix hints (default: hints)")
    ap.add_argument("--out-dir", type=Path, help="resumable per-problem results (search.jsonl)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--report-only", action="store_true", help="with --out-dir: report the rows done so far")
    args = ap.parse_args()
    sandbox = Sandbox()
    problems = problems_for(args.pool, args.koans if args.pool == "koans" else args.problems, sandbox)
    done: dict[tuple[str, int], dict[str, Any]] = {}
    log = None
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path = args.out_dir / "search.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                # rows of another setting (before the judge and the cap were recorded: none) are redone
                if row.get("length_cap") == args.length_cap and row.get("judge") == JUDGE:
                    done[(row["id"], row["n"])] = row
        log = path.open("a")
    if args.report_only:  # what a stopped run has so far, without loading the model
        report(args, problems, done, os.getloadavg()[0])
        return 0
    rt = ModelRuntime.load(
        args.model, dtype="float32", device="cpu", threads=args.threads, weights=args.weights
    )
    n_max = max(args.n)
    load_before = os.getloadavg()[0]
    print(f"{len(problems)} problems ({args.pool}), {len(done)} (problem, n) rows already done", flush=True)
    for i, (pid, prob) in enumerate(problems):
        ns = [n for n in args.n if n == n_max or args.throughput_first is None or i < args.throughput_first]
        todo = [n for n in ns if (pid, n) not in done]
        if not todo:
            continue
        diags = sandbox.check(prob.broken, mode=prob.mode, edition=prob.edition).diagnostics
        messages = build_messages(prob.broken, diags, hints=not args.no_hints)
        for n in todo:
            params = GenerationParams(
                max_new_tokens=args.max_new_tokens,
                temperature=0.7,
                top_p=0.95,
                seed=1000 + i,
                prompt_length_cap=args.length_cap or None,
            )
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            outs = rt.generate([messages] * n, params)
            cands = [parse_reply(g.text, prob.broken, "program") for g in outs]
            jobs = [
                (c, prob.mode, prob.edition, prob.tests) for c in cands if c is not None and c != prob.broken
            ]
            with ThreadPoolExecutor(max_workers=2) as pool:
                results = list(
                    pool.map(lambda job, src=prob.broken: judge_candidate(sandbox, src, *job), jobs)
                )
            row = {
                "id": pid,
                "n": n,
                "cpu_s": round(cpu_seconds() - cpu0, 3),
                "wall_s": round(time.perf_counter() - wall0, 3),
                "candidates": n,
                "passing": sum(r.ok for r in results),
                "unchanged": sum(1 for c in cands if c == prob.broken),
                "length_cap": args.length_cap,
                "judge": JUDGE,
            }
            done[(pid, n)] = row
            if log is not None:
                log.write(json.dumps(row) + "\n")
                log.flush()
        print(f"{pid}: " + ", ".join(f"n={n} {done[(pid, n)]['passing']}/{n}" for n in ns), flush=True)
    report(args, problems, done, load_before)
    return 0


def report(args: argparse.Namespace, problems: list[tuple[str, Any]], done: dict[tuple[str, int], Any],
           load_before: float) -> None:  # fmt: skip
    n_max = max(args.n)
    print(f"\n{args.weights}, {args.threads} threads, {args.pool}: {len(problems)} problems, "
          f"load {load_before:.2f} → {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("n   problems   candidates/CPU-s   CPU-s/problem   wall-s/problem   solved (any of n)")
    totals: dict[int, dict[str, float]] = {}
    for n in args.n:
        rows = [done[(pid, n)] for pid, _ in problems if (pid, n) in done]
        if not rows:
            continue
        cpu = sum(r["cpu_s"] for r in rows)
        wall = sum(r["wall_s"] for r in rows)
        solved = sum(1 for r in rows if r["passing"])
        totals[n] = {"problems": len(rows), "cpu_s": cpu, "wall_s": wall, "solved": solved}
        print(f"{n:<3} {len(rows):8} {n * len(rows) / cpu:18.3f} {cpu / len(rows):15.1f} "
              f"{wall / len(rows):16.1f}   {solved}/{len(rows)}")  # fmt: skip
    full = [done[(pid, n_max)] for pid, _ in problems if (pid, n_max) in done]
    estimates = {}
    if full:
        print(f"pass@k estimated from the n={n_max} samples of {len(full)} problems (95% interval):")
        for k in sorted({k for k in (1, *args.n) if k <= n_max}):
            m, lo, hi = mean_interval([pass_at_k(n_max, r["passing"], k) for r in full])
            estimates[k] = {"mean": round(m, 4), "ci95": [round(lo, 4), round(hi, 4)]}
            print(f"  pass@{k}: {100 * m:.1f}% ({100 * lo:.1f}–{100 * hi:.1f}%)")
        unchanged = sum(r["unchanged"] for r in full)
        print(f"  unchanged replies: {unchanged}/{n_max * len(full)}")
    if args.json:
        args.json.write_text(
            json.dumps({"weights": args.weights, "pool": args.pool, "totals": totals, "pass_at_k": estimates})
        )


if __name__ == "__main__":
    raise SystemExit(main())
