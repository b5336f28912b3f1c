"""``sequential`` stage: tasks arrive one per night; R matrix and ACC/BWT/FWT for Share vs naive LoRA vs
per-task LoRA."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from learner.share.layer import detach_share
from learner.share.math import LayerBasis, TaskCoefficients
from learner.share.phases import phase1, phase2, phase3
from learner.share.seeds import train_lora_seed
from service.research import plots
from service.research.data import EvalItem
from service.research.experiment import (
    SCORE,
    Experiment,
    layer_keys,
    mean,
    renamed,
    summarise_scores,
)
from service.research.metrics import cl_metrics
from service.research.variants import (
    add_in_place,
    applied,
    lora_deltas,
    restore_weights,
    snapshot_weights,
)


def run(exp: Experiment) -> dict[str, Any]:
    """Tasks arrive one per night. Three learners; after every night all tasks are scored. With pass
    rates on, the state each learner serves after the last night is also scored by verified one-shot
    fixes (``final``): a learner whose R matrix is complete replays its nights to get there (the merged
    weights are not saved)."""
    tasks = exp.config.tasks
    items = exp.items()
    by_task = {t: [i for i in items if i.family == t] for t in tasks}
    state = exp.load_result("sequential")
    R: dict[str, list[list[float]]] = state.get("R", {})
    final: dict[str, dict[str, Any]] = state.setdefault("final", {})
    base_scores = state.get("base")
    if base_scores is None:
        base_scores = _task_scores(exp, exp.score(items, with_pass=False), by_task)
        state["base"] = base_scores
    examples = exp.examples()

    def save() -> None:
        state["R"] = R
        exp.save_result("sequential", state)

    def todo(method: str) -> bool:
        """The method's R matrix is incomplete, or its last night's pass outcomes are missing."""
        return len(R.get(method, [])) < len(tasks) or (
            exp.pass_on() and not exp.complete(final.get(method), items)
        )

    if exp.pass_on() and not exp.complete(final.get("base"), items):
        have = exp.borrowed("base", items, final.get("base"))
        final["base"] = exp.score(items, have=have, label="sequential base")
        save()
    # One LoRA per task: task j is served by its own LoRA once learned, by the base model before.
    if todo("per-task LoRA"):
        own: dict[str, float] = {}
        last: dict[str, Any] = {}
        with exp.plain_model():
            for t in tasks:
                have = exp.borrowed("per-task LoRA", by_task[t], final.get("per-task LoRA"))
                with applied(exp.model, lora_deltas(exp.seed(t))):
                    scores = exp.score(by_task[t], have=have, label=f"sequential per-task LoRA {t}")
                own[t] = _task_scores(exp, scores, {t: by_task[t]})[t]
                last.update(scores)
        if exp.pass_on():
            final["per-task LoRA"] = last
        R["per-task LoRA"] = [
            [own[t] if j <= i else base_scores[t] for j, t in enumerate(tasks)] for i in range(len(tasks))
        ]
        save()
    # Naive sequential fine-tuning: one LoRA per night trained on the current weights, merged in.
    naive = R.setdefault("naive LoRA", [])
    if todo("naive LoRA"):
        with exp.plain_model():
            originals = snapshot_weights(exp.model, layer_keys(exp.seed(tasks[0])))
            try:
                naive.clear()  # the merged weights are not saved: a resumed run replays every night
                for night, task in enumerate(tasks):
                    if night == 0:  # on the untouched model night 1 IS the task's seed LoRA (same config)
                        lora = exp.seed(task)
                    else:
                        started = time.monotonic()
                        trained = train_lora_seed(
                            exp.model,
                            exp.runtime.tokenizer,
                            examples[task],
                            f"naive-{night}-{task}",
                            exp._seed_config(exp.config.seeds[0], len(examples[task])),
                            base_model_id=exp.runtime.model_id,
                            prefix=exp.prefix,
                        )
                        lora = trained.seed
                        exp._log_training(f"naive-{night}-{task}", trained.losses, time.monotonic() - started)
                    add_in_place(exp.model, lora_deltas(lora))
                    is_last = night == len(tasks) - 1
                    scores = exp.score(items, with_pass=is_last and exp.pass_on(), label="naive LoRA")
                    naive.append(_row(exp, scores, by_task))
                    if is_last and exp.pass_on():
                        final["naive LoRA"] = scores
                    save()
                    exp.progress(f"sequential: naive LoRA after night {night + 1}: {naive[-1]}")
            finally:
                restore_weights(exp.model, originals)
    # Share: night 1 builds the basis from the first task's LoRA (whole span), later nights learn
    # coefficients with φ temporary directions (Phase 2) and merge them into the basis (Phase 3).
    share_rows = R.setdefault("Share", [])
    if todo("Share"):
        share_rows.clear()
        merges: list[dict[str, Any]] = []
        first = phase1([renamed(exp.seed(tasks[0]), tasks[0])], threshold=1.0, cap=exp.config.k_cap)
        bases: dict[str, LayerBasis] = first.bases
        coeffs: dict[str, dict[str, TaskCoefficients]] = {tasks[0]: first.coefficients[tasks[0]]}
        for night, task in enumerate(tasks):
            with exp.share(bases) as bank:
                if night > 0:
                    started = time.monotonic()
                    learned = phase2(
                        exp.model,
                        exp.runtime.tokenizer,
                        bank,
                        examples[task],
                        exp._phase2_config(phi=exp._phi_for(bases)),
                        task=task,
                        prefix=exp.prefix,
                    )
                    exp._log_training(f"share-{night}-{task}", learned.losses, time.monotonic() - started)
                    merged = phase3(bases, coeffs, {task: learned}, threshold=1.0, cap=exp.config.k_cap)
                    merges.append(
                        {
                            "night": night + 1,
                            "errors": merged.report.errors,
                            "k_after": mean([k[0] + k[1] for k in merged.report.k_after.values()]),
                        }
                    )
                    bases, coeffs = merged.bases, {t: dict(c) for t, c in merged.coefficients.items()}
            if night > 0:
                detach_share(exp.model)
            with exp.share(bases) as bank:
                for t, c in coeffs.items():
                    bank.set_task(t, c, night + 1)
                keys = exp.task_keys(items, bank, "oracle")
                is_last = night == len(tasks) - 1
                with_pass = is_last and exp.pass_on()
                scores = exp.score(items, keys, bank.snapshot(), with_pass=with_pass, label="Share")
                share_rows.append(_row(exp, scores, by_task))
                if with_pass:
                    final["Share"] = scores
            state["share_merges"] = merges
            save()
            exp.progress(f"sequential: Share after night {night + 1}: {share_rows[-1]}")
    base_row = [base_scores[t] for t in tasks]
    state["metrics"] = {name: cl_metrics(matrix, base_row) for name, matrix in R.items()}
    if final and all(exp.complete(final.get(m), items) for m in ("base", *R)):
        state["final_summary"] = summarise_scores({m: final[m] for m in ("base", *R)}, items, tasks)
    state["tasks"] = tasks
    state["score"] = "minus the mean NLL per token of the reference fix's changed lines (higher is better)"
    save()
    plots.learning_curves(
        R, tasks, exp.root / "figures" / "sequential.png", "Score of each task after each night"
    )
    return state


def _task_scores(
    exp: Experiment, scores: Mapping[str, Mapping[str, Any]], by_task: Mapping[str, Sequence[EvalItem]]
) -> dict[str, float]:
    return {t: -mean([scores[i.id][SCORE] for i in its]) for t, its in by_task.items()}


def _row(
    exp: Experiment, scores: Mapping[str, Mapping[str, Any]], by_task: Mapping[str, Sequence[EvalItem]]
) -> list[float]:
    task_scores = _task_scores(exp, scores, by_task)
    return [round(task_scores[t], 5) for t in exp.config.tasks]
