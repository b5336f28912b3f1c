"""The small optimisation loop LoRA seeds and Share coefficients both use (AdamW, clipping, tqdm, seeds)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

T = TypeVar("T")


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Every model parameter requires_grad=False for the duration, restored afterwards: only the tensors the
    caller trains may collect gradients (and autograd does not keep activations for the rest)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@dataclass(frozen=True)
class StepControl:
    """What a caller (the night) hooks into a training loop: ``on_step(step, loss)`` after each step, and
    ``should_stop()`` asked after each step — True ends the loop there (a wall budget), at least one step
    always runs."""

    on_step: Callable[[int, float], None] | None = None
    should_stop: Callable[[], bool] | None = None


def optimise(
    params: Sequence[Tensor],
    loss_fn: Callable[[T], Tensor],
    batches: Iterator[T],
    *,
    steps: int,
    lr: float,
    desc: str,
    progress: bool = True,
    max_grad_norm: float = 1.0,
    on_step: Callable[[int, float], None] | None = None,
    control: StepControl | None = None,
) -> list[float]:
    """Run ``steps`` AdamW steps on ``params`` (fewer when ``control.should_stop`` says so); returns the loss
    before each step run. Stops with a clear error on a non-finite loss instead of silently corrupting the
    parameters."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        loss = loss_fn(next(batches))
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{desc}: loss became {value} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}")
        if on_step is not None:
            on_step(step + 1, value)
        if control is not None and control.on_step is not None:
            control.on_step(step + 1, value)
        if control is not None and control.should_stop is not None and control.should_stop():
            break
    return losses
