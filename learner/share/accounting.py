"""Honest parameter and byte counts: Share coefficients per task vs one rank-r LoRA per task.

Per task, Share stores Σ_layers (kβ + kα)·p numbers; a LoRA stores Σ_layers r·(n + d) with each layer's real
(out n, in d) — in Qwen2 q_proj is (hidden × hidden) but v_proj is (kv_heads·head_dim × hidden) because of
grouped-query attention, so one shape for all layers would be wrong. The shared bases are a one-off cost,
reported separately so nobody can hide it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import nn

from learner.share.math import LayerBasis


@dataclass(frozen=True)
class LayerCost:
    layer: str
    out_features: int
    in_features: int
    k_beta: int
    k_alpha: int
    share_params: int
    lora_params: int


@dataclass(frozen=True)
class TaskCost:
    """Per-task storage of Share vs a rank-``lora_rank`` LoRA on the same layers."""

    pseudo_rank: int
    lora_rank: int
    bytes_per_param: int
    share_params: int
    lora_params: int
    basis_params: int  # shared once by all tasks
    layers: tuple[LayerCost, ...]

    @property
    def share_bytes(self) -> int:
        return self.share_params * self.bytes_per_param

    @property
    def lora_bytes(self) -> int:
        return self.lora_params * self.bytes_per_param

    @property
    def basis_bytes(self) -> int:
        return self.basis_params * self.bytes_per_param

    @property
    def ratio(self) -> float:
        """How many times smaller a Share task is than a LoRA task."""
        return self.lora_params / self.share_params

    def break_even_tasks(self) -> float:
        """Tasks after which Share (bases + coefficients) costs less than one LoRA per task."""
        saved_per_task = self.lora_params - self.share_params
        return self.basis_params / saved_per_task if saved_per_task > 0 else float("inf")


def layer_shapes(model: nn.Module, target_modules: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(out n, in d) of every target linear layer of the real model, keyed by module name."""
    targets = set(target_modules)
    shapes: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets:
            base = getattr(module, "base", module)  # a ShareLinear reports its wrapped layer
            if isinstance(base, nn.Linear):
                shapes[name] = (base.out_features, base.in_features)
    return shapes


def lora_params(shapes: Mapping[str, tuple[int, int]], rank: int) -> int:
    """Σ r·(n + d) over the layers."""
    return sum(rank * (n + d) for n, d in shapes.values())


def task_cost(
    bases: Mapping[str, LayerBasis], *, pseudo_rank: int = 1, lora_rank: int = 8, bytes_per_param: int = 4
) -> TaskCost:
    """Share vs LoRA storage per task; shapes come from the bases, which have the layers' real shapes."""
    if pseudo_rank < 1 or lora_rank < 1 or bytes_per_param < 1:
        raise ValueError("pseudo_rank, lora_rank and bytes_per_param must be ≥ 1")
    if not bases:
        raise ValueError("no layers to count")
    layers = tuple(
        LayerCost(
            layer=key,
            out_features=b.out_features,
            in_features=b.in_features,
            k_beta=b.k_beta,
            k_alpha=b.k_alpha,
            share_params=(b.k_beta + b.k_alpha) * pseudo_rank,
            lora_params=lora_rank * (b.out_features + b.in_features),
        )
        for key, b in sorted(bases.items())
    )
    return TaskCost(
        pseudo_rank=pseudo_rank,
        lora_rank=lora_rank,
        bytes_per_param=bytes_per_param,
        share_params=sum(c.share_params for c in layers),
        lora_params=sum(c.lora_params for c in layers),
        basis_params=sum(b.out_features * b.k_beta + b.in_features * b.k_alpha for b in bases.values()),
        layers=layers,
    )
