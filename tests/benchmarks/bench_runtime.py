"""Runtime benchmark for the provisioned model on this machine, figures side by side.

    python tests/benchmarks/bench_runtime.py [--model NAME] [--koans 8] [--steps 32] [--json OUT]

Measures, each part in its own process (so peak RSS belongs to one configuration):
  * memory bandwidth (a large tensor copy) and the decode bound it implies: weight bytes read per step
    divided by bandwidth;
  * decode tokens/s at batch 1 and 8, float32 and bfloat16 (after a prefill; KV cache; greedy);
  * prompt lookup vs plain greedy on fixing koans (koans/*.toml broken programs, the agent's real prompt):
    wall time, forward passes, identical output;
  * cold load (dequantize the GGUF) vs cached load (the converted folder), peak RSS of each.
Not a test (the file name keeps pytest away); the machine is shared, so it also records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> float:
    return os.getloadavg()[0]


def cache_dir() -> Path:
    return Path(os.environ.get("DREAMFIX_DATA_DIR", Path.home() / ".dreamfix")) / "models"


# ------------------------------------------------------------------------------------------- parts


def part_bandwidth(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    size = 256 * 2**20  # floats: 1 GiB per tensor, far beyond any cache
    src, dst = torch.ones(size), torch.empty(size)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(8))
    moved = 2 * src.numel() * src.element_size()  # read + write
    return {"copy_GBps": moved / best / 1e9, "threads": args.threads}


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _load(args: argparse.Namespace) -> tuple[Any, Any, float]:
    from learner.runtime import ModelRuntime

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    runtime = ModelRuntime.load(args.model, dtype=args.dtype, device="cpu", threads=args.threads,
                                cache_dir=str(cache_dir()))  # fmt: skip
    return runtime, runtime.model, time.perf_counter() - started


def part_decode(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import DynamicCache

    runtime, model, load_s = _load(args)
    embed = model.get_input_embeddings().weight
    params = sum(p.numel() for p in model.parameters())
    # Per decode step every weight is read once, except the embedding table (a few rows are gathered).
    weight_bytes = (params - embed.numel()) * embed.element_size()
    messages = [{"role": "user", "content": "Write a Rust function that parses a CSV line into fields. " * 4}]
    prompt = runtime.tokenizer(runtime.render(messages), add_special_tokens=False)["input_ids"]
    result: dict[str, Any] = {
        "dtype": args.dtype, "threads": args.threads, "cached_load_s": load_s, "parameters": params,
        "weight_bytes_per_step": weight_bytes, "prompt_tokens": len(prompt),
    }  # fmt: skip
    with torch.inference_mode():
        for batch in (1, 8):
            ids = torch.tensor([prompt] * batch)
            cache = DynamicCache(config=model.config)
            started = time.perf_counter()
            logits = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits
            prefill = time.perf_counter() - started
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                ids = logits[:, -1].argmax(-1, keepdim=True)
                logits = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
            result[f"batch{batch}"] = {
                "prefill_s": prefill,
                "decode_tokens_per_s": batch * args.steps / seconds,
                # CPU time per token: what an idle machine would see with this many threads (1 thread: exact).
                "decode_tokens_per_cpu_s": batch * args.steps / cpu_seconds,
                "step_ms": 1000 * seconds / args.steps,
            }
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def _koan_prompts(count: int) -> list[tuple[str, list[dict[str, str]], int]]:
    from agent.koans import load_koans
    from agent.prompt import build_messages

    # One koan per family, the shortest of at least 200 characters: typical, and affordable on a busy CPU.
    by_family: dict[str, Any] = {}
    for koan in sorted(load_koans(ROOT / "koans"), key=lambda k: (len(k.broken), k.id)):
        if len(koan.broken) >= 200:
            by_family.setdefault(koan.family, koan)
    picked = [by_family[family] for family in sorted(by_family)][:count]
    try:
        from agent.sandbox import Sandbox

        sandbox: Any = Sandbox()
    except Exception:  # no jail available: the prompt just lacks diagnostics
        sandbox = None
    prompts = []
    for koan in picked:
        diagnostics = (
            sandbox.check(koan.broken, mode=koan.mode, edition=koan.edition).diagnostics if sandbox else []
        )
        prompts.append((koan.id, build_messages(koan.broken, diagnostics, hints=False), len(koan.broken)))
    return prompts


def part_lookup(args: argparse.Namespace) -> dict[str, Any]:
    from learner.runtime import GenerationParams

    runtime, _, load_s = _load(args)
    rows = []
    for koan_id, messages, chars in _koan_prompts(args.koans):
        budget = min(768, runtime.count_tokens(messages[-1]["content"]) + 96)
        started, cpu = time.perf_counter(), time.process_time()
        plain = runtime.generate([messages], GenerationParams(max_new_tokens=budget))[0]
        plain_s, plain_cpu = time.perf_counter() - started, time.process_time() - cpu
        runtime.lookup_stats.clear()
        started, cpu = time.perf_counter(), time.process_time()
        fast = runtime.generate([messages], GenerationParams(max_new_tokens=budget, prompt_lookup=True))[0]
        fast_s, fast_cpu = time.perf_counter() - started, time.process_time() - cpu
        rows.append({
            "koan": koan_id, "program_chars": chars, "prompt_tokens": plain.prompt_tokens,
            "completion_tokens": plain.completion_tokens, "plain_s": plain_s, "lookup_s": fast_s,
            "speedup": plain_s / fast_s, "plain_cpu_s": plain_cpu, "lookup_cpu_s": fast_cpu,
            "cpu_speedup": plain_cpu / fast_cpu, "identical": plain.text == fast.text,
            "passes": runtime.lookup_stats["passes"], "drafted": runtime.lookup_stats["drafted"],
            "accepted": runtime.lookup_stats["accepted"],
        })  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    total_plain = sum(r["plain_s"] for r in rows)
    total_fast = sum(r["lookup_s"] for r in rows)
    total_plain_cpu = sum(r["plain_cpu_s"] for r in rows)
    total_fast_cpu = sum(r["lookup_cpu_s"] for r in rows)
    return {
        "dtype": args.dtype, "threads": args.threads, "cached_load_s": load_s, "koans": rows,
        "total_plain_s": total_plain, "total_lookup_s": total_fast, "speedup": total_plain / total_fast,
        "cpu_speedup": total_plain_cpu / total_fast_cpu,
        "all_identical": all(r["identical"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows), "peak_rss_mib": peak_rss_mib(),
    }  # fmt: skip


def part_cold(args: argparse.Namespace) -> dict[str, Any]:
    from learner.provision import KNOWN_MODELS, _plain_gguf_load, release_gguf_path

    torch.set_num_threads(args.threads)
    gguf = release_gguf_path(KNOWN_MODELS[args.model], cache_dir())
    if not gguf.is_file():
        return {"skipped": f"{gguf} not present (run `dreamfix model pull`)"}
    seconds = _timed(lambda: _plain_gguf_load(gguf, getattr(torch, args.dtype)))
    return {"dtype": args.dtype, "gguf_load_s": seconds, "peak_rss_mib": peak_rss_mib()}


def part_cached(args: argparse.Namespace) -> dict[str, Any]:
    _, _, seconds = _load(args)
    return {"dtype": args.dtype, "cached_load_s": seconds, "peak_rss_mib": peak_rss_mib()}


PARTS = {"bandwidth": part_bandwidth, "decode": part_decode, "lookup": part_lookup, "cold": part_cold,
         "cached": part_cached}  # fmt: skip


# ------------------------------------------------------------------------------------------- driver


def run_part(args: argparse.Namespace, part: str, **overrides: Any) -> dict[str, Any]:
    command = [sys.executable, __file__, "--part", part, "--model", args.model, "--koans", str(args.koans),
               "--steps", str(overrides.get("steps", args.steps)), "--threads", str(overrides.get("threads", args.threads)),
               "--dtype", overrides.get("dtype", "float32")]  # fmt: skip
    print(f"[bench] {part} {overrides} (load {load_average():.1f})", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    sys.stderr.write(done.stderr[-3000:] if done.returncode else "")
    if done.returncode != 0:
        return {
            "error": done.stderr.strip().splitlines()[-1]
            if done.stderr.strip()
            else f"exit {done.returncode}"
        }
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    print(f"[bench] {part}: {json.dumps(result)[:400]}", file=sys.stderr, flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--koans", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--part", choices=sorted(PARTS), help="(internal) run one part in this process")
    parser.add_argument("--only", nargs="*", choices=sorted(PARTS), help="run only these parts")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.part:
        print(json.dumps(PARTS[args.part](args)))
        return 0

    only = set(args.only or PARTS)
    report: dict[str, Any] = {"model": args.model, "cpu_count": os.cpu_count(), "threads": args.threads,
                              "torch": torch.__version__, "load_average_start": load_average()}  # fmt: skip
    if "lookup" in only:
        report["lookup"] = run_part(args, "lookup", dtype="float32")
    if "decode" in only:
        report["decode_float32"] = run_part(args, "decode", dtype="float32")
        report["decode_bfloat16"] = run_part(args, "decode", dtype="bfloat16", steps=max(4, args.steps // 4))
    if "bandwidth" in only:
        report["bandwidth"] = run_part(args, "bandwidth")
    if "cached" in only:
        report["cached_load"] = run_part(args, "cached", dtype="float32")
    if "cold" in only:
        report["cold_load"] = run_part(args, "cold", dtype="float32")
    report["load_average_end"] = load_average()
    bandwidth = report.get("bandwidth", {}).get("copy_GBps")
    for key in ("decode_float32", "decode_bfloat16"):
        decode = report.get(key, {})
        if bandwidth and "weight_bytes_per_step" in decode:
            bound = bandwidth * 1e9 / decode["weight_bytes_per_step"]
            decode["bandwidth_bound_tokens_per_s_batch1"] = bound
            decode["batch1_fraction_of_bound"] = decode["batch1"]["decode_tokens_per_s"] / bound
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
