"""Two scores for a model configuration on eval items, both real runs of the model.

* **pass** — the agent's one-shot fix (greedy), verified by the sandbox: it compiles AND the koan's tests
  pass. The score users care about; it costs a full generation per koan.
* **reference NLL** — mean negative log-likelihood per answer token of the koan's *verified reference fix*
  under the agent's own prompt (teacher forcing, one forward per koan, no generation). Far cheaper, smooth,
  and sensitive to small adapter changes that rarely flip a pass; lower is better. Used where the number of
  (configuration × koan) cells makes generation unaffordable on a CPU (the R matrices, the heatmap).

Each row of a batch can be routed to a different Share task (``rows``: bank row per item, -1 = base).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from agent.loop import FixLoop, Strategy
from agent.sandbox import Sandbox
from learner.routing import routed
from learner.runtime import GenerationParams, ModelRuntime
from learner.share.examples import IGNORE_INDEX, collate, encode_example, pad_token_id
from router.table import Route
from service.experiments.data import EvalItem

ONE_SHOT = Strategy("one-shot", max_attempts=1, sample_on_stall=False)
HINTS_ONE_SHOT = Strategy("one-shot-hints", max_attempts=1, hints=True, sample_on_stall=False)


def reference_nll(
    runtime: ModelRuntime,
    items: Sequence[EvalItem],
    rows: Sequence[int] | None = None,
    snapshot: Any = None,
    *,
    batch_size: int = 4,
    max_length: int = 2048,
) -> list[float]:
    """Mean NLL (nats per answer token) of each item's reference fix; ``rows`` routes item i (-1 = base)."""
    if rows is not None and len(rows) != len(items):
        raise ValueError(f"{len(rows)} rows for {len(items)} items")
    tokenizer, model = runtime.tokenizer, runtime.model
    encoded = [encode_example(tokenizer, item.messages, item.answer, max_length) for item in items]
    pad = pad_token_id(tokenizer)
    order = sorted(range(len(items)), key=lambda i: len(encoded[i].input_ids))
    out = [0.0] * len(items)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate([encoded[i] for i in chunk], pad, runtime.device)
            labels = batch.pop("labels")
            if rows is not None or snapshot is not None:
                row_tasks = torch.tensor(
                    [rows[i] if rows is not None else -1 for i in chunk],
                    dtype=torch.long,
                    device=runtime.device,
                )
                with routed(row_tasks, snapshot if snapshot is not None else runtime.bank.snapshot()):  # type: ignore[union-attr]
                    logits = model(**batch).logits
            else:
                logits = model(**batch).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            target = labels[:, 1:]
            mask = target != IGNORE_INDEX
            picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            nll = -(picked * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            for j, i in enumerate(chunk):
                out[i] = float(nll[j])
    return out


def pass_results(
    runtime: ModelRuntime,
    sandbox: Sandbox,
    items: Sequence[EvalItem],
    rows: Sequence[int] | None = None,
    snapshot: Any = None,
    *,
    strategy: Strategy = ONE_SHOT,
    max_new_tokens: int = 512,
    on_group: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """One fix-loop run per item (grouped by row so every group shares one route); item id → outcome."""
    if rows is not None and len(rows) != len(items):
        raise ValueError(f"{len(rows)} rows for {len(items)} items")
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    groups: dict[int, list[EvalItem]] = {}
    for i, item in enumerate(items):
        groups.setdefault(rows[i] if rows is not None else -1, []).append(item)
    results: dict[str, dict[str, Any]] = {}
    done = 0
    for row, group in sorted(groups.items()):
        pinned = snapshot if snapshot is not None else (runtime.bank.snapshot() if runtime.bank else None)

        def generate(prompts: list[Any], _tasks: Any, row: int = row, pinned: Any = pinned) -> Any:
            return runtime.generate(prompts, params, [row] * len(prompts), snapshot=pinned)

        route = Route(None if row < 0 else f"row{row}", None, row)

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
            }
        done += len(group)
        if on_group is not None:
            on_group(done, len(items))
    return results
