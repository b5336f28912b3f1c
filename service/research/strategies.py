"""``strategies`` stage: base, hints, mean adapter, averaged coefficients, routed, oracle, one LoRA per task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from learner.routing import TaskKey
from learner.share.accounting import task_cost
from service.research import plots
from service.research.data import EvalItem
from service.research.experiment import (
    Experiment,
    average_coefficients,
    summarise_scores,
)
from service.research.variants import (
    applied,
    lora_deltas,
    mean_deltas,
)


def run(exp: Experiment) -> dict[str, Any]:
    """Pass rate / reference NLL per family for every strategy, and regressions against the base."""
    items = exp.items(exp.config.score_all_families)
    done = exp.load_result("strategies").get("scores", {})
    tasks = exp.config.tasks
    loras = {t: exp.seed(t) for t in tasks}
    p1 = exp.phase1_bases()

    def save(name: str, scores: dict[str, Any]) -> None:
        done[name] = scores
        exp.save_result("strategies", {"scores": done})
        exp.progress(f"strategies: {name} scored on {len(scores)} koans")

    def todo(name: str) -> bool:
        return not exp.complete(done.get(name), items)

    if todo("base"):
        save("base", exp.score(items, have=done.get("base"), label="base"))
    if todo("hints"):
        save("hints", exp.score(items, hints=True, have=done.get("hints"), label="hints"))
    if todo("mean adapter"):
        with exp.plain_model(), applied(exp.model, mean_deltas(list(loras.values()))):
            save("mean adapter", exp.score(items, have=done.get("mean adapter"), label="mean adapter"))
    if todo("per-task LoRA"):
        merged: dict[str, dict[str, Any]] = dict(done.get("per-task LoRA", {}))
        with exp.plain_model():
            base_items = [i for i in items if i.family not in loras]
            if base_items:
                merged.update({k: v for k, v in done["base"].items() if k in {i.id for i in base_items}})
            for task, lora in loras.items():
                own = [i for i in items if i.family == task]
                if own and not exp.complete(merged, own):
                    with applied(exp.model, lora_deltas(lora)):
                        merged.update(exp.score(own, have=merged, label=f"per-task LoRA {task}"))
        save("per-task LoRA", merged)
    with exp.share(p1.bases) as bank:
        for task in tasks:
            bank.set_task(task, p1.coefficients[task], 1)
        averaged = average_coefficients([p1.coefficients[t] for t in tasks])
        if todo("averaged coefficients"):
            bank.set_task("__averaged__", averaged, 1)
            have = done.get("averaged coefficients")
            averaged_keys: list[TaskKey | None] = [("__averaged__", 1)] * len(items)
            save(
                "averaged coefficients",
                exp.score(items, averaged_keys, bank.snapshot(), have=have, label="averaged"),
            )
            bank.remove_task("__averaged__")
        for by in ("routed", "oracle"):
            if todo(by):
                keys = exp.task_keys(items, bank, by)
                save(by, exp.score(items, keys, bank.snapshot(), have=done.get(by), label=by))
    result = {"scores": done, "summary": summarise_scores(done, items, tasks)}
    costs = task_cost(p1.bases, pseudo_rank=exp.config.pseudo_rank, lora_rank=exp.config.lora_rank)
    result["bytes_per_task"] = {"share": costs.share_bytes, "lora": costs.lora_bytes}
    _figures(exp, result, items)
    return result


def _figures(exp: Experiment, result: dict[str, Any], items: Sequence[EvalItem]) -> None:
    summary = result["summary"]
    families = sorted({i.family for i in items})
    groups = {f: {s: -summary[s]["edit_nll_by_family"][f] for s in summary} for f in families}
    plots.bars(
        groups,
        exp.root / "figures" / "strategies_nll.png",
        "− NLL of the reference fix's changed lines, by family",
        "− edit NLL (nats/token)",
    )
    if all("pass_by_family" in e for e in summary.values()):
        plots.bars(
            {f: {s: summary[s]["pass_by_family"][f] for s in summary} for f in families},
            exp.root / "figures" / "strategies_pass.png",
            "One-shot pass rate (compiles and passes the koan's tests), by family",
            "pass rate",
        )
