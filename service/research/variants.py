"""Model configurations the experiments compare that are not Share rows: full LoRA deltas merged into W0.

A per-task LoRA, the mean adapter (UWSH baseline) and naive sequential fine-tuning all change W0 by a dense
ΔW = s·B·A per target layer. :func:`applied` adds such deltas to the live weights for the duration of a
``with`` block and restores the exact original weights afterwards (they are copied, not subtracted back, so
float rounding cannot drift the base model across many configurations).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from learner.share.layer import ShareLinear
from learner.share.math import LoraSeed


def lora_deltas(seed: LoraSeed) -> dict[str, Tensor]:
    """Per layer ΔW = s·B·A (out × in, float32)."""
    return {key: layer.scaling * (layer.b.float() @ layer.a.float()) for key, layer in seed.layers.items()}


def mean_deltas(seeds: Sequence[LoraSeed]) -> dict[str, Tensor]:
    """The mean adapter: ΔW̄ = (1/t)·Σ s_i·B_i·A_i per layer (UWSH's strong baseline)."""
    if not seeds:
        raise ValueError("the mean adapter needs at least one LoRA")
    keys = set(seeds[0].layers)
    if any(set(s.layers) != keys for s in seeds):
        raise ValueError("LoRAs cover different layers")
    total: dict[str, Tensor] = {}
    for seed in seeds:
        for key, delta in lora_deltas(seed).items():
            total[key] = total[key] + delta if key in total else delta
    return {key: value / len(seeds) for key, value in total.items()}


def _linear(model: nn.Module, key: str) -> nn.Linear:
    module = dict(model.named_modules()).get(key)
    if isinstance(module, ShareLinear):
        module = module.base
    if not isinstance(module, nn.Linear):
        raise ValueError(f"no nn.Linear named {key!r} in the model")
    return module


@contextmanager
def applied(model: nn.Module, deltas: Mapping[str, Tensor]) -> Iterator[None]:
    """W ← W0 + ΔW for every layer in ``deltas`` inside the block; the original weights come back after."""
    for key, delta in deltas.items():
        weight = _linear(model, key).weight
        if tuple(delta.shape) != tuple(weight.shape):
            raise ValueError(f"layer {key}: delta {tuple(delta.shape)} != {tuple(weight.shape)}")
    originals = snapshot_weights(model, list(deltas))
    try:
        add_in_place(model, deltas)
        yield
    finally:
        restore_weights(model, originals)


def add_in_place(model: nn.Module, deltas: Mapping[str, Tensor]) -> None:
    """W ← W + ΔW permanently (naive sequential fine-tuning merges each night's LoRA into the weights)."""
    with torch.no_grad():
        for key, delta in deltas.items():
            linear = _linear(model, key)
            linear.weight.add_(delta.to(linear.weight.device, linear.weight.dtype))


def snapshot_weights(model: nn.Module, keys: Sequence[str]) -> dict[str, Tensor]:
    """Copies of the target layers' weights (to restore the base model after in-place merges)."""
    return {key: _linear(model, key).weight.detach().clone() for key in keys}


def restore_weights(model: nn.Module, weights: Mapping[str, Tensor]) -> None:
    with torch.no_grad():
        for key, weight in weights.items():
            _linear(model, key).weight.copy_(weight)
