"""Share's linear algebra on random matrices: the identities everything else relies on."""

from __future__ import annotations

import pytest
import torch

from learner.share.accounting import layer_shapes, lora_params, task_cost
from learner.share.math import (
    LayerBasis,
    TaskCoefficients,
    build_layer_basis,
    choose_rank,
    delta_weight,
    lowrank_sq_norm,
    lowrank_sq_norm_of_difference,
    orthonormality_error,
    principal_basis,
    project,
    reconstruct,
    routed_delta,
)

N, D, R, T = 48, 40, 4, 3


def random_seeds(seed: int = 0, t: int = T, r: int = R) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    bs = [torch.randn(N, r, generator=g) for _ in range(t)]
    as_ = [torch.randn(r, D, generator=g) for _ in range(t)]
    return bs, as_


def test_choose_rank_follows_threshold_and_cap() -> None:
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert choose_rank(s, 0.6, cap=10) == 1  # 9/14 = 0.64
    assert choose_rank(s, 0.7, cap=10) == 2
    assert choose_rank(s, 1.0, cap=10) == 3  # never the numerically-zero direction
    assert choose_rank(s, 1.0, cap=2) == 2
    assert choose_rank(torch.zeros(3), 0.6, cap=4) == 0
    with pytest.raises(ValueError, match="threshold"):
        choose_rank(s, 0.0, cap=3)


@pytest.mark.parametrize("threshold,include_mean", [(0.6, False), (0.6, True), (1.0, False)])
def test_bases_are_orthonormal(threshold: float, include_mean: bool) -> None:
    bs, as_ = random_seeds()
    basis, info_b, info_a = build_layer_basis(
        bs, as_, 2.0, threshold=threshold, cap=32, include_mean=include_mean
    )
    assert orthonormality_error(basis.beta) < 1e-6
    assert orthonormality_error(basis.alpha) < 1e-6
    assert basis.beta.shape == (N, info_b.k) and basis.alpha.shape == (D, info_a.k)
    assert info_b.mean_added == (include_mean or threshold == 1.0)


def test_threshold_picks_fewer_directions_and_cap_limits_them() -> None:
    bs, as_ = random_seeds()
    _, info_small, _ = build_layer_basis(bs, as_, 1.0, threshold=0.6, cap=32)
    _, info_full, _ = build_layer_basis(bs, as_, 1.0, threshold=1.0, cap=32)
    capped, info_capped, _ = build_layer_basis(bs, as_, 1.0, threshold=1.0, cap=5)
    assert info_small.k < info_full.k == T * R  # centred rank T·R − 1, plus the mean direction
    assert info_small.explained >= 0.6
    assert info_capped.k == 5 and capped.k_alpha == 5


def test_in_span_adapters_reconstruct_exactly() -> None:
    bs, as_ = random_seeds()
    basis, _, _ = build_layer_basis(bs, as_, 2.0, threshold=1.0, cap=32)
    g = torch.Generator().manual_seed(1)
    mix_b = torch.cat(bs, 1) @ torch.randn(T * R, 2, generator=g)  # any adapter inside the seeds' span
    mix_a = (torch.cat([a.T for a in as_], 1) @ torch.randn(T * R, 2, generator=g)).T
    for b, a in [*zip(bs, as_, strict=True), (mix_b, mix_a)]:
        b_hat, a_hat = reconstruct(basis, project(basis, b, a))
        assert torch.allclose(b_hat, b, atol=1e-4, rtol=0)
        assert torch.allclose(a_hat, a, atol=1e-4, rtol=0)


def test_centred_directions_alone_miss_the_seeds_which_is_why_the_mean_is_added() -> None:
    bs, _ = random_seeds()
    stacked = torch.cat(bs, 1)
    centred_only, info = principal_basis(stacked, 0.999999, cap=32, include_mean=False)
    with_mean, info_mean = principal_basis(stacked, 0.999999, cap=32, include_mean=True)
    assert info.k == T * R - 1 and not info.mean_added  # every centred direction kept...
    miss = (stacked - centred_only @ (centred_only.T @ stacked)).norm() / stacked.norm()
    assert miss > 1e-2  # ...yet the seeds are not in their span
    hit = (stacked - with_mean @ (with_mean.T @ stacked)).norm() / stacked.norm()
    assert info_mean.mean_added and hit < 1e-5


def test_analytic_coefficients_equal_least_squares() -> None:
    bs, as_ = random_seeds()
    basis, _, _ = build_layer_basis(bs, as_, 1.0, threshold=0.6, cap=32)
    g = torch.Generator().manual_seed(2)
    b, a = torch.randn(N, 3, generator=g), torch.randn(3, D, generator=g)  # out of span: lstsq ≠ exact
    coeffs = project(basis, b, a)
    eb_ls = torch.linalg.lstsq(basis.beta.double(), b.double()).solution
    ea_ls = torch.linalg.lstsq(basis.alpha.double(), a.T.double()).solution
    assert torch.allclose(coeffs.eb.double(), eb_ls, atol=1e-5)
    assert torch.allclose(coeffs.ea.double(), ea_ls, atol=1e-5)


def test_lowrank_norms_match_dense_computation() -> None:
    g = torch.Generator().manual_seed(3)
    b1, a1, b2, a2 = (torch.randn(*shape, generator=g) for shape in [(N, 2), (2, D), (N, 3), (3, D)])
    dense = ((b1 @ a1 - b2 @ a2).double().norm() ** 2).item()
    assert lowrank_sq_norm_of_difference(b1, a1, b2, a2) == pytest.approx(dense, rel=1e-6)
    assert lowrank_sq_norm(b1, a1) == pytest.approx(((b1 @ a1).double().norm() ** 2).item(), rel=1e-6)


def make_stack(tasks: int, k_beta: int = 6, k_alpha: int = 5, p: int = 2, seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    beta, _ = torch.linalg.qr(torch.randn(N, k_beta, generator=g))
    alpha, _ = torch.linalg.qr(torch.randn(D, k_alpha, generator=g))
    eb = torch.cat([torch.randn(tasks, k_beta, p, generator=g), torch.zeros(1, k_beta, p)])
    ea = torch.cat([torch.randn(tasks, k_alpha, p, generator=g), torch.zeros(1, k_alpha, p)])
    return LayerBasis(beta, alpha, 0.5), eb, ea


def test_routed_delta_equals_the_dense_delta_per_row_and_zero_for_base() -> None:
    basis, eb, ea = make_stack(tasks=3)
    x = torch.randn(4, 7, D, generator=torch.Generator().manual_seed(5))
    rows = torch.tensor([2, -1, 0, 2])
    out = routed_delta(x, rows, basis.beta, basis.alpha, eb, ea, basis.scaling)
    assert out.shape == (4, 7, N)
    for i, t in enumerate(rows.tolist()):
        if t < 0:
            assert torch.equal(out[i], torch.zeros(7, N))
            continue
        dw = delta_weight(basis, TaskCoefficients(eb[t], ea[t]))
        assert torch.allclose(out[i], x[i] @ dw.T, atol=1e-4)


def test_mixed_batch_equals_each_row_alone() -> None:
    basis, eb, ea = make_stack(tasks=5)
    x = torch.randn(6, 3, D, generator=torch.Generator().manual_seed(6))
    rows = torch.tensor([4, 0, -1, 3, 3, 1])
    mixed = routed_delta(x, rows, basis.beta, basis.alpha, eb, ea, basis.scaling)
    for i in range(6):
        alone = routed_delta(x[i : i + 1], rows[i : i + 1], basis.beta, basis.alpha, eb, ea, basis.scaling)
        assert torch.allclose(mixed[i], alone[0], atol=1e-6, rtol=1e-5)


def test_routed_delta_rejects_mismatched_rows() -> None:
    basis, eb, ea = make_stack(tasks=1)
    with pytest.raises(ValueError, match="one entry per batch row"):
        routed_delta(torch.randn(3, 2, D), torch.tensor([0, 0]), basis.beta, basis.alpha, eb, ea, 1.0)


def test_bad_factors_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="all zero"):
        principal_basis(torch.zeros(5, 3), 0.6, cap=4)
    with pytest.raises(ValueError, match="NaN"):
        principal_basis(torch.tensor([[float("nan")], [1.0]]), 0.6, cap=4)
    with pytest.raises(ValueError, match="LoRA"):
        build_layer_basis([torch.randn(N, 2)], [torch.randn(3, D)], 1.0)
    basis, _, _ = build_layer_basis(*random_seeds(), 1.0)
    with pytest.raises(ValueError, match="does not fit"):
        project(basis, torch.randn(N + 1, 2), torch.randn(2, D))


def test_accounting_uses_each_layers_real_shape(tiny_model) -> None:
    model, _ = tiny_model
    shapes = layer_shapes(model, ["q_proj", "v_proj"])
    assert shapes["model.layers.0.self_attn.q_proj"] == (64, 64)
    assert shapes["model.layers.0.self_attn.v_proj"] == (32, 64)  # grouped-query attention: 2 KV heads
    assert lora_params(shapes, 8) == 2 * (8 * (64 + 64) + 8 * (32 + 64))
    g = torch.Generator().manual_seed(7)
    bases = {
        key: LayerBasis(
            torch.linalg.qr(torch.randn(n, 3, generator=g))[0],
            torch.linalg.qr(torch.randn(d, 2, generator=g))[0],
            1.0,
        )
        for key, (n, d) in shapes.items()
    }
    cost = task_cost(bases, pseudo_rank=1, lora_rank=8)
    assert cost.share_params == 4 * (3 + 2)
    assert cost.lora_params == lora_params(shapes, 8)
    assert cost.share_bytes == 4 * cost.share_params
    assert cost.basis_params == sum(n * 3 + d * 2 for n, d in shapes.values())
    assert cost.ratio == pytest.approx(cost.lora_params / 20)
