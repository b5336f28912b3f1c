"""Subspace stability (Universal Weight Subspace Hypothesis): do LoRA adapters trained on different tasks or
with different random seeds share a low-rank, layer-wise subspace?

Share only pays off if they do: Phase 1's bases are built once from a few seeds and every later task must
fit inside them. This module measures that claim on plain LoRA seeds, reusing Phase 1 and the analytic
projection so that what is measured is exactly what Share would use:

- how concentrated the stacked factors are (explained-variance curves),
- whether bases built from two disjoint groups of seeds point the same way (principal angles, normalised
  similarity, against the similarity two *random* subspaces of the same sizes would have),
- whether a held-out adapter is reproduced by the bases built from the others (leave-one-out error, with
  and without the mean direction).

Pure torch on CPU, float64 for every measurement; reports are plain JSON-serialisable dicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from learner.share.math import (
    LayerBasis,
    LoraSeed,
    choose_rank,
    lowrank_sq_norm,
    lowrank_sq_norm_of_difference,
    project,
    reconstruct,
)
from learner.share.phases import phase1

Side = Literal["beta", "alpha"]
SIDES: tuple[Side, Side] = ("beta", "alpha")

# Largest |QᵀQ − I| accepted as "orthonormal": Phase 1 bases are float32, so ~1e-6 is normal.
_ORTHONORMAL_TOL = 1e-4


# ============================================================================================ geometry
def _check_basis(q: Tensor, name: str) -> Tensor:
    if q.dim() != 2 or q.shape[1] == 0 or q.shape[0] < q.shape[1]:
        raise ValueError(f"{name} must be an (m × k) basis with 1 ≤ k ≤ m, got shape {tuple(q.shape)}")
    q64 = q.detach().to("cpu", torch.float64)
    err = float((q64.T @ q64 - torch.eye(q64.shape[1], dtype=torch.float64)).abs().max())
    if err > _ORTHONORMAL_TOL:
        raise ValueError(f"{name} does not have orthonormal columns (max |QᵀQ − I| = {err:.2g})")
    return q64


def _cosines(q1: Tensor, q2: Tensor) -> Tensor:
    a, b = _check_basis(q1, "q1"), _check_basis(q2, "q2")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"bases live in different spaces: {a.shape[0]} vs {b.shape[0]} rows")
    return torch.linalg.svdvals(a.T @ b).clamp(0.0, 1.0)  # descending, min(k1, k2) of them


def principal_angles(q1: Tensor, q2: Tensor) -> Tensor:
    """Principal angles (radians, ascending; min(k1, k2) of them) between the column spaces of two
    orthonormal bases: their cosines are the singular values of q1ᵀq2.

    The arccos form loses precision for tiny angles (an exact match reads ~1e-8 rad, not 0); that is far
    below anything the stability analysis distinguishes."""
    return torch.arccos(_cosines(q1, q2))


def subspace_similarity(q1: Tensor, q2: Tensor) -> float:
    """‖q1ᵀq2‖²_F / min(k1, k2) = mean squared cosine of the principal angles, in [0, 1]: 1 when one
    subspace contains the other, 0 when they are orthogonal. Comparable across bases of different sizes."""
    cos = _cosines(q1, q2)
    return float((cos**2).sum() / cos.numel())


def random_subspace_similarity(dim: int, k1: int, k2: int) -> float:
    """Expected ``subspace_similarity`` of two independent uniformly random subspaces of sizes k1, k2 in
    R^dim: exactly max(k1, k2) / dim.

    Why: for a uniformly random k1-dim projector P1, E[P1] = (k1/dim)·I, so E‖Q1ᵀQ2‖²_F = E tr(P1P2) =
    k1·k2/dim; divided by min(k1, k2) that is max(k1, k2)/dim. Seeded Monte-Carlo bases agree with it."""
    if not 1 <= k1 <= dim or not 1 <= k2 <= dim:
        raise ValueError(f"subspace sizes must be in [1, {dim}], got {k1} and {k2}")
    return max(k1, k2) / dim


# ============================================================================================ seeds
def _check_seeds(seeds: Sequence[LoraSeed], *, minimum: int, what: str) -> list[str]:
    """Sorted layer keys after checking that the seeds are comparable (same layers, same shapes)."""
    if len(seeds) < minimum:
        raise ValueError(f"{what} needs at least {minimum} LoRA seed(s), got {len(seeds)}")
    names = [s.name for s in seeds]
    if len(set(names)) != len(names):
        raise ValueError(f"seed names must be unique, got {names}")
    first = seeds[0]
    for seed in seeds[1:]:
        if set(seed.layers) != set(first.layers):
            diff = sorted(set(seed.layers) ^ set(first.layers))
            raise ValueError(
                f"seed {seed.name!r} covers other layers than seed {first.name!r} (differ: {diff[:3]})"
            )
        for key, layer in seed.layers.items():
            ref = first.layers[key]
            if layer.b.shape[0] != ref.b.shape[0] or layer.a.shape[1] != ref.a.shape[1]:
                raise ValueError(
                    f"layer {key!r}: seed {seed.name!r} is {layer.b.shape[0]}×{layer.a.shape[1]}, "
                    f"seed {first.name!r} is {ref.b.shape[0]}×{ref.a.shape[1]}"
                )
    if not first.layers:
        raise ValueError(f"seed {first.name!r} has no layers")
    return sorted(first.layers)


def _stack(seeds: Sequence[LoraSeed], key: str, side: Side) -> Tensor:
    """𝔅 = [B1 … Bt] with Bi rescaled by s_i/s_0 (as Phase 1 does), or 𝒜 = [A1ᵀ … Atᵀ], in float64."""
    if side not in SIDES:
        raise ValueError(f"side must be 'beta' or 'alpha', got {side!r}")
    if any(key not in s.layers for s in seeds):
        raise ValueError(f"layer {key!r} is missing from some seeds")
    s0 = seeds[0].layers[key].scaling
    if side == "beta":
        cols = [s.layers[key].b.detach().double().cpu() * (s.layers[key].scaling / s0) for s in seeds]
    else:
        cols = [s.layers[key].a.detach().double().cpu().T for s in seeds]
    return torch.cat(cols, dim=1)


def explained_variance_curve(
    seeds: Sequence[LoraSeed], layer_key: str, side: Side, centre: bool = True
) -> list[float]:
    """Cumulative share of the energy Σσ² of the stacked (optionally mean-centred, as Phase 1 does) factors
    that the top k directions hold, for k = 1 … numerical rank; the last entry is 1.0.

    A curve that reaches 0.9 after a few directions means the adapters concentrate in a small subspace."""
    _check_seeds(seeds, minimum=1, what="an explained-variance curve")
    x = _stack(seeds, layer_key, side)
    if centre:
        x = x - x.mean(dim=1, keepdim=True)
    s = torch.linalg.svdvals(x)
    rank = choose_rank(s, 1.0, cap=s.numel())
    if rank == 0:
        raise ValueError(f"layer {layer_key!r} ({side}): the stacked factors are zero, nothing to explain")
    energy = s[:rank] ** 2
    curve = (torch.cumsum(energy, 0) / energy.sum()).tolist()
    curve[-1] = 1.0  # exact by definition; avoids 0.9999999999999998 in reports
    return [float(v) for v in curve]


def mean_explained_variance_curve(seeds: Sequence[LoraSeed], side: Side, centre: bool = True) -> list[float]:
    """``explained_variance_curve`` averaged over all layers; shorter curves (lower rank) count as 1.0 past
    their end, since they have already explained everything."""
    keys = _check_seeds(seeds, minimum=1, what="an explained-variance curve")
    curves = [explained_variance_curve(seeds, key, side, centre) for key in keys]
    length = max(len(c) for c in curves)
    return [sum(c[i] if i < len(c) else 1.0 for c in curves) / len(curves) for i in range(length)]


# ============================================================================================ comparisons
def _side_bases(basis: LayerBasis) -> dict[Side, Tensor]:
    return {"beta": basis.beta, "alpha": basis.alpha}


def compare_bases(
    seeds_a: Sequence[LoraSeed], seeds_b: Sequence[LoraSeed], *, threshold: float = 0.6, cap: int = 32
) -> dict[str, dict[str, dict[str, Any]]]:
    """Build Phase-1 bases (centred, no mean direction) from two disjoint groups of seeds and compare them
    layer by layer, per side.

    Returns ``{layer: {"beta"|"alpha": {"k_a", "k_b", "dim", "angles_deg", "mean_cosine", "similarity",
    "random_baseline"}}}``: basis sizes, the ambient dimension (out features for β, in features for α), the
    principal angles in degrees (ascending), the mean cosine of those angles, ``subspace_similarity`` and
    ``random_subspace_similarity`` for the same sizes — a similarity well above the baseline means both
    groups found the same subspace rather than two arbitrary ones."""
    keys_a = _check_seeds(seeds_a, minimum=1, what="group a")
    keys_b = _check_seeds(seeds_b, minimum=1, what="group b")
    if keys_a != keys_b:
        diff = sorted(set(keys_a) ^ set(keys_b))
        raise ValueError(f"the two groups cover different layers (differ: {diff[:3]})")
    for key in keys_a:
        la, lb = seeds_a[0].layers[key], seeds_b[0].layers[key]
        if la.b.shape[0] != lb.b.shape[0] or la.a.shape[1] != lb.a.shape[1]:
            raise ValueError(
                f"layer {key!r} is {la.b.shape[0]}×{la.a.shape[1]} in group a but "
                f"{lb.b.shape[0]}×{lb.a.shape[1]} in group b"
            )
    bases_a = phase1(seeds_a, threshold=threshold, cap=cap).bases
    bases_b = phase1(seeds_b, threshold=threshold, cap=cap).bases
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key in keys_a:
        sides_a, sides_b = _side_bases(bases_a[key]), _side_bases(bases_b[key])
        out[key] = {}
        for side in SIDES:
            qa, qb = sides_a[side], sides_b[side]
            cos = _cosines(qa, qb)
            k_a, k_b, dim = int(qa.shape[1]), int(qb.shape[1]), int(qa.shape[0])
            out[key][side] = {
                "k_a": k_a,
                "k_b": k_b,
                "dim": dim,
                "angles_deg": [math.degrees(float(v)) for v in torch.arccos(cos)],
                "mean_cosine": float(cos.mean()),
                "similarity": float((cos**2).sum() / cos.numel()),
                "random_baseline": random_subspace_similarity(dim, k_a, k_b),
            }
    return out


def leave_one_out(
    seeds: Sequence[LoraSeed], *, threshold: float = 0.6, cap: int = 32
) -> list[dict[str, Any]]:
    """For each seed i: Phase-1 bases from the other seeds, seed i projected analytically (εβ = βᵀBᵢ,
    εα = αᵀAᵢᵀ) and its relative reconstruction error ‖ΔŴ − ΔW‖_F / ‖ΔW‖_F over all layers together
    (ΔW = s·B·A, so layers with larger scaling weigh more, as in the model).

    Once with the centred principal directions only and once with the mean direction added: centring keeps
    where the adapters *differ*, so a shared mean is only reproduced by the second variant.
    Returns ``[{"seed", "error_without_mean", "error_with_mean"}]`` in input order."""
    keys = _check_seeds(seeds, minimum=2, what="leave-one-out")
    rows: list[dict[str, Any]] = []
    for i, held in enumerate(seeds):
        others = [s for j, s in enumerate(seeds) if j != i]
        row: dict[str, Any] = {"seed": held.name}
        for include_mean, label in [(False, "error_without_mean"), (True, "error_with_mean")]:
            bases = phase1(others, threshold=threshold, cap=cap, include_mean=include_mean).bases
            num = den = 0.0
            for key in keys:
                basis = bases[key].to("cpu", torch.float64)
                layer = held.layers[key]
                b = layer.b.detach().double().cpu() * (layer.scaling / basis.scaling)
                a = layer.a.detach().double().cpu()
                b_hat, a_hat = reconstruct(basis, project(basis, b, a))
                s2 = basis.scaling**2
                num += s2 * lowrank_sq_norm_of_difference(b, a, b_hat, a_hat)
                den += s2 * lowrank_sq_norm(b, a)
            if den <= 0.0:
                raise ValueError(f"seed {held.name!r} has a zero delta: its relative error is undefined")
            row[label] = math.sqrt(num / den)
        rows.append(row)
    return rows


# ============================================================================================ summaries
def summarise(values: Iterable[float]) -> dict[str, float]:
    """Mean, min and max of per-layer (or per-seed) numbers, for one cell of a report table."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("nothing to summarise: no values")
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals), "count": float(len(vals))}


def summarise_comparison(
    comparison: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """``compare_bases`` output averaged over layers: ``{side: {metric: {"mean", "min", "max", "count"}}}``
    for the scalar metrics (k_a, k_b, mean_cosine, similarity, random_baseline)."""
    metrics = ("k_a", "k_b", "mean_cosine", "similarity", "random_baseline")
    return {
        side: {m: summarise(layer[side][m] for layer in comparison.values()) for m in metrics}
        for side in SIDES
    }


def summarise_leave_one_out(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``leave_one_out`` output averaged over seeds: ``{"error_without_mean"|"error_with_mean": stats}``."""
    return {m: summarise(r[m] for r in rows) for m in ("error_without_mean", "error_with_mean")}


def subspace_report(
    groups: Mapping[str, Sequence[LoraSeed]], *, threshold: float = 0.6, cap: int = 32
) -> dict[str, Any]:
    """Everything ``plot_subspace`` draws, as one JSON-serialisable dict.

    Shape::

        {
          "threshold": float, "cap": int,
          "curves": {group: {"beta": [float, ...], "alpha": [float, ...]}},  # mean over layers, centred
          "comparison": {layer: {side: {...}}} | None,   # compare_bases(first group, second group)
          "comparison_summary": {side: {metric: stats}} | None,
          "comparison_groups": [group_a, group_b] | None,
          "leave_one_out": [{"seed", "error_without_mean", "error_with_mean"}] | None,  # all groups pooled
          "leave_one_out_summary": {metric: stats} | None,
        }

    The comparison needs ≥ 2 groups and leave-one-out ≥ 2 seeds in total (seed names unique across
    groups); sections that cannot be computed are None."""
    if not groups:
        raise ValueError("need at least one group of seeds")
    names = list(groups)
    report: dict[str, Any] = {
        "threshold": float(threshold),
        "cap": int(cap),
        "curves": {
            name: {side: mean_explained_variance_curve(seeds, side) for side in SIDES}
            for name, seeds in groups.items()
        },
        "comparison": None,
        "comparison_summary": None,
        "comparison_groups": None,
        "leave_one_out": None,
        "leave_one_out_summary": None,
    }
    if len(names) >= 2:
        comparison = compare_bases(groups[names[0]], groups[names[1]], threshold=threshold, cap=cap)
        report["comparison"] = comparison
        report["comparison_summary"] = summarise_comparison(comparison)
        report["comparison_groups"] = names[:2]
    pooled = [s for seeds in groups.values() for s in seeds]
    if len(pooled) >= 2:
        rows = leave_one_out(pooled, threshold=threshold, cap=cap)
        report["leave_one_out"] = rows
        report["leave_one_out_summary"] = summarise_leave_one_out(rows)
    return report


# ============================================================================================ plot
def plot_subspace(report: Mapping[str, Any], path: str | Path) -> Path:
    """Draw a ``subspace_report``-shaped dict (see its docstring; only "curves", "comparison" and
    "leave_one_out" are read, any may be missing or None) into a PNG with three panels:
    (a) mean explained-variance curves per group and side, (b) per-layer normalised similarity of the two
    groups' bases against the random-subspace baseline, (c) leave-one-out error without vs with the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_a, ax_b, ax_c) = plt.subplots(1, 3, figsize=(16, 4.5))
    try:
        curves = report.get("curves") or {}
        for group, by_side in curves.items():
            for side, style in zip(SIDES, ("-", "--"), strict=True):
                ys = by_side.get(side) or []
                ax_a.plot(range(1, len(ys) + 1), ys, style, marker=".", label=f"{group} {side}")
        ax_a.set(title="(a) explained variance (mean over layers)", xlabel="k", ylabel="cumulative energy")
        ax_a.set_ylim(0, 1.05)
        _legend_or_note(ax_a, bool(curves))

        comparison = report.get("comparison") or {}
        keys = list(comparison)
        width = 0.4
        for offset, side in zip((-width / 2, width / 2), SIDES, strict=True):
            xs = [i + offset for i in range(len(keys))]
            ax_b.bar(xs, [comparison[k][side]["similarity"] for k in keys], width, label=f"{side} similarity")
            ax_b.scatter(
                xs, [comparison[k][side]["random_baseline"] for k in keys], color="k", marker="_", s=200
            )
        if keys:
            ax_b.scatter([], [], color="k", marker="_", label="random baseline")
        ax_b.set(title="(b) similarity of the two groups' bases", xlabel="layer", ylabel="‖q1ᵀq2‖²/min k")
        ax_b.set_ylim(0, 1.05)
        ax_b.set_xticks(range(len(keys)), [_short(k) for k in keys], rotation=60, fontsize=6)
        _legend_or_note(ax_b, bool(keys))

        rows = report.get("leave_one_out") or []
        xs_c = list(range(len(rows)))
        ax_c.bar(
            [x - width / 2 for x in xs_c], [r["error_without_mean"] for r in rows], width, label="centred"
        )
        ax_c.bar([x + width / 2 for x in xs_c], [r["error_with_mean"] for r in rows], width, label="+ mean")
        ax_c.set(title="(c) leave-one-out reconstruction", xlabel="held-out seed", ylabel="‖ΔŴ−ΔW‖/‖ΔW‖")
        ax_c.set_xticks(xs_c, [str(r["seed"]) for r in rows], rotation=60, fontsize=6)
        _legend_or_note(ax_c, bool(rows))

        fig.tight_layout()
        fig.savefig(out, dpi=120)
    finally:
        plt.close(fig)
    return out


def _legend_or_note(ax: Any, has_data: bool) -> None:
    if has_data:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes)


def _short(key: str) -> str:
    """'model.layers.3.self_attn.q_proj' → '3.q_proj': enough to tell layers apart on an axis."""
    parts = key.split(".")
    digits = [p for p in parts if p.isdigit()]
    return f"{digits[-1]}.{parts[-1]}" if digits else parts[-1]


__all__ = [
    "compare_bases",
    "explained_variance_curve",
    "leave_one_out",
    "mean_explained_variance_curve",
    "plot_subspace",
    "principal_angles",
    "random_subspace_similarity",
    "subspace_report",
    "subspace_similarity",
    "summarise",
    "summarise_comparison",
    "summarise_leave_one_out",
]
