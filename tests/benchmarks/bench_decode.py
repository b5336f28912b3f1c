"""Decode engines side by side in one process: float32 (the old default), int8 (learner/quant.py, the new CPU
default) and llama.cpp on the same GGUF when `llama_cpp` is importable.

    python tests/benchmarks/bench_decode.py [--threads 2] [--rounds 3] [--tokens 64] [--gguf PATH] [--json OUT]
    python tests/benchmarks/bench_decode.py --attempts 4 [--max-new-tokens 768] [--rounds 1] [--json OUT]

Per round, the configurations run one after another (interleaved, so load changes hit all of them) on the
koans' real serving prompts (agent.prompt.build_messages). Printed per configuration, medians over rounds:
prefill tok/s, decode tok/s at batch 1 and batch 8 (llama.cpp through its Python API: batch 1 only), the
bandwidth bound (measured copy bandwidth ÷ weight bytes read per decoded token), and the modelled seconds
of one fix attempt (300 prompt + 90 reply tokens). Also whether each engine's greedy text equals float32's.
Not a test; the machine is shared, so it prints the load average before and after.

``--attempts N`` measures whole fix attempts instead of a model: each engine writes its complete greedy reply
(up to ``--max-new-tokens``, stopping at end of turn) to the serving prompts of N koans, interleaved prompt by
prompt, and the wall seconds of each attempt are printed (median, max) with the reply tokens — float32 and
int8 as plain greedy decoding, int8 as served (prompt-lookup decoding, learner/runtime.py), llama.cpp plain
and with its own prompt-lookup draft (llama_cpp.llama_speculative.LlamaPromptLookupDecoding).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.koans import load_koans  # noqa: E402
from agent.prompt import build_messages  # noqa: E402
from agent.sandbox import Sandbox  # noqa: E402
from learner.quant import Int8Linear  # noqa: E402
from learner.runtime import GenerationParams, ModelRuntime  # noqa: E402

ATTEMPT_PROMPT, ATTEMPT_REPLY = 300, 90


def copy_bandwidth() -> float:
    """Bytes per second a tensor copy moves (read + write) on the configured threads."""
    size = 128 * 2**20
    src, dst = torch.ones(size), torch.empty(size)
    dst.copy_(src)
    best = min(_seconds(lambda: dst.copy_(src)) for _ in range(6))
    return 2 * src.numel() * 4 / best


def _seconds(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bytes_per_token(model: torch.nn.Module) -> int:
    """Weight bytes one decode step reads: every linear layer (the tied head included), not the embedding."""
    total = 0
    for m in model.modules():
        if isinstance(m, Int8Linear):
            total += m.int8_bytes() + 4 * m.out_features  # int8 weights + per-channel scales
        elif type(m) is torch.nn.Linear:
            total += m.weight.numel() * m.weight.element_size()
    return total


def prompts(n: int) -> list[list[dict[str, str]]]:
    """The serving prompt (real rustc diagnostics) of n koans, one per family, shortest ≥ 200 characters."""
    by_family: dict[str, Any] = {}
    for koan in sorted(load_koans(ROOT / "koans"), key=lambda k: (len(k.broken), k.id)):
        if len(koan.broken) >= 200:
            by_family.setdefault(koan.family, koan)
    picked = list(by_family.values())[:n]
    sandbox = Sandbox()
    return [
        build_messages(
            k.broken, sandbox.check(k.broken, mode=k.mode, edition=k.edition).diagnostics, hints=False
        )
        for k in picked
    ]


def measure_runtime(rt: ModelRuntime, batch: list[list[dict[str, str]]], tokens: int) -> dict[str, Any]:
    one = GenerationParams(max_new_tokens=1)
    full = GenerationParams(max_new_tokens=tokens)
    t_prefill = _seconds(lambda: rt.generate(batch, one))
    out: list[Any] = []
    t_full = _seconds(lambda: out.extend(rt.generate(batch, full)))
    prompt_tokens = sum(g.prompt_tokens for g in out)
    decoded = max(g.completion_tokens for g in out)
    return {
        "prefill_tok_s": prompt_tokens / t_prefill,
        # The decode rate is the extra time beyond the prefill; a load spike can make that difference
        # meaningless (≤ 0), which is reported as NaN rather than an absurd rate.
        "decode_tok_s": len(batch) * (decoded - 1) / (t_full - t_prefill)
        if t_full > t_prefill
        else float("nan"),
        "texts": [g.text for g in out],
    }


def measure_llama(llm: Any, rt: ModelRuntime, prompt: list[dict[str, str]], tokens: int) -> dict[str, Any]:
    ids = rt.tokenizer(rt.render(prompt), add_special_tokens=False)["input_ids"]
    llm.reset()
    started = time.perf_counter()
    gen = llm.generate(ids, temp=0.0, top_k=1, reset=True)
    got = [next(gen)]
    first = time.perf_counter()
    eos = rt.eos_ids
    while len(got) < tokens and got[-1] not in eos:
        got.append(next(gen))
    done = time.perf_counter()
    text = rt.tokenizer.decode([t for t in got if t not in eos], skip_special_tokens=True)
    return {
        "prefill_tok_s": len(ids) / (first - started),
        "decode_tok_s": max(len(got) - 1, 1) / max(done - first, 1e-9),
        "texts": [text],
    }


def llama_attempt(
    llm: Any, rt: ModelRuntime, prompt: list[dict[str, str]], limit: int
) -> tuple[float, int, str]:
    """One whole greedy reply from llama.cpp: (seconds, reply tokens, text)."""
    ids = rt.tokenizer(rt.render(prompt), add_special_tokens=False)["input_ids"]
    llm.reset()
    started = time.perf_counter()
    got: list[int] = []
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        if token in rt.eos_ids:
            break
        got.append(token)
        if len(got) >= limit:
            break
    seconds = time.perf_counter() - started
    return seconds, len(got), rt.tokenizer.decode(got, skip_special_tokens=True)


def runtime_attempt(
    rt: ModelRuntime, prompt: list[dict[str, str]], limit: int, lookup: bool
) -> tuple[float, int, str]:
    """One whole greedy reply from a dreamfix runtime: (seconds, reply tokens, text)."""
    rt.forget_prefixes()  # a first attempt: nothing of this prompt is cached yet
    params = GenerationParams(max_new_tokens=limit, prompt_lookup=lookup)
    started = time.perf_counter()
    out = rt.generate([prompt], params)[0]
    return time.perf_counter() - started, out.completion_tokens, out.text


def attempts_main(args: argparse.Namespace) -> int:
    load_before = os.getloadavg()
    f32 = ModelRuntime.load(args.model, dtype="float32", device="cpu", weights="float")
    i8 = ModelRuntime.load(args.model, dtype="float32", device="cpu", weights="int8")
    engines: dict[str, Any] = {
        "float32": lambda p: runtime_attempt(f32, p, args.max_new_tokens, lookup=False),
        "int8": lambda p: runtime_attempt(i8, p, args.max_new_tokens, lookup=False),
        "int8 + lookup (served)": lambda p: runtime_attempt(i8, p, args.max_new_tokens, lookup=True),
    }
    try:
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        plain = Llama(model_path=str(args.gguf), n_ctx=4096, n_threads=args.threads, verbose=False)
        drafted = Llama(
            model_path=str(args.gguf), n_ctx=4096, n_threads=args.threads, verbose=False,
            draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10),
        )  # fmt: skip
        engines["llama.cpp"] = lambda p: llama_attempt(plain, f32, p, args.max_new_tokens)
        engines["llama.cpp + lookup"] = lambda p: llama_attempt(drafted, f32, p, args.max_new_tokens)
    except (ImportError, ValueError) as exc:
        print(f"llama.cpp: unavailable ({exc})")
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    tokens: dict[str, list[int]] = {name: [] for name in engines}
    same: dict[str, int] = dict.fromkeys(engines, 0)
    lookup_same = 0  # prompt lookup must not change the text: int8 + lookup vs plain int8 greedy
    cases = prompts(args.attempts)
    for _ in range(args.rounds):
        for prompt in cases:
            texts: dict[str, str] = {}
            for name, run in engines.items():
                s, n, texts[name] = run(prompt)
                seconds[name].append(s)
                tokens[name].append(n)
                same[name] += texts[name] == texts["float32"]
            lookup_same += texts["int8 + lookup (served)"] == texts["int8"]
    load_after = os.getloadavg()
    total = args.rounds * len(cases)
    print(f"whole fix attempts: {len(cases)} koan prompts × {args.rounds} rounds, threads {args.threads}, "
          f"≤ {args.max_new_tokens} reply tokens, load {load_before[0]:.2f} → {load_after[0]:.2f}")  # fmt: skip
    print("engine                    median s   max s  reply tokens (median)  text = float32")
    rows = []
    for name in engines:
        row = {
            "engine": name,
            "median_s": statistics.median(seconds[name]),
            "max_s": max(seconds[name]),
            "median_tokens": statistics.median(tokens[name]),
            "same_text_as_float32": f"{same[name]}/{total}",
            "seconds": seconds[name],
        }
        rows.append(row)
        print(f"{name:24s} {row['median_s']:9.2f} {row['max_s']:7.2f} {row['median_tokens']:12.0f}"
              f"{row['same_text_as_float32']:>22s}")  # fmt: skip
    print(f"int8 + lookup text = plain int8 greedy: {lookup_same}/{total}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "attempts": rows,
                    "lookup_same_as_int8": f"{lookup_same}/{total}",
                    "load": [load_before, load_after],
                }
            )
        )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    default_gguf = (
        Path.home()
        / ".dreamfix/models/.downloads/qwen2.5-coder-0.5b-instruct/qwen2.5-coder-0.5b-instruct.gguf"
    )
    ap.add_argument("--gguf", type=Path, default=default_gguf)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--attempts", type=int, default=0, help="measure N whole fix attempts per engine instead")
    ap.add_argument("--max-new-tokens", type=int, default=768, help="reply limit of --attempts (serving's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.attempts:
        return attempts_main(args)
    load_before = os.getloadavg()
    engines: dict[str, Any] = {
        "float32": ModelRuntime.load(args.model, dtype="float32", device="cpu", weights="float"),
        "int8": ModelRuntime.load(args.model, dtype="float32", device="cpu", weights="int8"),
    }
    llm = None
    try:
        from llama_cpp import Llama

        if args.gguf.exists():
            llm = Llama(model_path=str(args.gguf), n_ctx=2048, n_threads=args.threads, verbose=False)
        else:
            print(f"llama.cpp: no GGUF at {args.gguf}")
    except ImportError as exc:
        print(f"llama.cpp: not installed ({exc}); pip install llama-cpp-python builds it from source")
    bw = copy_bandwidth()
    batch8 = prompts(8)
    results: dict[str, dict[str, list[float]]] = {}
    texts: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name, rt in engines.items():
            for label, batch in (("b1", batch8[:1]), ("b8", batch8)):
                r = measure_runtime(rt, batch, args.tokens)
                cell = results.setdefault(f"{name}", {})
                cell.setdefault(f"prefill_{label}", []).append(r["prefill_tok_s"])
                cell.setdefault(f"decode_{label}", []).append(r["decode_tok_s"])
                texts[f"{name}/{label}"] = r["texts"]
        if llm is not None:
            r = measure_llama(llm, engines["float32"], batch8[0], args.tokens)
            cell = results.setdefault("llama.cpp", {})
            cell.setdefault("prefill_b1", []).append(r["prefill_tok_s"])
            cell.setdefault("decode_b1", []).append(r["decode_tok_s"])
            texts["llama.cpp/b1"] = r["texts"]
    load_after = os.getloadavg()
    weight_bytes = {name: bytes_per_token(rt.model) for name, rt in engines.items()}
    if llm is not None:
        weight_bytes["llama.cpp"] = (
            args.gguf.stat().st_size - 151936 * 896 * 1
        )  # minus ~the Q8 embedding table
    ref = texts["float32/b1"][0]
    table = []
    print(f"threads {args.threads}, {args.tokens} greedy tokens, copy bandwidth {bw / 1e9:.1f} GB/s, "
          f"load {load_before[0]:.2f} → {load_after[0]:.2f}")  # fmt: skip
    head = "engine       prefill b1  decode b1  decode b8  ×f32 b1  bound b1  attempt s  text = f32"
    print(head)
    base_decode = statistics.median(results["float32"]["decode_b1"])
    for name, cell in results.items():
        med = {k: statistics.median(v) for k, v in cell.items()}
        attempt = ATTEMPT_PROMPT / med["prefill_b1"] + ATTEMPT_REPLY / med["decode_b1"]
        row = {
            "engine": name,
            **med,
            "x_float32_decode_b1": med["decode_b1"] / base_decode,
            "bound_tok_s": bw / weight_bytes[name],
            "bytes_per_token": weight_bytes[name],
            "attempt_s": attempt,
            "same_text_as_float32": texts[f"{name}/b1"][0] == ref,
        }
        table.append(row)
        b8 = f"{med['decode_b8']:9.1f}" if "decode_b8" in med else "        —"
        print(f"{name:11s} {med['prefill_b1']:10.1f} {med['decode_b1']:10.1f} {b8} "
              f"{row['x_float32_decode_b1']:8.2f} {row['bound_tok_s']:9.1f} {attempt:10.1f}  "
              f"{row['same_text_as_float32']}")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps({"rows": table, "bandwidth_Bps": bw, "load": [load_before, load_after]})
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
