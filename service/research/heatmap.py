"""``heatmap`` stage: every task's coefficients applied to every eval item, plus the routed column."""

from __future__ import annotations

from typing import Any

import torch

from learner.share.bank import ShareBank
from service.research import plots
from service.research.data import EvalItem
from service.research.experiment import (
    SCORE,
    Experiment,
    mean,
)


def run(exp: Experiment) -> dict[str, Any]:
    """Cell (task t's coefficients, family f) = mean NLL change vs base on f's eval koans (and the pass
    rate change, when pass rates are on)."""
    items = exp.items(exp.config.score_all_families)
    saved = exp.load_result("heatmap")
    columns: dict[str, dict[str, Any]] = saved.get("columns", {})
    p1 = exp.phase1_bases()
    base = exp.load_result("strategies").get("scores", {}).get("base")
    if not exp.complete(base, items):
        base = exp.score(items, have=base, label="heatmap base")
    assert base is not None
    with exp.share(p1.bases) as bank:
        for task in exp.config.tasks:
            bank.set_task(task, p1.coefficients[task], 1)
        for task in [*exp.config.tasks, "routed"]:
            if exp.complete(columns.get(task), items):
                continue
            keys = exp.task_keys(items, bank, "routed") if task == "routed" else [(task, 1)] * len(items)
            # The routed column is the routed strategy; task t's row on its own family is the oracle.
            have = (
                exp.borrowed("routed", items, columns.get(task))
                if task == "routed"
                else exp.borrowed("oracle", [i for i in items if i.family == task], columns.get(task))
            )
            columns[task] = exp.score(items, keys, bank.snapshot(), have=have, label=f"heatmap {task}")
            exp.save_result("heatmap", {"columns": columns})
            exp.progress(f"heatmap: column {task} done")
        applied_check = coefficients_change_outputs(exp, items[0], bank)
    families = sorted({i.family for i in items})
    configs = [*exp.config.tasks, "routed"]

    def delta(metric: str) -> list[list[float]]:
        return [
            [
                mean(
                    [
                        float(columns[t][i.id][metric]) - float(base[i.id][metric])
                        for i in items
                        if i.family == f
                    ]
                )
                for f in families
            ]
            for t in configs
        ]

    matrix = delta(SCORE)
    plots.heatmap(
        matrix,
        configs,
        families,
        exp.root / "figures" / "heatmap.png",
        "Edit NLL change vs base\n(rows: coefficients applied; columns: eval family)",
        "Δ edit NLL (nats/token, < 0 = better)",
    )
    result: dict[str, Any] = {
        "columns": columns,
        "families": families,
        "matrix": matrix,
        "applied_check": applied_check,
    }
    if all("fixed" in v for c in [base, *columns.values()] for v in c.values()):
        pass_matrix = delta("fixed")
        result["pass_matrix"] = pass_matrix
        result["base_pass_by_family"] = {
            f: mean([float(base[i.id]["fixed"]) for i in items if i.family == f]) for f in families
        }
        plots.heatmap(
            pass_matrix,
            configs,
            families,
            exp.root / "figures" / "heatmap_pass.png",
            "One-shot pass rate change vs base\n(rows: coefficients applied; columns: eval family)",
            "Δ pass rate (> 0 = better)",
        )
    return result


def coefficients_change_outputs(exp: Experiment, item: EvalItem, bank: ShareBank) -> dict[str, Any]:
    """Evidence that the heatmap really applies the coefficients: next-token logits of one eval prompt
    with each task's row differ from the base row's (the prototype's heatmap never applied them)."""
    tokenizer, model = exp.runtime.tokenizer, exp.runtime.model
    text = exp.runtime.render(item.messages)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], device=exp.runtime.device)
    from learner.routing import routed

    out: dict[str, Any] = {}
    with torch.inference_mode():
        base = model(input_ids=ids, logits_to_keep=1).logits.float()
        for task in bank.tasks():
            row = torch.tensor([bank.index(task)], device=exp.runtime.device)
            with routed(row, bank.snapshot()):
                logits = model(input_ids=ids, logits_to_keep=1).logits.float()
            out[task] = round(float((logits - base).abs().max()), 6)
    return {"koan": item.id, "max_abs_logit_change": out}
