"""Night memory benchmark: resident memory of the night's model through the stages of a first night.

    python tests/benchmarks/bench_night_memory.py                       # default model, both configurations
    python tests/benchmarks/bench_night_memory.py --configs ckpt --steps 2 --json /tmp/mem.json

Each configuration runs in a process of its own (so its peak RSS is its own), in the order of a first
night on the daemon's model (int8 weights for decoding, the float weights kept for training):

    load → batched greedy decode (the baseline) → LoRA seed training of two tasks → Phase 1 +
    attach_share → Phase 2 of one task → routed batched greedy decode (the gate)

and prints after each stage the process's resident memory (VmRSS), its peak so far (VmHWM) and the stage's
seconds (training: seconds per step). Training batches are the night's: ``--batch`` examples of koans
(serving prompt with rustc's diagnostics, reply = cause sentence + fixed program) cut to ``--max-length``
tokens. Configurations: ``plain`` (every activation kept for backward, the night before checkpointing),
``ckpt`` (learner.share.checkpoint: decoder layers recompute in backward), ``ckpt-trim`` (the same, and
glibc's ``malloc_trim`` after each training stage hands freed heap back to the system: the night's
``learner.heap.release_free_heap``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "plain": {"checkpointing": False, "trim": False},
    "ckpt": {"checkpointing": True, "trim": False},
    "ckpt-trim": {"checkpointing": True, "trim": True},
}


def status_mib() -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from agent.koans import train_koans
    from agent.prompt import build_messages, format_program_answer
    from agent.sandbox import Sandbox
    from learner.heap import release_free_heap
    from learner.runtime import GenerationParams, ModelRuntime
    from learner.share.layer import attach_share
    from learner.share.phases import Phase2Config, phase1, phase2
    from learner.share.seeds import SeedConfig, train_lora_seed
    from service.self_data import cause_sentence

    config = CONFIGS[args.config]
    stages: list[dict[str, Any]] = []

    def mark(stage: str, started: float, **extra: Any) -> None:
        if config["trim"] and stage.startswith(("seed", "phase2")):
            release_free_heap()
        row = {"stage": stage, "seconds": round(time.perf_counter() - started, 1), **status_mib(), **extra}
        stages.append(row)
        print(f"  [{args.config}] {stage}: {json.dumps(row)}", flush=True)

    t = time.perf_counter()
    runtime = ModelRuntime.load(args.model, threads=args.threads, weights="int8")
    mark("load", t)

    koans = [k for k in train_koans() if k.mode == "bin"][: 2 * args.per_task + args.prompts]
    sandbox = Sandbox()
    problems = []
    for k in koans:
        result = sandbox.check(k.broken, k.mode, k.edition)
        messages = build_messages(k.broken, result.diagnostics, hints=True)
        answer = f"{cause_sentence(result.diagnostics)}\n\n{format_program_answer(k.fixed)}"
        problems.append((messages, answer))
    prompts = [m for m, _ in problems[: args.prompts]]
    params = GenerationParams(max_new_tokens=args.new_tokens, temperature=0.0, prompt_lookup=False)

    t = time.perf_counter()
    with torch.inference_mode():
        runtime.generate(prompts, params)
    mark("baseline decode", t, rows=len(prompts))

    tasks = {
        "a": problems[args.prompts : args.prompts + args.per_task],
        "b": problems[args.prompts + args.per_task :],
    }
    seeds = []
    for name, examples in tasks.items():
        t = time.perf_counter()
        seed_cfg = SeedConfig(
            rank=8,
            alpha=16,
            steps=args.steps,
            batch_size=args.batch,
            max_length=args.max_length,
            progress=False,
            gradient_checkpointing=config["checkpointing"],
        )
        result = train_lora_seed(runtime.model, runtime.tokenizer, examples, name, seed_cfg)
        seeds.append(result.seed)
        mark(f"seed {name}", t, per_step_s=round((time.perf_counter() - t) / len(result.losses), 1))

    t = time.perf_counter()
    bases = phase1(seeds, threshold=0.6, cap=32)
    bank = attach_share(runtime.model, bases.bases)
    runtime.bank = bank
    for name in tasks:
        bank.set_task(name, bases.coefficients[name], version=1)
    mark("phase1 + attach", t)

    t = time.perf_counter()
    learned = phase2(
        runtime.model,
        runtime.tokenizer,
        bank,
        tasks["a"],
        Phase2Config(
            steps=args.steps,
            batch_size=args.batch,
            max_length=args.max_length,
            progress=False,
            gradient_checkpointing=config["checkpointing"],
        ),
        task="a",
    )
    mark("phase2 a", t, per_step_s=round((time.perf_counter() - t) / len(learned.losses), 1))

    t = time.perf_counter()
    with torch.inference_mode():
        runtime.generate(prompts, params, [("a", 1)] * len(prompts))
    mark("gate decode (routed)", t, rows=len(prompts))
    return {"config": args.config, **config, "stages": stages}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(Path.home() / ".dreamfix/models/qwen2.5-coder-0.5b-instruct"))
    parser.add_argument("--configs", default="plain,ckpt", help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="training steps per stage")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=768)
    parser.add_argument("--per-task", type=int, default=4, help="training examples per task")
    parser.add_argument("--prompts", type=int, default=8, help="rows of the batched decodes")
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--config", help=argparse.SUPPRESS)  # the child process's configuration
    args = parser.parse_args()
    if args.config:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0
    print(f"load average before: {list(os.getloadavg())}", flush=True)
    results = []
    for name in args.configs.split(","):
        if name not in CONFIGS:
            parser.error(f"unknown configuration {name!r}")
        cmd = [sys.executable, __file__, "--config", name] + [
            a for a in sys.argv[1:] if not a.startswith("--configs") and a != args.configs
        ]
        if args.json is not None:  # the child must not write the summary
            i = cmd.index("--json")
            del cmd[i : i + 2]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        sys.stdout.write(
            "".join(line + "\n" for line in proc.stdout.splitlines() if not line.startswith("RESULT"))
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(proc.stderr[-4000:])
            print(f"{name}: failed (exit {proc.returncode})")
            return 1
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    print(f"load average after: {list(os.getloadavg())}")
    print(f"\n{'stage':24}" + "".join(f"{r['config']:>26}" for r in results))
    print(f"{'':24}" + "".join(f"{'RSS / peak MiB (s/step)':>26}" for _ in results))
    for i, stage in enumerate(results[0]["stages"]):
        cells = []
        for r in results:
            row = r["stages"][i]
            extra = f" ({row['per_step_s']})" if "per_step_s" in row else ""
            cells.append(f"{row['VmRSS']:,.0f} / {row['VmHWM']:,.0f}{extra}".rjust(26))
        print(f"{stage['stage']:24}" + "".join(cells))
    if args.json is not None:
        args.json.write_text(json.dumps({"load": os.getloadavg(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
