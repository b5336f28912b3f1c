"""Activation checkpointing of the decoder layers for LoRA seed and Share Phase 2 training.

Backpropagating through a decoder stack keeps every layer's intermediates (attention inputs, the MLP's
4,864-wide activations, ...) until the backward pass; for the default model at batch 2 × 768 tokens that is
several GB. Under ``checkpointed(model)`` each decoder layer keeps only its input and recomputes its forward
when the backward pass reaches it (``torch.utils.checkpoint``, non-reentrant): one extra forward per step for
a fraction of the memory (docs/learning.md, "Night memory").

Hugging Face's own ``gradient_checkpointing_enable`` is not used: it acts only in ``model.train()`` mode, and
both training loops run the model in eval mode (no dropout, the serving forward). Recomputation happens
during ``backward()``, after the loss function returned, so two pieces of state the forward saw are put back
around it: the Share route (``learner.routing``: which coefficients each row reads — the route context is
exited before ``backward``) and the layer's ``requires_grad`` flags (``training.frozen`` restores them on
exit too; a recomputed forward that recorded different gradients would save different tensors).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from learner import routing


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers (a PEFT wrapper is looked through)."""
    unwrap = getattr(model, "get_base_model", None)
    base: Any = unwrap() if callable(unwrap) else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(base).__name__} has no decoder ``layers`` list to checkpoint")
    return layers


@contextmanager
def _as_recorded(layer: nn.Module, route: routing.RouteContext | None, flags: list[bool]) -> Iterator[None]:
    """The state the original forward ran in: its Share route and its parameters' requires_grad flags."""
    params = list(layer.parameters())
    now = [p.requires_grad for p in params]
    for p, flag in zip(params, flags, strict=True):
        p.requires_grad_(flag)
    try:
        if route is None:
            yield
        else:
            with routing.routed(route.row_tasks, route.snapshot):
                yield
    finally:
        for p, flag in zip(params, now, strict=True):
            p.requires_grad_(flag)


def _checkpointed_forward(layer: nn.Module, forward: Any) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():  # evaluation inside the block: nothing to save
            return forward(*args, **kwargs)
        route = routing.current()
        flags = [p.requires_grad for p in layer.parameters()]
        return checkpoint(
            forward,
            *args,
            use_reentrant=False,
            context_fn=lambda: (nullcontext(), _as_recorded(layer, route, flags)),
            **kwargs,
        )

    return run


@contextmanager
def checkpointed(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Every decoder layer of ``model`` recomputes its activations in the backward pass for the duration
    (``enabled`` False: a no-op, so callers can pass their config through). The model leaves as it came."""
    if not enabled:
        yield
        return
    layers = list(decoder_layers(model))
    for layer in layers:
        if "forward" in vars(layer):
            raise RuntimeError("a decoder layer's forward is already patched (nested checkpointed()?)")
    for layer in layers:
        layer.forward = _checkpointed_forward(layer, layer.forward)
    try:
        yield
    finally:
        for layer in layers:
            vars(layer).pop("forward", None)
