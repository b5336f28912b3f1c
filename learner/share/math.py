"""Share's linear algebra on plain tensors: subspaces from stacked LoRA factors, analytic coefficients,
reconstruction and the routed low-rank delta.

Kept free of models, banks and files so every identity the rest of the package relies on (orthonormal bases,
exact reconstruction inside the span, coefficients = least squares, mixed batch = row by row) can be tested
on random matrices in milliseconds.

Shapes follow DESIGN.md: a target layer has W0 of shape (n out, d in); a LoRA has B (n × r) and A (r × d);
a Share basis has β (n × kβ) and α (d × kα); a task has εβ (kβ × p) and εα (kα × p).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# Relative size under which a singular value / residual counts as numerical zero (float64 work precision).
_RANK_RTOL = 1e-10


@dataclass(frozen=True)
class LayerBasis:
    """The frozen shared subspace of one target layer: β (n × kβ) and α (d × kα) with orthonormal columns,
    and the LoRA scaling s that every task's delta is multiplied by."""

    beta: Tensor
    alpha: Tensor
    scaling: float

    def __post_init__(self) -> None:
        if self.beta.dim() != 2 or self.alpha.dim() != 2:
            raise ValueError(
                f"bases must be matrices, got beta {tuple(self.beta.shape)}, alpha {tuple(self.alpha.shape)}"
            )

    @property
    def out_features(self) -> int:
        return int(self.beta.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def k_beta(self) -> int:
        return int(self.beta.shape[1])

    @property
    def k_alpha(self) -> int:
        return int(self.alpha.shape[1])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LayerBasis:
        return LayerBasis(
            self.beta.to(device=device, dtype=dtype), self.alpha.to(device=device, dtype=dtype), self.scaling
        )


@dataclass(frozen=True)
class TaskCoefficients:
    """One task's coordinates in one layer's basis: εβ (kβ × p) and εα (kα × p)."""

    eb: Tensor
    ea: Tensor

    def __post_init__(self) -> None:
        if self.eb.dim() != 2 or self.ea.dim() != 2 or self.eb.shape[1] != self.ea.shape[1]:
            raise ValueError(
                f"coefficients must be (kβ × p) and (kα × p) with the same p, "
                f"got {tuple(self.eb.shape)} and {tuple(self.ea.shape)}"
            )

    @property
    def p(self) -> int:
        return int(self.eb.shape[1])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TaskCoefficients:
        return TaskCoefficients(
            self.eb.to(device=device, dtype=dtype), self.ea.to(device=device, dtype=dtype)
        )


@dataclass(frozen=True)
class SeedLayer:
    """One layer of a plain LoRA: ΔW = scaling·B·A with A (r × d) and B (n × r)."""

    a: Tensor
    b: Tensor
    scaling: float

    def __post_init__(self) -> None:
        if self.a.dim() != 2 or self.b.dim() != 2 or self.b.shape[1] != self.a.shape[0]:
            raise ValueError(f"not a LoRA pair: A {tuple(self.a.shape)}, B {tuple(self.b.shape)}")

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


@dataclass(frozen=True)
class LoraSeed:
    """A LoRA adapter as Phase 1 consumes it (trained here or imported from PEFT), keyed by layer name."""

    name: str
    layers: dict[str, SeedLayer]
    base_model_id: str | None = None

    @property
    def rank(self) -> int:
        return max(layer.rank for layer in self.layers.values())


@dataclass(frozen=True)
class SubspaceInfo:
    """How one side's basis was chosen, for logs and reports."""

    k: int  # columns in the final basis (including the mean direction when added)
    k_variance: int  # directions picked by the explained-variance rule before the cap
    explained: float  # share of the centred energy the kept principal directions explain
    mean_added: bool  # whether the (re-orthonormalised) mean direction is one of the columns
    numerical_rank: int  # rank of the centred stack


def choose_rank(singular_values: Tensor, threshold: float, cap: int) -> int:
    """Smallest k whose top-k singular values explain ≥ ``threshold`` of the energy (Σσ²), at most ``cap``
    and never more than the numerical rank. 0 when the matrix is (numerically) zero."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"variance threshold must be in (0, 1], got {threshold}")
    if cap < 0:
        raise ValueError(f"cap must be ≥ 0, got {cap}")
    s = singular_values.to(torch.float64)
    if s.numel() == 0 or float(s[0]) <= 0.0:
        return 0
    rank = int((s > s[0] * _RANK_RTOL).sum())
    energy = s[:rank] ** 2
    cumulative = torch.cumsum(energy, 0) / energy.sum()
    # A small tolerance so threshold 1.0 is reached despite rounding in the cumulative sum.
    k = int((cumulative < threshold - 1e-12).sum()) + 1
    return min(k, rank, cap)


def principal_basis(
    stacked: Tensor, threshold: float, cap: int, *, centre: bool = True, include_mean: bool = False
) -> tuple[Tensor, SubspaceInfo]:
    """Orthonormal basis (m × k) for the columns of ``stacked`` (m × c), as in Share's Phase 1.

    The columns are mean-centred and the top principal directions kept by explained variance. Centring finds
    where the adapters *differ*, but each column is mean + difference, so the centred directions alone need
    not contain the columns themselves. The mean direction (Gram–Schmidt against the kept directions, then
    normalised) is therefore appended when ``include_mean`` is set (the UWSH mean-adapter baseline) and
    always when ``threshold`` is 1.0, which callers use to mean "the whole span": then every column — and
    every adapter inside their span — reconstructs exactly (as long as the rank fits under ``cap``).
    The mean direction takes one of the ``cap`` slots. Work is in float64; the result keeps the input dtype.
    """
    if stacked.dim() != 2 or stacked.shape[1] == 0:
        raise ValueError(f"need a non-empty (m × c) stack, got shape {tuple(stacked.shape)}")
    if cap < 1:
        raise ValueError(f"cap must be ≥ 1, got {cap}")
    if not torch.isfinite(stacked).all():
        raise ValueError("stacked factors contain NaN or inf")
    x = stacked.to(torch.float64)
    mean = x.mean(dim=1, keepdim=True)
    centred = x - mean if centre else x
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    scale = float(x.abs().max())
    want_mean = centre and (include_mean or threshold >= 1.0)
    mean_usable = want_mean and float(mean.norm()) > _RANK_RTOL * max(scale, 1e-300)
    k_variance = choose_rank(s, threshold, cap=s.numel())
    numerical_rank = choose_rank(s, 1.0, cap=s.numel())
    k = min(k_variance, cap)
    basis = u[:, :k]
    mean_added = False
    if mean_usable:
        kept = u[:, : min(k, cap - 1)]
        residual = mean[:, 0]
        for _ in range(2):  # twice is enough for Gram–Schmidt to be orthogonal to working precision
            residual = residual - kept @ (kept.T @ residual)
        if float(residual.norm()) > 1e-8 * float(mean.norm()):
            basis = torch.cat([kept, (residual / residual.norm())[:, None]], dim=1)
            mean_added = True
    n_principal = basis.shape[1] - int(mean_added)
    energy = s**2
    explained = float(energy[:n_principal].sum() / energy.sum()) if float(energy.sum()) > 0 else 1.0
    if basis.shape[1] == 0:
        raise ValueError("the stacked factors span nothing (all zero): no basis can be built")
    info = SubspaceInfo(
        k=int(basis.shape[1]),
        k_variance=k_variance,
        explained=explained,
        mean_added=mean_added,
        numerical_rank=numerical_rank,
    )
    return basis.to(stacked.dtype), info


def build_layer_basis(
    bs: Sequence[Tensor],
    as_: Sequence[Tensor],
    scaling: float,
    *,
    threshold: float = 0.6,
    cap: int = 32,
    include_mean: bool = False,
) -> tuple[LayerBasis, SubspaceInfo, SubspaceInfo]:
    """Phase 1 for one layer: stack 𝔅 = [B1 … Bt] (n × Σr) and 𝒜 = [A1ᵀ … Atᵀ] (d × Σr), build both bases."""
    if not bs or len(bs) != len(as_):
        raise ValueError(f"need the same non-zero number of B and A factors, got {len(bs)} and {len(as_)}")
    for b, a in zip(bs, as_, strict=True):
        if b.dim() != 2 or a.dim() != 2 or b.shape[1] != a.shape[0]:
            raise ValueError(f"factor shapes do not form a LoRA: B {tuple(b.shape)}, A {tuple(a.shape)}")
        if b.shape[0] != bs[0].shape[0] or a.shape[1] != as_[0].shape[1]:
            raise ValueError("all adapters of one layer must have the same (out, in) shape")
    stacked_b = torch.cat([b.detach().float().cpu() for b in bs], dim=1)
    stacked_a = torch.cat([a.detach().float().cpu().T for a in as_], dim=1)
    beta, info_b = principal_basis(stacked_b, threshold, cap, include_mean=include_mean)
    alpha, info_a = principal_basis(stacked_a, threshold, cap, include_mean=include_mean)
    return LayerBasis(beta=beta, alpha=alpha, scaling=float(scaling)), info_b, info_a


def project(basis: LayerBasis, b: Tensor, a: Tensor) -> TaskCoefficients:
    """Analytic coefficients of a LoRA (B n×r, A r×d) in an orthonormal basis: εβ = βᵀB, εα = αᵀAᵀ.

    With orthonormal columns this is the least-squares solution of β·εβ ≈ B (and α·εα ≈ Aᵀ)."""
    if b.shape[0] != basis.out_features or a.shape[1] != basis.in_features or b.shape[1] != a.shape[0]:
        raise ValueError(
            f"LoRA B {tuple(b.shape)} / A {tuple(a.shape)} does not fit a basis for "
            f"({basis.out_features} × {basis.in_features})"
        )
    beta = basis.beta.to(b.dtype)
    alpha = basis.alpha.to(a.dtype)
    return TaskCoefficients(eb=beta.T @ b, ea=alpha.T @ a.T)


def reconstruct(basis: LayerBasis, coeffs: TaskCoefficients) -> tuple[Tensor, Tensor]:
    """The rank-p LoRA a task stands for, without the scaling: B̂ = β·εβ (n × p), Â = (α·εα)ᵀ (p × d)."""
    return basis.beta @ coeffs.eb, (basis.alpha @ coeffs.ea).T


def delta_weight(basis: LayerBasis, coeffs: TaskCoefficients) -> Tensor:
    """ΔW = s·B̂·Â (n × d): only for tests and small layers; the forward never forms it."""
    b, a = reconstruct(basis, coeffs)
    return basis.scaling * (b @ a)


def lowrank_sq_norm_of_difference(b1: Tensor, a1: Tensor, b2: Tensor, a2: Tensor) -> float:
    """‖B1·A1 − B2·A2‖²_F without forming n × d matrices: with G = [B1, −B2], H = [A1; A2] it is
    tr((GᵀG)(HHᵀ)), cheap for the full-size layers Phase 3 reports on."""
    g = torch.cat([b1, -b2], dim=1).to(torch.float64)
    h = torch.cat([a1, a2], dim=0).to(torch.float64)
    return max(float(torch.trace((g.T @ g) @ (h @ h.T))), 0.0)


def lowrank_sq_norm(b: Tensor, a: Tensor) -> float:
    """‖B·A‖²_F computed as tr((BᵀB)(AAᵀ))."""
    b64, a64 = b.to(torch.float64), a.to(torch.float64)
    return max(float(torch.trace((b64.T @ b64) @ (a64 @ a64.T))), 0.0)


def orthonormality_error(q: Tensor) -> float:
    """max |QᵀQ − I|: 0 for a perfectly orthonormal basis."""
    q64 = q.to(torch.float64)
    return float((q64.T @ q64 - torch.eye(q.shape[1], dtype=torch.float64)).abs().max())


def routed_low_rank(x: Tensor, row_tasks: Tensor, alpha: Tensor, eb: Tensor, ea: Tensor) -> Tensor:
    """εβ_t·(εα_tᵀ·(αᵀx)) for each batch row with its own task t: (batch, tokens, kβ).

    ``x`` is (batch, ..., d); ``row_tasks`` (batch,) indexes the stacked coefficients ``eb`` (S × kβ × p) and
    ``ea`` (S × kα × p). αᵀx is done once for the whole batch; per row only the tiny (k × p) products run,
    as two bmm's over gathered coefficient matrices — so a batch mixing 32 tasks costs about what a
    single-task batch costs. Index −1 selects the last stacked slot, which the bank keeps at zero: that is
    how base rows get an exact zero delta with no branch.
    """
    batch = x.shape[0]
    if row_tasks.dim() != 1 or row_tasks.shape[0] != batch:
        raise ValueError(
            f"row_tasks must have one entry per batch row ({batch}), got shape {tuple(row_tasks.shape)}"
        )
    rows = row_tasks.to(device=eb.device)
    u = x.reshape(batch, -1, x.shape[-1]) @ alpha  # (b, t, kα): shared by all tasks
    v = torch.bmm(u, ea[rows])  # (b, t, p)
    return torch.bmm(v, eb[rows].transpose(1, 2))  # (b, t, kβ)


def routed_delta(
    x: Tensor, row_tasks: Tensor, beta: Tensor, alpha: Tensor, eb: Tensor, ea: Tensor, scaling: float
) -> Tensor:
    """s·β·εβ_t·(εα_tᵀ·(αᵀx)) per row (see ``routed_low_rank``); the final β-product is shared by all rows."""
    w = routed_low_rank(x, row_tasks, alpha, eb, ea)
    return (scaling * (w @ beta.T)).reshape(*x.shape[:-1], beta.shape[0])
