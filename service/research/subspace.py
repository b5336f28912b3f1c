"""``subspace`` stage: principal angles / similarity of bases from disjoint task subsets and from other seeds
(the geometry is in :mod:`service.research.geometry`)."""

from __future__ import annotations

from typing import Any

from learner.share.math import LoraSeed
from service.research.experiment import (
    Experiment,
)
from service.research.geometry import plot_subspace, subspace_report


def run(exp: Experiment) -> dict[str, Any]:
    """Bases from disjoint task subsets, and (with ≥ 2 seeds) from different random seeds."""
    tasks = exp.config.tasks
    half = len(tasks) // 2
    groups: dict[str, list[LoraSeed]] = {
        f"tasks {'+'.join(tasks[:half])}": [exp.seed(t) for t in tasks[:half]],
        f"tasks {'+'.join(tasks[half:])}": [exp.seed(t) for t in tasks[half:]],
    }
    report: dict[str, Any] = {
        "disjoint_tasks": subspace_report(groups, threshold=exp.config.threshold, cap=exp.config.k_cap)
    }
    if len(exp.config.seeds) >= 2:
        s0, s1 = exp.config.seeds[:2]
        seed_groups = {
            f"seed {s0}": [exp.seed(t, s0) for t in tasks],
            f"seed {s1}": [exp.seed(t, s1) for t in tasks],
        }
        report["other_seeds"] = subspace_report(
            seed_groups, threshold=exp.config.threshold, cap=exp.config.k_cap
        )
        plot_subspace(report["other_seeds"], exp.root / "figures" / "subspace_seeds.png")
    plot_subspace(report["disjoint_tasks"], exp.root / "figures" / "subspace_tasks.png")
    return report
