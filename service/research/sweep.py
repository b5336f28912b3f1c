"""``sweep`` stage: k cap, pseudo-rank p, φ; score against bytes per task."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from learner.share.accounting import task_cost
from learner.share.phases import phase2, phase3
from service.research import plots
from service.research.experiment import (
    SCORE,
    Experiment,
    lora_bytes,
    mean,
)
from service.research.variants import (
    applied,
    lora_deltas,
)


def run(exp: Experiment) -> dict[str, Any]:
    """Learn the last task in bases from the others (Phase 2), varying one knob at a time."""
    tasks = exp.config.tasks
    held, others = tasks[-1], tasks[:-1]
    items = [i for i in exp.items() if i.family == held]
    state = exp.load_result("sweep")
    points: dict[str, dict[str, Any]] = state.get("points", {})
    c = exp.config
    # φ is capped at k/4 of the smallest layer basis, and the threshold basis is often only ~4 wide:
    # the φ knob is compared on the full span of the other tasks' seeds (threshold 1.0, up to the
    # cap), φ = 0 included, so that every φ asked for can run.
    configs = (
        [("cap", cap, c.pseudo_rank, 0, c.threshold) for cap in c.sweep_caps]
        + [("p", c.k_cap, p, 0, c.threshold) for p in c.sweep_ps if p != c.pseudo_rank]
        + [("phi", c.k_cap, c.pseudo_rank, phi, 1.0) for phi in sorted({0, *c.sweep_phis})]
    )

    def done(label: str) -> bool:
        point = points.get(label)
        return point is not None and (not exp.pass_on() or "pass_rate" in point)

    def save(label: str, point: dict[str, Any]) -> None:
        points[label] = point
        state["points"] = points
        exp.save_result("sweep", state)
        exp.progress(f"sweep: {label}: {_brief(point)}")

    if not done("base"):
        scores = exp.score(items, label="sweep base")
        save("base", _sweep_point(points.get("base"), scores, bytes=0))
    if not done("LoRA"):
        with exp.plain_model(), applied(exp.model, lora_deltas(exp.seed(held))):
            scores = exp.score(items, label="sweep LoRA")
        save("LoRA", _sweep_point(points.get("LoRA"), scores, bytes=lora_bytes(exp.seed(held))))
    # A cap above every layer's threshold-chosen k does not bind: Phase 1 gives the same basis, and Phase 2
    # (seeded) the same coefficients, so such a point is a copy of the one already trained.
    trained: dict[tuple[Any, ...], str] = {}
    for knob, cap, p, phi, threshold in configs:
        label = f"{knob}: cap={cap} p={p} phi={phi}" + (" full span" if threshold == 1.0 else "")
        p1 = exp.phase1_bases(others, cap=cap, threshold=threshold)  # an SVD: cheap next to Phase 2
        bases = p1.bases
        signature = (threshold, p, phi, tuple(sorted((n, b.k_beta, b.k_alpha) for n, b in bases.items())))
        twin = trained.get(signature)
        if done(label):
            trained.setdefault(signature, label)
            continue
        if twin is not None:
            copy = {k: v for k, v in points[twin].items() if k != "earlier_run"}
            save(label, {**copy, **_earlier(points.get(label)), "same_basis_as": twin})
            continue
        trained[signature] = label
        with exp.share(bases) as bank:
            learned = phase2(
                exp.model,
                exp.runtime.tokenizer,
                bank,
                exp.examples()[held],
                exp._phase2_config(pseudo_rank=p, phi=min(phi, exp._phi_for(bases)) if phi else 0),
                task=held,
                prefix=exp.prefix,
            )
        merge_error = None
        if learned.phi:
            # Merge with the other tasks' coefficients so the basis stays the shared one (a merge of
            # the held-out task alone would fit a basis to it and undercount its bytes).
            merged = phase3(bases, p1.coefficients, {held: learned}, threshold=1.0, cap=cap + learned.phi)
            bases, coeffs = merged.bases, merged.coefficients[held]
            merge_error = merged.report.worst()
        else:
            coeffs = learned.coeffs
        with exp.share(bases) as bank:
            bank.set_task(held, coeffs, 1)
            scores = exp.score(items, [(held, 1)] * len(items), bank.snapshot(), label=label)
        cost = task_cost(bases, pseudo_rank=p, lora_rank=c.lora_rank)
        point = _sweep_point(
            points.get(label),
            scores,
            bytes=cost.share_bytes,
            k=mean([b.k_beta + b.k_alpha for b in bases.values()]) / 2,
            final_loss=learned.losses[-1],
            # φ is capped at k/4 of the smallest layer basis: the label asks, this is what ran.
            phi_used=learned.phi,
            merge_worst_error=merge_error,  # Phase 3 reconstruction error, worst task (φ > 0)
        )
        save(label, point)
    state.update({"points": points, "held_out_task": held, "koans": len(items), "score": "minus edit NLL"})
    sweep_figures(exp.root / "figures", state)
    return state


def sweep_figures(folder: Path, state: Mapping[str, Any]) -> None:
    """``sweep.png`` (−edit NLL vs bytes per task) and, when every point has one, ``sweep_pass.png``."""
    points, held = state["points"], state["held_out_task"]
    plots.tradeoff(
        [{"label": k, "bytes": max(v["bytes"], 1), "score": v["score"]} for k, v in points.items()],
        folder / "sweep.png",
        f"{held}: score vs bytes per task",
        "bytes per task (log)",
        "− edit NLL",
    )
    if all("pass_rate" in v for v in points.values()):
        koans = f" ({state['koans']} koans)" if "koans" in state else ""
        plots.tradeoff(
            [{"label": k, "bytes": max(v["bytes"], 1), "score": v["pass_rate"]} for k, v in points.items()],
            folder / "sweep_pass.png",
            f"{held}: one-shot pass rate vs bytes per task{koans}",
            "bytes per task (log)",
            "pass rate",
            ylim=(-0.05, 1.05),
        )


def _sweep_point(
    previous: Mapping[str, Any] | None, scores: Mapping[str, Mapping[str, Any]], **extra: Any
) -> dict[str, Any]:
    """A sweep point: −mean edit NLL, the pass rate and fixed koans when generated, and ``extra``. A point
    re-run to add pass outcomes keeps the earlier run's numbers under ``earlier_run`` (a reproducibility
    check: retrained coefficients should score the same)."""
    point: dict[str, Any] = {"score": -mean([v[SCORE] for v in scores.values()]), **extra}
    if all("fixed" in v for v in scores.values()):
        point["pass_rate"] = mean([float(v["fixed"]) for v in scores.values()])
        point["fixed"] = sorted(k for k, v in scores.items() if v["fixed"])
    return {**point, **_earlier(previous)}


def _earlier(previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"earlier_run": …}`` with the first recorded score and final loss of a point run again."""
    if not previous:
        return {}
    earlier = previous.get("earlier_run") or {
        k: previous[k] for k in ("score", "final_loss") if k in previous
    }
    return {"earlier_run": earlier}


def _brief(point: Mapping[str, Any]) -> str:
    keys = ("score", "pass_rate", "bytes", "k", "final_loss", "phi_used")
    return ", ".join(
        f"{k}={point[k]:.4g}" if isinstance(point[k], float) else f"{k}={point[k]}"
        for k in keys
        if k in point
    )
