"""Subspace-stability analysis on synthetic LoRA seeds: known geometry in, known numbers out."""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from learner.share.math import LoraSeed, SeedLayer
from service.research.geometry import (
    compare_bases,
    explained_variance_curve,
    leave_one_out,
    mean_explained_variance_curve,
    plot_subspace,
    principal_angles,
    random_subspace_similarity,
    subspace_report,
    subspace_similarity,
    summarise,
    summarise_comparison,
    summarise_leave_one_out,
)

# Two layers of different shapes (out n, in d), named like the real model's.
SHAPES = {"model.layers.0.self_attn.q_proj": (64, 48), "model.layers.1.mlp.up_proj": (80, 40)}
R = 4
PLANTED_DIM = 3


def orthonormal(m: int, k: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(
        torch.randn(m, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )[0]


def random_seeds(prefix: str, count: int, seed: int, scaling: float = 2.0) -> list[LoraSeed]:
    g = torch.Generator().manual_seed(seed)
    return [
        LoraSeed(
            f"{prefix}{i}",
            {
                key: SeedLayer(
                    a=torch.randn(R, d, generator=g), b=torch.randn(n, R, generator=g), scaling=scaling
                )
                for key, (n, d) in SHAPES.items()
            },
        )
        for i in range(count)
    ]


def planted_seeds(
    prefix: str, count: int, seed: int, noise: float = 0.0, with_mean: bool = False
) -> list[LoraSeed]:
    """Every adapter lives in one fixed PLANTED_DIM-dim subspace per layer and side (U for B, V for Aᵀ;
    the same for every caller), plus optional noise. With ``with_mean`` every column of B also carries a
    shared direction μ ⟂ U (and every row of A a shared ν ⟂ V): a mean the centred basis cannot see."""
    g = torch.Generator().manual_seed(seed)
    seeds = []
    for i in range(count):
        layers = {}
        for j, (key, (n, d)) in enumerate(SHAPES.items()):
            q_out, q_in = orthonormal(n, PLANTED_DIM + 1, 100 + j), orthonormal(d, PLANTED_DIM + 1, 200 + j)
            u, mu = q_out[:, :PLANTED_DIM], 3.0 * q_out[:, PLANTED_DIM:]
            v, nu = q_in[:, :PLANTED_DIM], 3.0 * q_in[:, PLANTED_DIM:]
            b = u @ torch.randn(PLANTED_DIM, R, generator=g, dtype=torch.float64)
            a = torch.randn(R, PLANTED_DIM, generator=g, dtype=torch.float64) @ v.T
            if with_mean:
                b = b + mu @ torch.ones(1, R, dtype=torch.float64)
                a = a + torch.ones(R, 1, dtype=torch.float64) @ nu.T
            b = b + noise * torch.randn(n, R, generator=g, dtype=torch.float64)
            a = a + noise * torch.randn(R, d, generator=g, dtype=torch.float64)
            layers[key] = SeedLayer(a=a.float(), b=b.float(), scaling=2.0)
        seeds.append(LoraSeed(f"{prefix}{i}", layers))
    return seeds


# ============================================================================================ geometry
def test_identical_subspaces_have_zero_angles_and_similarity_one() -> None:
    q = orthonormal(20, 4, 0)
    rotated = q @ orthonormal(4, 4, 1)  # another basis of the same subspace
    for other in (q, rotated):
        assert torch.allclose(principal_angles(q, other), torch.zeros(4, dtype=torch.float64), atol=1e-6)
        assert subspace_similarity(q, other) == pytest.approx(1.0, abs=1e-12)
    assert subspace_similarity(q, q[:, :2]) == pytest.approx(1.0, abs=1e-12)  # containment counts as 1


def test_orthogonal_subspaces_have_right_angles_and_similarity_zero() -> None:
    q = orthonormal(20, 6, 2)
    angles = principal_angles(q[:, :3], q[:, 3:])
    assert torch.allclose(angles, torch.full((3,), math.pi / 2, dtype=torch.float64), atol=1e-6)
    assert subspace_similarity(q[:, :3], q[:, 3:]) == pytest.approx(0.0, abs=1e-12)


def test_a_known_rotation_gives_the_known_angle() -> None:
    theta = math.radians(30.0)
    e = torch.eye(5, dtype=torch.float64)
    q1 = e[:, :2]
    q2 = torch.stack([math.cos(theta) * e[:, 0] + math.sin(theta) * e[:, 2], e[:, 1]], dim=1)
    angles = principal_angles(q1, q2)
    assert torch.allclose(angles, torch.tensor([0.0, theta], dtype=torch.float64), atol=1e-6)
    assert subspace_similarity(q1, q2) == pytest.approx((1 + math.cos(theta) ** 2) / 2, abs=1e-12)


def test_random_baseline_matches_random_subspaces() -> None:
    dim, k1, k2 = 40, 3, 6
    sims = [
        subspace_similarity(orthonormal(dim, k1, 2 * i), orthonormal(dim, k2, 2 * i + 1)) for i in range(300)
    ]
    assert sum(sims) / len(sims) == pytest.approx(random_subspace_similarity(dim, k1, k2), rel=0.08)
    assert random_subspace_similarity(dim, k1, k2) == pytest.approx(6 / 40)


def test_bad_bases_are_rejected() -> None:
    with pytest.raises(ValueError, match="orthonormal"):
        principal_angles(torch.randn(10, 3, dtype=torch.float64), orthonormal(10, 2, 0))
    with pytest.raises(ValueError, match="different spaces"):
        subspace_similarity(orthonormal(10, 2, 0), orthonormal(11, 2, 1))
    with pytest.raises(ValueError, match="sizes"):
        random_subspace_similarity(10, 0, 3)


# ============================================================================================ curves
def test_explained_variance_curve_is_monotone_and_ends_at_one() -> None:
    seeds = random_seeds("r", 3, seed=0)
    key = next(iter(SHAPES))
    for side in ("beta", "alpha"):
        for centre, rank in [(True, 3 * R - 1), (False, 3 * R)]:
            curve = explained_variance_curve(seeds, key, side, centre=centre)
            assert len(curve) == rank
            assert all(b >= a for a, b in pairwise(curve))
            assert curve[-1] == 1.0 and 0.0 < curve[0] < 1.0
    planted = explained_variance_curve(planted_seeds("p", 4, seed=1, noise=1e-3), key, "beta")
    assert planted[PLANTED_DIM - 1] > 0.999  # concentrated: 3 directions hold everything
    mean_curve = mean_explained_variance_curve(seeds, "alpha")
    assert len(mean_curve) == 3 * R - 1 and mean_curve[-1] == pytest.approx(1.0)


def test_explained_variance_rescales_b_like_phase1() -> None:
    key = next(iter(SHAPES))
    s0, s1 = random_seeds("x", 2, seed=3)
    halved = {k: SeedLayer(a=v.a, b=v.b * 2.0, scaling=v.scaling / 2.0) for k, v in s1.layers.items()}
    same_delta = LoraSeed("x1", halved)  # identical s·B·A, different split between s and B
    assert explained_variance_curve([s0, same_delta], key, "beta") == pytest.approx(
        explained_variance_curve([s0, s1], key, "beta"), abs=1e-9
    )


# ============================================================================================ comparisons
def test_planted_subspace_is_found_by_both_groups_and_random_seeds_are_not() -> None:
    kwargs = {"threshold": 0.99, "cap": PLANTED_DIM}
    planted = compare_bases(
        planted_seeds("a", 4, seed=10, noise=1e-2), planted_seeds("b", 4, seed=11, noise=1e-2), **kwargs
    )
    random = compare_bases(random_seeds("a", 4, seed=12), random_seeds("b", 4, seed=13), **kwargs)
    json.dumps(planted)
    for key, (n, d) in SHAPES.items():
        for side, dim in [("beta", n), ("alpha", d)]:
            p, r = planted[key][side], random[key][side]
            assert p["k_a"] == p["k_b"] == PLANTED_DIM and p["dim"] == dim
            assert len(p["angles_deg"]) == PLANTED_DIM and max(p["angles_deg"]) < 5.0
            assert p["mean_cosine"] > 0.99
            assert p["random_baseline"] == pytest.approx(PLANTED_DIM / dim)
            assert p["similarity"] > 0.95 > 5 * p["random_baseline"]
            assert r["similarity"] < 3 * r["random_baseline"]
            assert min(r["angles_deg"]) > 20.0
    summary = summarise_comparison(planted)
    assert summary["beta"]["similarity"]["min"] > 0.95 and summary["alpha"]["k_a"]["mean"] == PLANTED_DIM


def test_leave_one_out_reproduces_an_adapter_in_the_span_but_not_a_random_one() -> None:
    seeds = [*planted_seeds("p", 4, seed=20), *random_seeds("r", 1, seed=21)]
    rows = leave_one_out(seeds, threshold=0.999999, cap=32)
    assert [r["seed"] for r in rows] == [s.name for s in seeds]
    for row in rows[:-1]:
        assert row["error_without_mean"] < 1e-4 and row["error_with_mean"] < 1e-4
    assert rows[-1]["error_without_mean"] > 0.9 and rows[-1]["error_with_mean"] > 0.9


def test_include_mean_recovers_a_shared_mean_the_centred_basis_misses() -> None:
    seeds = planted_seeds("m", 5, seed=30, with_mean=True)
    rows = leave_one_out(seeds, threshold=0.999, cap=32)
    for row in rows:
        assert row["error_without_mean"] > 0.5
        assert row["error_with_mean"] < 1e-4
    summary = summarise_leave_one_out(rows)
    assert summary["error_with_mean"]["max"] < 1e-4 < 0.5 < summary["error_without_mean"]["min"]


def test_summarise() -> None:
    assert summarise([1.0, 2.0, 6.0]) == {"mean": 3.0, "min": 1.0, "max": 6.0, "count": 3.0}
    with pytest.raises(ValueError, match="nothing to summarise"):
        summarise([])


def test_bad_seed_sets_give_clear_errors() -> None:
    seeds = random_seeds("s", 2, seed=40)
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out(seeds[:1])
    one_layer = LoraSeed("short", {k: v for k, v in seeds[1].layers.items() if "q_proj" in k})
    with pytest.raises(ValueError, match="other layers"):
        leave_one_out([seeds[0], one_layer])
    with pytest.raises(ValueError, match="different layers"):
        compare_bases(seeds[:1], [one_layer])
    key = next(iter(SHAPES))
    n, d = SHAPES[key]
    wider = LoraSeed(
        "wide", {**seeds[1].layers, key: SeedLayer(a=torch.randn(R, d + 1), b=torch.randn(n, R), scaling=2.0)}
    )
    with pytest.raises(ValueError, match="is 64×49"):
        leave_one_out([seeds[0], wider])
    with pytest.raises(ValueError, match="group b"):
        compare_bases(seeds[:1], [wider])
    with pytest.raises(ValueError, match="unique"):
        leave_one_out([seeds[0], seeds[0]])
    with pytest.raises(ValueError, match="side"):
        explained_variance_curve(seeds, key, "gamma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing"):
        explained_variance_curve(seeds, "no.such.layer", "beta")


# ============================================================================================ report
def test_report_is_json_and_plot_writes_a_png(tmp_path: Path) -> None:
    groups = {"tasks": planted_seeds("t", 3, seed=50, noise=1e-2), "random": random_seeds("r", 3, seed=51)}
    report = subspace_report(groups, threshold=0.9, cap=8)
    restored = json.loads(json.dumps(report))
    assert restored["comparison_groups"] == ["tasks", "random"]
    assert set(restored["curves"]) == {"tasks", "random"} and set(restored["comparison"]) == set(SHAPES)
    assert len(restored["leave_one_out"]) == 6
    out = plot_subspace(restored, tmp_path / "fig" / "subspace.png")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    empty = plot_subspace({}, tmp_path / "empty.png")  # every panel says "not computed" instead of failing
    assert empty.read_bytes().startswith(b"\x89PNG")
