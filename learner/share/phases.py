"""Share's three phases: build the bases from LoRA seeds (1), learn a new task's coefficients with the bases
frozen (2), and merge a new task into the bases, re-expressing every task in them (3).

Phase 2 trains through the very forward that serves requests: the model carries ShareLinear layers, and a
private snapshot whose only task is the one being learned is pinned with ``routing.routed``. Nothing else
is trainable (every model parameter is frozen during the step), so the installed bank — and with it every
other task and the base model — cannot change.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from learner import routing
from learner.share.bank import BankSnapshot, LayerState, ShareBank
from learner.share.checkpoint import checkpointed
from learner.share.examples import (
    EncodedExample,
    Example,
    answer_lm_loss,
    batch_stream,
    collate,
    collate_weights,
    encode_all,
    pad_token_id,
)
from learner.share.layer import share_layers
from learner.share.math import (
    LayerBasis,
    LoraSeed,
    SubspaceInfo,
    TaskCoefficients,
    build_layer_basis,
    lowrank_sq_norm,
    lowrank_sq_norm_of_difference,
    principal_basis,
    project,
    reconstruct,
)
from learner.share.prefix import FrozenPrefix
from learner.share.training import StepControl, frozen, optimise

log = logging.getLogger(__name__)

TRAIN_TASK = "__training__"


# ============================================================================================== Phase 1
@dataclass(frozen=True)
class Phase1Result:
    bases: dict[str, LayerBasis]
    coefficients: dict[str, dict[str, TaskCoefficients]]  # seed name → layer → analytic coefficients
    info: dict[str, tuple[SubspaceInfo, SubspaceInfo]]  # layer → (β side, α side)


def phase1(
    seeds: Sequence[LoraSeed], *, threshold: float = 0.6, cap: int = 32, include_mean: bool = False
) -> Phase1Result:
    """Bases from t ≥ 1 LoRA seeds, layer by layer, plus every seed's analytic coefficients.

    Seeds may differ in rank and scaling: each layer's scaling s is the first seed's, and the others' B are
    rescaled by s_i/s before stacking, so s·B·A is each seed's true delta.
    """
    if not seeds:
        raise ValueError("Phase 1 needs at least one LoRA seed")
    names = [s.name for s in seeds]
    if len(set(names)) != len(names):
        raise ValueError(f"seed names must be unique, got {names}")
    layers = set(seeds[0].layers)
    for seed in seeds[1:]:
        if set(seed.layers) != layers:
            raise ValueError(f"seed {seed.name!r} covers other layers than seed {seeds[0].name!r}")
    bases: dict[str, LayerBasis] = {}
    info: dict[str, tuple[SubspaceInfo, SubspaceInfo]] = {}
    coefficients: dict[str, dict[str, TaskCoefficients]] = {name: {} for name in names}
    for key in sorted(layers):
        scaling = seeds[0].layers[key].scaling
        bs = [s.layers[key].b * (s.layers[key].scaling / scaling) for s in seeds]
        as_ = [s.layers[key].a for s in seeds]
        basis, info_b, info_a = build_layer_basis(
            bs, as_, scaling, threshold=threshold, cap=cap, include_mean=include_mean
        )
        bases[key] = basis
        info[key] = (info_b, info_a)
        for seed, b, a in zip(seeds, bs, as_, strict=True):
            coefficients[seed.name][key] = project(basis, b.float(), a.float())
    return Phase1Result(bases=bases, coefficients=coefficients, info=info)


# ============================================================================================== Phase 2
@dataclass
class Phase2Config:
    pseudo_rank: int = 1
    phi: int = 0  # temporary basis vectors per side, ≤ k/4; such tasks must be merged before serving
    steps: int = 60
    learning_rate: float = 5e-3
    init_std: float = 1e-2
    batch_size: int = 4
    max_length: int = 1024
    seed: int = 0
    progress: bool = True
    copy_weight: float = 1.0  # edit-weighted loss: weight of answer lines copied from the prompt (1 = plain)
    # recompute decoder activations in backward (learner.share.checkpoint)
    gradient_checkpointing: bool = False


@dataclass
class Phase2Result:
    coeffs: dict[str, TaskCoefficients]  # rows: the layer's basis columns, then its φ columns
    phi_beta: dict[str, Tensor]  # layer → (n × φ) extra β directions (empty when φ = 0)
    phi_alpha: dict[str, Tensor]  # layer → (d × φ)
    losses: list[float] = field(default_factory=list)

    @property
    def phi(self) -> int:
        return next((int(t.shape[1]) for t in self.phi_beta.values()), 0)

    def extended_basis(self, key: str, basis: LayerBasis) -> LayerBasis:
        """The basis these coefficients live in: [β | φβ], [α | φα] (not orthonormal when φ > 0)."""
        if key not in self.phi_beta:
            return basis
        return LayerBasis(
            beta=torch.cat([basis.beta, self.phi_beta[key].to(basis.beta)], dim=1),
            alpha=torch.cat([basis.alpha, self.phi_alpha[key].to(basis.alpha)], dim=1),
            scaling=basis.scaling,
        )


def max_phi(bases: Mapping[str, LayerBasis]) -> int:
    """The largest φ every layer of ``bases`` allows (k/4 of the smallest side of the smallest layer)."""
    return min((min(b.k_beta, b.k_alpha) for b in bases.values()), default=0) // 4


class CoefficientTrainer:
    """Trainable Share coefficients (and optional φ directions) for one task on a model with ShareLinear
    layers. Used by Phase 2 (random init) and by the optional Phase 3 fine-tune (init from the merge)."""

    def __init__(
        self,
        model: nn.Module,
        bases: Mapping[str, LayerBasis],
        *,
        pseudo_rank: int = 1,
        phi: int = 0,
        init_std: float = 1e-2,
        seed: int = 0,
        init: Mapping[str, TaskCoefficients] | None = None,
    ) -> None:
        layers = share_layers(model)
        missing = set(bases) - {layer.key for layer in layers.values()}
        if missing:
            raise ValueError(f"the model has no ShareLinear for {sorted(missing)[:3]}: attach_share first")
        if pseudo_rank < 1:
            raise ValueError(f"pseudo-rank p must be ≥ 1, got {pseudo_rank}")
        if init_std <= 0:
            raise ValueError("init_std must be > 0: a zero start is a saddle with zero gradient")
        self.model = model
        first = next(iter(layers.values())).base.weight
        self.device, self.dtype = first.device, first.dtype
        self.bases = {key: b.to(self.device, self.dtype) for key, b in bases.items()}
        generator = torch.Generator().manual_seed(seed)
        self.eb: dict[str, nn.Parameter] = {}
        self.ea: dict[str, nn.Parameter] = {}
        self.phi_beta: dict[str, nn.Parameter] = {}
        self.phi_alpha: dict[str, nn.Parameter] = {}
        for key in sorted(self.bases):
            basis = self.bases[key]
            if phi:
                limit = min(basis.k_beta, basis.k_alpha) // 4
                if not 0 < phi <= limit:
                    raise ValueError(f"layer {key}: φ must be in [1, k/4 = {limit}], got {phi}")
                self.phi_beta[key] = self._param(_orthogonal_directions(basis.beta, phi, generator))
                self.phi_alpha[key] = self._param(_orthogonal_directions(basis.alpha, phi, generator))
            if init is not None:
                eb0, ea0 = init[key].eb.float().cpu(), init[key].ea.float().cpu()
                if eb0.shape[0] != basis.k_beta or ea0.shape[0] != basis.k_alpha:
                    raise ValueError(f"layer {key}: initial coefficients do not match the basis")
                if phi:
                    eb0 = torch.cat([eb0, init_std * torch.randn(phi, eb0.shape[1], generator=generator)])
                    ea0 = torch.cat([ea0, init_std * torch.randn(phi, ea0.shape[1], generator=generator)])
            else:
                # Both sides small and random: a zero start on either side kills the other's gradient.
                eb0 = init_std * torch.randn(basis.k_beta + phi, pseudo_rank, generator=generator)
                ea0 = init_std * torch.randn(basis.k_alpha + phi, pseudo_rank, generator=generator)
            self.eb[key] = self._param(eb0)
            self.ea[key] = self._param(ea0)

    def _param(self, value: Tensor) -> nn.Parameter:
        # float32 masters even for a bf16 model: Adam on bf16 coefficients stalls; the snapshot casts.
        return nn.Parameter(value.to(self.device, torch.float32))

    def parameters(self) -> list[nn.Parameter]:
        return [*self.eb.values(), *self.ea.values(), *self.phi_beta.values(), *self.phi_alpha.values()]

    def snapshot(self) -> BankSnapshot:
        """A one-task snapshot over the live parameters (gradients flow through it)."""
        layers: dict[str, LayerState] = {}
        for key, basis in self.bases.items():
            beta, alpha = basis.beta, basis.alpha
            if key in self.phi_beta:
                beta = torch.cat([beta, self.phi_beta[key].to(self.dtype)], dim=1)
                alpha = torch.cat([alpha, self.phi_alpha[key].to(self.dtype)], dim=1)
            eb, ea = self.eb[key].to(self.dtype), self.ea[key].to(self.dtype)
            layers[key] = LayerState(
                basis=LayerBasis(beta=beta, alpha=alpha, scaling=basis.scaling),
                eb=torch.stack([eb, torch.zeros_like(eb)]),
                ea=torch.stack([ea, torch.zeros_like(ea)]),
            )
        return BankSnapshot(
            layers=MappingProxyType(layers),
            task_index=MappingProxyType({TRAIN_TASK: 0}),
            versions=MappingProxyType({TRAIN_TASK: 0}),
            basis_id="training",
        )

    def loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Causal-LM loss of the batch (answer tokens only, the output layer on those positions only:
        ``answer_lm_loss``) with every row routed to the trained task."""
        rows = torch.zeros(batch["input_ids"].shape[0], dtype=torch.long, device=self.device)
        with frozen(self.model), routing.routed(rows, self.snapshot()):
            return answer_lm_loss(self.model, batch, batch.get("weights"))

    def weighted_batch(self, batch: Sequence[EncodedExample], pad: int) -> dict[str, Tensor]:
        out = collate(batch, pad, self.device)
        if any(e.weights is not None for e in batch):
            out["weights"] = collate_weights(batch, self.device)
        return out

    def prefix_loss(self, prefix: FrozenPrefix, batch: Sequence[EncodedExample]) -> Tensor:
        """The same loss from a frozen-prefix cache (one unpadded example at a time, all routed to row 0)."""
        row = torch.zeros(1, dtype=torch.long, device=self.device)
        snapshot = self.snapshot()
        with frozen(self.model):
            return prefix.loss(self.model, batch, lambda: routing.routed(row, snapshot))

    def fit(
        self,
        tokenizer: Any,
        examples: Sequence[Example],
        *,
        steps: int,
        lr: float,
        batch_size: int,
        max_length: int,
        seed: int,
        progress: bool,
        desc: str,
        prefix: FrozenPrefix | None = None,
        copy_weight: float = 1.0,
        control: StepControl | None = None,
        gradient_checkpointing: bool = False,
    ) -> list[float]:
        if prefix is not None and copy_weight != 1.0:
            raise ValueError("the edit-weighted loss is not supported with a frozen-prefix cache")
        encoded = encode_all(tokenizer, examples, max_length, copy_weight=copy_weight)
        pad = pad_token_id(tokenizer)
        if prefix is not None:
            prefix.require_suffix(list(self.bases))
        was_training = self.model.training
        self.model.eval()  # no dropout: the coefficients see exactly the serving forward
        try:
            with checkpointed(self.model, gradient_checkpointing):
                return optimise(
                    self.parameters(),
                    (lambda b: self.prefix_loss(prefix, b))
                    if prefix is not None
                    else (lambda b: self.loss(self.weighted_batch(b, pad))),
                    batch_stream(encoded, batch_size, seed),
                    steps=steps,
                    lr=lr,
                    desc=desc,
                    progress=progress,
                    control=control,
                )
        finally:
            self.model.train(was_training)

    def result(self, losses: list[float]) -> Phase2Result:
        def cpu(t: Tensor) -> Tensor:
            return t.detach().to("cpu", torch.float32).clone()

        return Phase2Result(
            coeffs={k: TaskCoefficients(cpu(self.eb[k]), cpu(self.ea[k])) for k in self.eb},
            phi_beta={k: cpu(v) for k, v in self.phi_beta.items()},
            phi_alpha={k: cpu(v) for k, v in self.phi_alpha.items()},
            losses=losses,
        )


def phase2(
    model: nn.Module,
    tokenizer: Any,
    bank: ShareBank,
    examples: Sequence[Example],
    config: Phase2Config | None = None,
    *,
    task: str = "new task",
    prefix: FrozenPrefix | None = None,
    init: Mapping[str, TaskCoefficients] | None = None,
    control: StepControl | None = None,
) -> Phase2Result:
    """Learn a new task's coefficients in ``bank``'s frozen bases. The bank itself is not touched: install
    the result with ``bank.set_task`` (φ = 0) or merge it first with ``phase3`` (φ > 0). ``init``: start
    from these coefficients (a warm start from the served version, same basis) instead of a random start."""
    cfg = config or Phase2Config()
    trainer = CoefficientTrainer(
        model,
        bank.bases,
        pseudo_rank=cfg.pseudo_rank,
        phi=cfg.phi,
        init_std=cfg.init_std,
        seed=cfg.seed,
        init=init,
    )
    losses = trainer.fit(
        tokenizer,
        examples,
        steps=cfg.steps,
        lr=cfg.learning_rate,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        seed=cfg.seed,
        progress=cfg.progress,
        desc=f"Share phase 2 {task}",
        prefix=prefix,
        copy_weight=cfg.copy_weight,
        control=control,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )
    log.info("Share phase 2 %s: %d steps, loss %.4f → %.4f", task, len(losses), losses[0], losses[-1])
    return trainer.result(losses)


# ============================================================================================== Phase 3
@dataclass(frozen=True)
class MergeReport:
    """Relative reconstruction error ‖ΔŴ − ΔW‖_F / ‖ΔW‖_F of every task after the merge (all layers
    together, and per layer), and the basis sizes before and after."""

    errors: dict[str, float]
    layer_errors: dict[str, dict[str, float]]
    k_before: dict[str, tuple[int, int]]
    k_after: dict[str, tuple[int, int]]

    def worst(self) -> float:
        return max(self.errors.values(), default=0.0)


@dataclass(frozen=True)
class MergeResult:
    bases: dict[str, LayerBasis]
    coefficients: dict[str, dict[str, TaskCoefficients]]
    report: MergeReport


def phase3(
    bases: Mapping[str, LayerBasis],
    tasks: Mapping[str, Mapping[str, TaskCoefficients]],
    new_tasks: Mapping[str, Phase2Result] | None = None,
    *,
    threshold: float = 1.0,
    cap: int = 32,
    include_mean: bool = False,
) -> MergeResult:
    """Reconstruct every task's rank-p LoRA (B̂ = β·εβ, Â = (α·εα)ᵀ; new tasks in [β|φ]), stack, SVD again,
    and re-express all of them analytically in the new bases.

    The default threshold 1.0 keeps the whole span of the tasks (up to ``cap`` directions per side): then
    nothing is forgotten until the cap forces compression, and the report shows exactly how much was lost
    when it does. Install with ``bank.replace_bases``.
    """
    new_tasks = dict(new_tasks or {})
    overlap = set(tasks) & set(new_tasks)
    if overlap:
        raise ValueError(f"tasks both installed and new: {sorted(overlap)}")
    if not tasks and not new_tasks:
        raise ValueError("Phase 3 needs at least one task to merge")
    factors: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
    for name, coeffs in tasks.items():
        factors[name] = {key: reconstruct(bases[key], _float(coeffs[key])) for key in bases}
    for name, result in new_tasks.items():
        factors[name] = {
            key: reconstruct(result.extended_basis(key, _float_basis(bases[key])), _float(result.coeffs[key]))
            for key in bases
        }
    new_bases: dict[str, LayerBasis] = {}
    out: dict[str, dict[str, TaskCoefficients]] = {name: {} for name in factors}
    layer_errors: dict[str, dict[str, float]] = {name: {} for name in factors}
    num: dict[str, float] = dict.fromkeys(factors, 0.0)
    den: dict[str, float] = dict.fromkeys(factors, 0.0)
    for key, basis in bases.items():
        bs = [factors[name][key][0] for name in factors]
        as_t = [factors[name][key][1].T for name in factors]
        beta, _ = principal_basis(torch.cat(bs, dim=1), threshold, cap, include_mean=include_mean)
        alpha, _ = principal_basis(torch.cat(as_t, dim=1), threshold, cap, include_mean=include_mean)
        merged = LayerBasis(beta=beta, alpha=alpha, scaling=basis.scaling)
        new_bases[key] = merged
        for name in factors:
            b, a = factors[name][key]
            merged_coeffs = project(merged, b, a)
            out[name][key] = merged_coeffs
            b2, a2 = reconstruct(merged, merged_coeffs)
            diff = lowrank_sq_norm_of_difference(b, a, b2, a2)
            ref = lowrank_sq_norm(b, a)
            layer_errors[name][key] = math.sqrt(diff / ref) if ref > 0 else math.sqrt(diff)
            num[name] += diff
            den[name] += ref
    errors = {n: math.sqrt(num[n] / den[n]) if den[n] > 0 else math.sqrt(num[n]) for n in factors}
    report = MergeReport(
        errors=errors,
        layer_errors=layer_errors,
        k_before={k: (b.k_beta, b.k_alpha) for k, b in bases.items()},
        k_after={k: (b.k_beta, b.k_alpha) for k, b in new_bases.items()},
    )
    log.info("Share phase 3: %d tasks, worst relative error %.3g", len(factors), report.worst())
    return MergeResult(bases=new_bases, coefficients=out, report=report)


def merge_bank(
    bank: ShareBank, new_tasks: Mapping[str, Phase2Result] | None = None, **kwargs: Any
) -> MergeResult:
    """Phase 3 over everything installed in ``bank`` plus ``new_tasks`` (nothing is installed yet)."""
    installed = {name: bank.coefficients(name) for name in bank.tasks()}
    return phase3(bank.bases, installed, new_tasks, **kwargs)


# ============================================================================================== helpers
def _orthogonal_directions(basis: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` random unit directions orthogonal to the basis: φ starts where the basis cannot reach."""
    q = basis.detach().to("cpu", torch.float64)
    raw = torch.randn(q.shape[0], count, generator=generator, dtype=torch.float64)
    raw = raw - q @ (q.T @ raw)
    raw = raw - q @ (q.T @ raw)
    directions, _ = torch.linalg.qr(raw)
    return directions.float()


def _float(c: TaskCoefficients) -> TaskCoefficients:
    return c.to("cpu", torch.float32)


def _float_basis(b: LayerBasis) -> LayerBasis:
    return b.to("cpu", torch.float32)


__all__ = [
    "CoefficientTrainer",
    "MergeReport",
    "MergeResult",
    "Phase1Result",
    "Phase2Config",
    "Phase2Result",
    "max_phi",
    "merge_bank",
    "phase1",
    "phase2",
    "phase3",
]
