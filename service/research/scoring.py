"""Two scores for a model configuration on eval items, both real runs of the model.

* **pass** — the agent's one-shot fix (greedy), verified by the sandbox: it compiles AND the koan's tests
  pass. The score users care about; it costs a full generation per koan.
* **reference NLL** — mean negative log-likelihood per answer token of the koan's *verified reference fix*
  under the agent's own prompt (teacher forcing, one forward per koan, no generation). Far cheaper, smooth,
  and sensitive to small adapter changes that rarely flip a pass; lower is better. Used where the number of
  (configuration × koan) cells makes generation unaffordable on a CPU (the R matrices, the heatmap).

Each item can be routed to a different Share task (``keys``: (task, version) per item, None = base); the
pinned snapshot maps the keys to its rows.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from agent.loop import FixLoop, Strategy
from agent.sandbox import Sandbox
from learner.routing import TaskKey, routed
from learner.runtime import GenerationParams, ModelRuntime
from learner.share.examples import IGNORE_INDEX, encode_example
from learner.share.prefix import FrozenPrefix, answer_nll
from router.table import Route
from service.research.data import EvalItem

ONE_SHOT = Strategy("one-shot", max_attempts=1, sample_on_stall=False)
HINTS_ONE_SHOT = Strategy("one-shot-hints", max_attempts=1, hints=True, sample_on_stall=False)


def edit_token_mask(tokenizer: Any, item: EvalItem, answer_ids: Sequence[int]) -> list[bool]:
    """Which answer tokens lie on lines the reference fix changed or added (vs the broken program).

    A fix mostly copies its input, and copying is easy: the mean NLL over the whole answer is dominated by
    copied tokens. The NLL over the changed lines' tokens is the part that measures *knowing the fix*."""
    broken = item.problem.source.splitlines()
    fixed_lines = item.koan.fixed.rstrip("\n").splitlines()
    changed: set[int] = set()
    matcher = difflib.SequenceMatcher(None, broken, fixed_lines, autojunk=False)
    for tag, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            changed.update(range(j1, j2))
    code_start = item.answer.find("\n") + 1  # the answer is "```rust\n" + program + "\n```"
    spans: list[tuple[int, int]] = []
    offset = code_start
    for index, line in enumerate(fixed_lines):
        if index in changed:
            spans.append((offset, offset + len(line)))
        offset += len(line) + 1
    text = tokenizer.decode(list(answer_ids))
    mask: list[bool] = []
    position = 0
    for token in answer_ids:
        piece = tokenizer.decode([token])
        found = text.find(piece, position) if piece else position
        begin = found if found >= 0 else position
        end = begin + len(piece)
        position = end if found >= 0 else position
        mask.append(any(begin < b and end > a for a, b in spans))
    return mask


def reference_nll(
    runtime: ModelRuntime,
    items: Sequence[EvalItem],
    keys: Sequence[TaskKey | None] | None = None,
    snapshot: Any = None,
    *,
    max_length: int = 2048,
    prefix: FrozenPrefix | None = None,
) -> list[dict[str, float]]:
    """Per item: ``nll`` = mean NLL (nats/token) of the whole reference answer, ``edit_nll`` = mean NLL of
    the tokens on the lines the fix changed. ``keys`` routes item i (None = base model).

    One prompt per forward (no padding; logits only for the answer positions: the 152k-entry output layer
    over the whole prompt would cost a quarter of the forward). With ``prefix`` the unadapted layers below
    its start run once per item across all configurations scored (learner.share.prefix)."""
    if keys is not None and len(keys) != len(items):
        raise ValueError(f"{len(keys)} keys for {len(items)} items")
    tokenizer, model = runtime.tokenizer, runtime.model
    pinned = snapshot
    if pinned is None and keys is not None and runtime.bank is not None:
        pinned = runtime.bank.snapshot()
    rows = pinned.rows_for(keys) if pinned is not None and keys is not None else None
    out: list[dict[str, float]] = []
    with torch.inference_mode():
        for i, item in enumerate(items):
            encoded = encode_example(tokenizer, item.messages, item.answer, max_length)
            answer = [
                t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE_INDEX
            ]
            keep = len(answer) + 1
            row = rows[i] if rows is not None else -1
            route = (
                routed(torch.tensor([row], dtype=torch.long, device=runtime.device), pinned)
                if pinned is not None
                else nullcontext()
            )
            with route:
                if prefix is not None:
                    logits = prefix.logits(model, encoded.input_ids, keep)
                else:
                    ids = torch.tensor([encoded.input_ids], device=runtime.device)
                    logits = model(input_ids=ids, logits_to_keep=keep).logits
            nll = answer_nll(logits, answer)
            mask = torch.tensor(edit_token_mask(tokenizer, item, answer), device=runtime.device)
            edit = float(nll[mask].mean()) if bool(mask.any()) else float(nll.mean())
            out.append({"nll": round(float(nll.mean()), 5), "edit_nll": round(edit, 5)})
    return out


def pass_results(
    runtime: ModelRuntime,
    sandbox: Sandbox,
    items: Sequence[EvalItem],
    keys: Sequence[TaskKey | None] | None = None,
    snapshot: Any = None,
    *,
    strategy: Strategy = ONE_SHOT,
    max_new_tokens: int = 512,
    on_group: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """One fix-loop run per item (grouped by key so every group shares one route); item id → outcome.

    Greedy with prompt-lookup decoding (the same text as plain greedy, ~2× less CPU on fixes that mostly
    copy their input). The runtime's prefix cache is emptied first: the experiments change weights in place
    between configurations (mean adapter, per-task LoRA), and a cached base-row prefill would belong to the
    previous weights."""
    if keys is not None and len(keys) != len(items):
        raise ValueError(f"{len(keys)} keys for {len(items)} items")
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0, prompt_lookup=True)
    runtime.forget_prefixes()
    groups: dict[TaskKey | None, list[EvalItem]] = {}
    for i, item in enumerate(items):
        groups.setdefault(keys[i] if keys is not None else None, []).append(item)
    results: dict[str, dict[str, Any]] = {}
    done = 0
    for key, group in sorted(groups.items(), key=lambda kv: kv[0] or ("", -1)):
        pinned = snapshot if snapshot is not None else (runtime.bank.snapshot() if runtime.bank else None)

        def generate(prompts: list[Any], _keys: Any, key: Any = key, pinned: Any = pinned) -> Any:
            return runtime.generate(prompts, params, [key] * len(prompts), snapshot=pinned)

        route = Route(*key) if key is not None else Route(None, None)

        def route_fn(_diagnostics: Any, route: Route = route) -> Route:
            return route

        loop = FixLoop(sandbox, generate, route_fn, runtime.model_id)
        for record in loop.run([item.problem for item in group], strategy):
            last = record.attempts[-1] if record.attempts else None
            results[record.problem_id] = {
                "fixed": bool(record.fixed),
                "attempts": len(record.attempts),
                "unchanged": bool(last is not None and not (last.diff or "").strip()),
                "completion_tokens": sum(a.completion_tokens or 0 for a in record.attempts),
                "generate_seconds": round(sum(a.generate_seconds or 0.0 for a in record.attempts), 2),
            }
        done += len(group)
        if on_group is not None:
            on_group(done, len(items))
    return results
