"""ModelRuntime on the tiny model: batching, stopping, sampling, prompt lookup and routing are exact."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
import torch

from learner import routing
from learner.routing import TaskKey
from learner.runtime import (
    NUCLEUS_CANDIDATES,
    GenerationParams,
    ModelRuntime,
    PromptTooLong,
    nucleus,
    resolve_device,
    resolve_dtype,
)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Fix the Rust program."}, {"role": "user", "content": text}]


# Different lengths on purpose: batches need left padding, and rows finish at different steps.
PROMPTS = [
    chat('fn main() { let s = String::from("hi"); let t = s; println!("{} {}", s, t); }'),
    chat("x"),
    chat(
        "error[E0308]: mismatched types\nfn add(a: i32, b: i32) -> i32 { a + b }\nlet v: Vec<u32> = Vec::new();"
    ),
    chat("struct Point { x: f64 }"),
    chat("match opt { Some(x) => x, None => 0 }"),
]
GREEDY = GenerationParams(max_new_tokens=16)


def one_by_one(
    runtime: ModelRuntime, params: GenerationParams, keys: list[TaskKey | None] | None = None
) -> list[str]:
    keys = keys or [None] * len(PROMPTS)
    return [runtime.generate([p], params, [k])[0].text for p, k in zip(PROMPTS, keys, strict=True)]


def test_batched_greedy_equals_one_by_one_and_keeps_order(tiny_runtime: ModelRuntime) -> None:
    tiny_runtime.batch_size = 3  # two micro-batches, one of them padded
    batched = tiny_runtime.generate(PROMPTS, GREEDY)
    assert [g.text for g in batched] == one_by_one(tiny_runtime, GREEDY)
    assert len({g.text for g in batched}) == len(PROMPTS)  # really different outputs, not one repeated
    for prompt, generation in zip(PROMPTS, batched, strict=True):
        assert generation.prompt_tokens == tiny_runtime.count_tokens(tiny_runtime.render(prompt))
        assert generation.stopped_by == "length" and generation.completion_tokens == GREEDY.max_new_tokens
        assert generation.seconds > 0


def test_greedy_matches_transformers_generate_and_stops_at_eos(tiny_runtime: ModelRuntime) -> None:
    model, tokenizer = tiny_runtime.model, tiny_runtime.tokenizer
    prompt_ids = tokenizer(tiny_runtime.render(PROMPTS[0]), return_tensors="pt", add_special_tokens=False)
    reference = model.generate(**prompt_ids, max_new_tokens=12, do_sample=False, eos_token_id=None)
    ids = reference[0, prompt_ids["input_ids"].shape[1] :].tolist()
    ours = tiny_runtime.generate([PROMPTS[0]], GenerationParams(max_new_tokens=12))[0]
    assert ours.text == tokenizer.decode(ids, skip_special_tokens=True)

    # Declare the 5th generated token an end-of-sequence token: generation must stop right before it.
    tiny_runtime.eos_ids = {ids[4]}
    ended = tiny_runtime.generate([PROMPTS[0]], GenerationParams(max_new_tokens=12))[0]
    assert ended.stopped_by == "eos"
    assert ended.text == tokenizer.decode(ids[: ids.index(ids[4])], skip_special_tokens=True)
    assert ended.completion_tokens == ids.index(ids[4]) + 1


def test_stop_strings_cut_the_text_at_the_first_stop(tiny_runtime: ModelRuntime) -> None:
    full = tiny_runtime.generate([PROMPTS[2]], GenerationParams(max_new_tokens=40))[0].text
    # Use an ASCII fragment from the middle of the greedy output as the stop string.
    start = next(i for i in range(10, len(full) - 2) if full[i : i + 2].isascii() and full[i : i + 2].strip())
    stop = full[start : start + 2]
    expected = full[: full.find(stop)]
    for lookup in (False, True):
        params = GenerationParams(max_new_tokens=40, stop=["never-produced-zzz", stop], prompt_lookup=lookup)
        cut = tiny_runtime.generate([PROMPTS[2]], params)[0]
        assert (cut.text, cut.stopped_by) == (expected, "stop")
        assert cut.completion_tokens < 40


def test_a_passed_deadline_stops_every_row_with_what_it_has(tiny_runtime: ModelRuntime) -> None:
    import time

    full = tiny_runtime.generate(PROMPTS[:3], GREEDY)
    for lookup in (False, True):
        params = replace(GREEDY, deadline=time.monotonic() - 1, prompt_lookup=lookup)
        cut = tiny_runtime.generate(PROMPTS[:3], params)
        assert [g.stopped_by for g in cut] == ["deadline"] * 3
        assert all(1 <= g.completion_tokens < GREEDY.max_new_tokens for g in cut)
        # The text kept is the start of the reply an unlimited call gives.
        assert all(f.text.startswith(c.text) for f, c in zip(full, cut, strict=True))


def test_prompt_lookup_is_exactly_greedy(tiny_runtime: ModelRuntime) -> None:
    params = GenerationParams(max_new_tokens=24)
    looked_up = tiny_runtime.generate(PROMPTS, GenerationParams(max_new_tokens=24, prompt_lookup=True))
    assert [g.text for g in looked_up] == one_by_one(tiny_runtime, params)


def test_prefix_cache_reuses_shared_prompt_starts_without_changing_replies(
    tiny_runtime: ModelRuntime,
) -> None:
    program = (
        'fn main() {\n    let s = String::from("hi");\n    let t = s;\n    println!("{} {}", s, t);\n}\n'
    )
    first = chat(f"Fix this program.\n```rust\n{program}```\nerror[E0382]: borrow of moved value: `s`")
    retry = [first[0], {"role": "user", "content": first[1]["content"] + "\nA previous attempt failed."}]
    params = GenerationParams(max_new_tokens=16, prompt_lookup=True)
    cold = ModelRuntime(tiny_runtime.model, tiny_runtime.tokenizer, model_id="cold")
    cold.prefix_cache_size = 0
    expected = [cold.generate([p], params)[0].text for p in (first, retry)]
    reply = tiny_runtime.generate([first], params)[0].text
    assert reply == expected[0] and tiny_runtime.lookup_stats["prefix_tokens_reused"] == 0
    assert tiny_runtime.generate([retry], params)[0].text == expected[1]
    shared = tiny_runtime.lookup_stats["prefix_tokens_reused"]
    assert shared >= 40  # the system prompt, the program and the error were not prefilled again
    continued = [*first, {"role": "assistant", "content": reply + "\n```rust\n"}]
    assert tiny_runtime.generate([continued], params)[0].text == cold.generate([continued], params)[0].text
    assert tiny_runtime.lookup_stats["prefix_tokens_reused"] > shared
    # A Share row's keys and values depend on its coefficients: a base-row entry is never reused for it.
    tiny_runtime.lookup_stats.clear()
    tiny_runtime.generate([retry], params, keys=[("t", 1)], snapshot=ScaleSnapshot({"t": (0, 0.0)}))
    assert tiny_runtime.lookup_stats["prefix_tokens_reused"] == 0


def test_forgetting_prefixes_after_an_in_place_weight_edit_gives_the_edited_models_reply(
    tiny_runtime: ModelRuntime,
) -> None:
    prompt = chat(
        "Fix this program.\n```rust\nfn main() { let x = 1; x = 2; }\n```\nerror[E0384]: cannot assign twice"
    )
    params = GenerationParams(max_new_tokens=12, prompt_lookup=True)
    tiny_runtime.generate([prompt], params)  # fills the prefix cache with the unedited model's prefill
    weight = next(m.weight for n, m in tiny_runtime.model.named_modules() if n.endswith("q_proj"))
    original = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(3.0)  # as an experiment merging a LoRA delta into the weights does
        cold = ModelRuntime(tiny_runtime.model, tiny_runtime.tokenizer, model_id="cold")
        cold.prefix_cache_size = 0
        expected = cold.generate([prompt], params)[0].text
        tiny_runtime.lookup_stats.clear()
        tiny_runtime.generate([prompt], params)
        assert tiny_runtime.lookup_stats["prefix_tokens_reused"] > 0  # the cache cannot see the edit
        assert tiny_runtime.forget_prefixes() >= 1
        tiny_runtime.lookup_stats.clear()
        assert tiny_runtime.generate([prompt], params)[0].text == expected
        assert tiny_runtime.lookup_stats["prefix_tokens_reused"] == 0
    finally:
        with torch.no_grad():
            weight.copy_(original)
        tiny_runtime.forget_prefixes()


def make_copier(runtime: ModelRuntime, prompt: list[dict[str, str]], source: str, every: int) -> None:
    """Turn the random model into one that mostly copies ``source`` (as a fixing model copies its input):
    a fixed, position-dependent logit bonus, except at every ``every``-th token, where the model's own random
    choice breaks the copy. Deterministic per position, so greedy decoding stays well defined."""
    tokenizer = runtime.tokenizer
    prompt_length = len(tokenizer(runtime.render(prompt), add_special_tokens=False)["input_ids"])
    source_ids = tokenizer(source, add_special_tokens=False)["input_ids"]
    positions: dict[str, torch.Tensor] = {}

    def remember_positions(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        positions["ids"] = kwargs["position_ids"]

    def copy_bonus(module: torch.nn.Module, args: Any, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        for j, position in enumerate(positions["ids"][0, -logits.shape[1] :].tolist()):
            generated_index = position + 1 - prompt_length
            if generated_index >= 0 and generated_index % every != every - 1:
                logits[0, j, source_ids[generated_index % len(source_ids)]] += 1000.0
        return logits

    runtime.model.register_forward_pre_hook(remember_positions, with_kwargs=True)
    runtime.model.lm_head.register_forward_hook(copy_bonus)


def test_prompt_lookup_accepts_copied_drafts_in_fewer_passes_and_stays_exact(
    tiny_runtime: ModelRuntime,
) -> None:
    source = 'fn main() {\n    let s = String::from("hi");\n    let t = s.clone();\n    println!("{} {}", s, t);\n}\n'
    prompt = chat(f"```rust\n{source}```")
    make_copier(tiny_runtime, prompt, source, every=9)
    plain = tiny_runtime.generate([prompt], GenerationParams(max_new_tokens=64))[0]
    tiny_runtime.lookup_stats.clear()
    fast = tiny_runtime.generate([prompt], GenerationParams(max_new_tokens=64, prompt_lookup=True))[0]
    assert fast.text == plain.text and fast.completion_tokens == plain.completion_tokens == 64
    stats = tiny_runtime.lookup_stats
    assert stats["accepted"] >= 32  # most copied tokens came from verified drafts ...
    assert stats["drafted"] > stats["accepted"]  # ... some drafts were rejected and rolled back ...
    assert stats["passes"] <= 32  # ... in at most half the forward passes of plain decoding


def test_sampling_is_reproducible_per_seed_and_independent_of_batching(tiny_runtime: ModelRuntime) -> None:
    params = GenerationParams(max_new_tokens=12, temperature=1.0, seed=11)
    first = [g.text for g in tiny_runtime.generate(PROMPTS, params)]
    assert [g.text for g in tiny_runtime.generate(PROMPTS, params)] == first
    other_seed = [
        g.text
        for g in tiny_runtime.generate(PROMPTS, GenerationParams(max_new_tokens=12, temperature=1.0, seed=12))
    ]
    assert other_seed != first
    assert first != [g.text for g in tiny_runtime.generate(PROMPTS, GREEDY)][:5]
    # Prompt i always draws from seed + i, whatever else is in its micro-batch.
    tiny_runtime.batch_size = 1
    assert [g.text for g in tiny_runtime.generate(PROMPTS, params)] == first


def test_a_prompt_length_cap_stops_each_row_at_its_own_prompts_share(tiny_runtime: ModelRuntime) -> None:
    """``prompt_length_cap``: every row stops after ceil(cap × its prompt tokens) new tokens (or at EOS, or
    at ``max_new_tokens`` when that is lower); a row the cap stopped runs longer uncapped."""
    capped = GenerationParams(max_new_tokens=400, temperature=1.0, seed=3, prompt_length_cap=0.25)
    uncapped = GenerationParams(max_new_tokens=400, temperature=1.0, seed=3)
    rows = tiny_runtime.generate(PROMPTS, capped)
    free = tiny_runtime.generate(PROMPTS, uncapped)
    limits = [math.ceil(0.25 * g.prompt_tokens) for g in rows]
    assert len(set(limits)) > 1  # the prompts differ in length, so do their caps
    for g, f, limit in zip(rows, free, limits, strict=True):
        assert g.completion_tokens <= limit
        if g.stopped_by == "length":
            assert g.completion_tokens == limit and f.completion_tokens > limit
    assert any(g.stopped_by == "length" for g in rows)
    low = tiny_runtime.generate(PROMPTS, replace(capped, max_new_tokens=3))
    assert all(g.completion_tokens <= 3 for g in low)


def test_tiny_top_p_keeps_only_the_most_likely_token(tiny_runtime: ModelRuntime) -> None:
    nucleus = GenerationParams(max_new_tokens=16, temperature=1.5, top_p=1e-6, seed=0)
    assert [g.text for g in tiny_runtime.generate(PROMPTS, nucleus)] == [
        g.text for g in tiny_runtime.generate(PROMPTS, GenerationParams(max_new_tokens=16))
    ]


class ScaleSnapshot:
    """Stand-in for a Share bank snapshot: task -> (its bank row, an offset the test layer adds to that
    row's outputs); keys map to rows like ``BankSnapshot.rows_for``."""

    def __init__(self, tasks: dict[str, tuple[int, float]]) -> None:
        self.tasks = tasks
        self.offsets = dict(tasks.values())

    def rows_for(self, keys: Sequence[TaskKey | None]) -> list[int]:
        return [-1 if key is None else self.tasks[key[0]][0] for key in keys]


class ScaleBank:
    """Stand-in for the Share bank: hands out a fresh snapshot per call and counts them."""

    def __init__(self, tasks: dict[str, tuple[int, float]]) -> None:
        self.tasks = tasks
        self.snapshots = 0

    def snapshot(self) -> ScaleSnapshot:
        self.snapshots += 1
        return ScaleSnapshot(dict(self.tasks))


def install_routed_layer(runtime: ModelRuntime, seen: list[Any]) -> None:
    """Make one MLP read the routing context like a Share layer does: a per-row, per-task change."""

    def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        context = routing.current()
        seen.append(context)
        if context is None:
            return output
        assert context.row_tasks.shape == (output.shape[0],)
        offsets = torch.tensor([context.snapshot.offsets.get(int(t), 0.0) for t in context.row_tasks])
        return output + offsets[:, None, None]

    runtime.model.model.layers[0].mlp.down_proj.register_forward_hook(hook)


def test_routing_applies_each_rows_task_inside_mixed_batches(tiny_runtime: ModelRuntime) -> None:
    seen: list[Any] = []
    install_routed_layer(tiny_runtime, seen)
    base = [g.text for g in tiny_runtime.generate(PROMPTS, GREEDY)]
    assert seen and all(context is None for context in seen)  # no bank: nothing routed

    bank = ScaleBank({"five": (5, 3.0), "two": (2, -3.0)})
    tiny_runtime.bank = bank
    keys: list[TaskKey | None] = [("five", 1), None, ("two", 1), None, ("five", 1)]
    seen.clear()
    mixed = [g.text for g in tiny_runtime.generate(PROMPTS, GREEDY, keys)]
    assert bank.snapshots == 1  # one pinned snapshot per call
    prefill = seen[0]
    assert sorted(prefill.row_tasks.tolist()) == sorted([5, -1, 2, -1, 5])  # all tasks share one batch
    assert mixed == one_by_one(tiny_runtime, GREEDY, keys)
    assert [m == b for m, b in zip(mixed, base, strict=True)] == [k is None for k in keys]

    looked_up = tiny_runtime.generate(PROMPTS, replace(GREEDY, prompt_lookup=True), keys)
    assert [g.text for g in looked_up] == mixed
    assert routing.current() is None  # the context does not leak out of generate

    # A caller may pin its own snapshot (one per request, across the rounds of its fix loop).
    seen.clear()
    pinned, taken = ScaleSnapshot({"five": (5, 3.0)}), bank.snapshots
    tiny_runtime.generate(PROMPTS[:1], GREEDY, [("five", 1)], snapshot=pinned)
    assert seen and all(context.snapshot is pinned for context in seen) and bank.snapshots == taken


def test_concurrent_callers_get_the_same_results_as_sequential(tiny_runtime: ModelRuntime) -> None:
    expected = [g.text for g in tiny_runtime.generate(PROMPTS, GREEDY)]
    results: list[list[str]] = []

    def call() -> None:
        results.append([g.text for g in tiny_runtime.generate(PROMPTS, GREEDY)])

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 3


def test_load_from_a_model_folder_matches_the_in_memory_model(
    tiny_model_dir, tiny_runtime: ModelRuntime
) -> None:
    loaded = ModelRuntime.load(str(tiny_model_dir), dtype="float32", device="cpu")
    assert loaded.model.dtype == torch.float32
    assert [g.text for g in loaded.generate(PROMPTS[:2], GREEDY)] == [
        g.text for g in tiny_runtime.generate(PROMPTS[:2], GREEDY)
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_new_tokens": 0},
        {"temperature": -1.0},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"stop": "abc"},
        {"stop": [""]},
        {"prompt_length_cap": 0.0},
    ],
)
def test_bad_generation_params_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GenerationParams(**kwargs)


def test_bad_requests_get_clear_errors(tiny_runtime: ModelRuntime) -> None:
    with pytest.raises(ValueError, match="keys has 1 entries for 2 prompts"):
        tiny_runtime.generate(PROMPTS[:2], GREEDY, [("moves", 1)])
    assert tiny_runtime.bank is None
    with pytest.raises(ValueError, match="routed to 'moves' v1, but the runtime has no Share bank"):
        tiny_runtime.generate(PROMPTS[:2], GREEDY, [None, ("moves", 1)])
    with pytest.raises(ValueError, match="non-empty list"):
        tiny_runtime.generate([[]], GREEDY)
    with pytest.raises(ValueError, match="'role' and 'content'"):
        tiny_runtime.generate([[{"role": "user"}]], GREEDY)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        tiny_runtime.generate([chat("fn main() {} " * 2000)], GREEDY)
    # The fix loop drops the row the error names (PromptTooLong.prompt_index) and asks again for the rest.
    with pytest.raises(PromptTooLong, match="prompt 1 has") as too_long:
        tiny_runtime.generate([chat("fn main() {}"), chat("fn main() {} " * 2000)], GREEDY)
    assert too_long.value.prompt_index == 1
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3", "cpu")
    with pytest.raises(ValueError, match="float16 is only supported on CUDA"):
        resolve_dtype("float16", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def _full_sort_nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The reference: sort the whole vocabulary, keep a token while the mass before it is at most top_p."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95])
def test_nucleus_from_the_top_candidates_equals_the_full_sort(top_p: float) -> None:
    """Peaked rows take the top-k shortcut; a flat row (its nucleus far beyond the candidates) forces the
    full sort; either way the kept distribution is the reference's."""
    g = torch.Generator().manual_seed(0)
    peaked = torch.randn(3, 5000, generator=g) * 6
    flat = torch.randn(1, 5000, generator=g) * 0.01
    for logits in (peaked, torch.cat([peaked, flat])):
        probs = torch.softmax(logits, dim=-1)
        kept, ids = nucleus(probs, top_p)
        got = torch.zeros_like(probs).scatter(-1, ids, kept)
        torch.testing.assert_close(got, _full_sort_nucleus(probs, top_p), rtol=0, atol=1e-7)
    assert (kept > 0).sum(dim=-1)[-1] > NUCLEUS_CANDIDATES, "the flat row's nucleus is past the shortcut"


def test_samples_of_one_prompt_share_its_prefill_and_draw_as_if_alone(tiny_runtime: ModelRuntime) -> None:
    """The night asks k samples per problem in one call: the repeated prompt is prefilled once and each row
    continues from a copy of its cache, drawing exactly what it would draw alone with its own seed."""
    p, q = (
        chat("fn main() { let x = 5; x = 6; }"),
        chat("fn main() { let v: Vec<i32> = Vec::new(); v.push(1); }"),
    )
    params = GenerationParams(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=10)
    together = tiny_runtime.generate([p, p, p, q], params)
    assert tiny_runtime.lookup_stats["prefill_rows_shared"] == 2
    alone = [tiny_runtime.generate([m], replace(params, seed=10 + i))[0] for i, m in enumerate([p, p, p, q])]
    assert [g.text for g in together] == [g.text for g in alone]
    assert len({g.text for g in together[:3]}) > 1, "the rows must draw with their own seeds"
