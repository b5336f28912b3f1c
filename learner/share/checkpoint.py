"""Activation checkpointing of the decoder layers for LoRA seed and Share Phase 2 training.

Backpropagating through a decoder stack keeps every layer's intermediates (attention inputs, the MLP's
4,864-wide activations, ...) until the backward pass; for the default model at batch 2 × 768 tokens that is
several GB. Under ``checkpointed(model)`` each decoder layer keeps only its input and recomputes its forward
when the backward pass reaches it (``torch.utils.checkpoint``, non-reentrant): one extra forward per step for
a fraction of the memory (docs/learning.md, "Night memory"). The output layer's float32 logits over the
151,936-token vocabulary are the other big tensor: under ``checkpointed`` the answer-only loss
(``examples.answer_lm_loss``) runs it in recomputed chunks of ``HEAD_CHUNK_TOKENS`` answer tokens.

Hugging Face's own ``gradient_checkpointing_enable`` is not used: it acts only in ``model.train()`` mode, and
both training loops run the model in eval mode (no dropout, the serving forward). Recomputation happens
during ``backward()``, after the loss function returned, so two pieces of state the forward saw are put back
around it: the Share route (``learner.routing``: which coefficients each row reads — the route context is
exited before ``backward``) and the layer's ``requires_grad`` flags (``training.frozen`` restores them on
exit too; a recomputed forward that recorded different gradients would save different tensors).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from learner import routing

#: Answer tokens per output-layer chunk under ``checkpointed``: (128 × 151,936) float32 logits = 78 MB, where
#: the whole answer of a batch 2 × 768 step (~700 tokens) keeps ~1.3 GB of logits, softmax and gradient.
HEAD_CHUNK_TOKENS = 128

_head_chunk: ContextVar[int | None] = ContextVar("dreamfix_head_chunk", default=None)


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


def chunked_head_nll(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, nll: Callable[..., torch.Tensor]
) -> torch.Tensor | None:
    """Under ``checkpointed`` (and with gradients on): ``nll(head, hidden, targets)`` over chunks of
    ``HEAD_CHUNK_TOKENS`` rows, each recomputed in backward, so only one chunk's logits exist at a time.
    None elsewhere: the caller computes the whole thing at once."""
    chunk = _head_chunk.get()
    if chunk is None or not torch.is_grad_enabled() or hidden.shape[0] <= chunk:
        return None
    flags = [p.requires_grad for p in head.parameters()]
    parts = [
        checkpoint(
            nll,
            head,
            hidden[start : start + chunk],
            targets[start : start + chunk],
            use_reentrant=False,
            context_fn=lambda: (nullcontext(), _as_recorded(head, None, flags)),
        )
        for start in range(0, hidden.shape[0], chunk)
    ]
    return torch.cat(parts)


@contextmanager
def checkpointed(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Every decoder layer of ``model`` recomputes its activations in the backward pass for the duration,
    and the output layer runs in recomputed chunks (``chunked_head_nll``); ``enabled`` False: a no-op, so
    callers can pass their config through. The model leaves as it came."""
    if not enabled:
        yield
        return
    layers = list(decoder_layers(model))
    for layer in layers:
        if "forward" in vars(layer):
            raise RuntimeError("a decoder layer's forward is already patched (nested checkpointed()?)")
    for layer in layers:
        layer.forward = _checkpointed_forward(layer, layer.forward)
    token = _head_chunk.set(HEAD_CHUNK_TOKENS)
    try:
        yield
    finally:
        _head_chunk.reset(token)
        for layer in layers:
            vars(layer).pop("forward", None)
