"""Continual-learning metrics (GEM, Lopez-Paz & Ranzato, arXiv 1706.08840): one accuracy matrix says both
how good the final model is and how much each night's learning cost the earlier tasks.

``R[i][j]`` is the score on task ``j`` after learning task ``i`` (higher is better) and ``base[j]`` the base
model's score on task ``j``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _validate(R: Sequence[Sequence[float]], base: Sequence[float]) -> int:
    T = len(R)
    if T < 2:
        raise ValueError(f"need at least 2 tasks (a T x T matrix with T >= 2), got T={T}")
    for i, row in enumerate(R):
        if len(row) != T:
            raise ValueError(f"R must be square: row {i} has {len(row)} scores, expected {T}")
    if len(base) != T:
        raise ValueError(f"base must have one score per task: got {len(base)}, expected {T}")
    for i, row in enumerate(R):
        for j, v in enumerate(row):
            if not math.isfinite(v):
                raise ValueError(f"R[{i}][{j}] is not finite: {v!r}")
    for j, v in enumerate(base):
        if not math.isfinite(v):
            raise ValueError(f"base[{j}] is not finite: {v!r}")
    return T


def cl_metrics(R: Sequence[Sequence[float]], base: Sequence[float]) -> dict[str, float]:
    """ACC, BWT, FWT and forgetting of one sequential-learning run.

    - ``acc``: mean final score over all tasks, ``mean_j R[T-1][j]``.
    - ``bwt``: backward transfer, ``mean_{j<T-1} (R[T-1][j] - R[j][j])``; negative means forgetting.
    - ``fwt``: forward transfer, ``mean_{j>=1} (R[j-1][j] - base[j])``: what earlier tasks gave a task
      before it was learned.
    - ``forgetting``: ``mean_{j<T-1} (max_{j<=i<T-1} R[i][j] - R[T-1][j])``, the drop from each task's best
      score since it was learned (catches forgetting that BWT misses when a task peaked after it was
      learned; scores from before it was learned do not count — a task whose adapter is worse than the base
      model has not been forgotten).
    """
    T = _validate(R, base)
    last = R[T - 1]
    acc = sum(float(v) for v in last) / T
    bwt = sum(float(last[j]) - float(R[j][j]) for j in range(T - 1)) / (T - 1)
    fwt = sum(float(R[j - 1][j]) - float(base[j]) for j in range(1, T)) / (T - 1)
    forgetting = sum(max(float(R[i][j]) for i in range(j, T - 1)) - float(last[j]) for j in range(T - 1)) / (
        T - 1
    )
    return {"acc": acc, "bwt": bwt, "fwt": fwt, "forgetting": forgetting}
