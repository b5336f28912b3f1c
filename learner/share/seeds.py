"""LoRA seed training with PEFT: the adapters Phase 1 builds the shared subspace from.

The model is borrowed, not copied (the real one is ~2 GB in float32): PEFT injects its LoRA layers, the loop
trains them, the factors are read out, and ``unload()`` puts the original modules back — the model leaves
exactly as it came (same modules, same weights, same requires_grad flags), even when training fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learner.share.artifacts import save_seed
from learner.share.checkpoint import checkpointed
from learner.share.examples import (
    Example,
    answer_lm_loss,
    batch_stream,
    collate,
    collate_weights,
    encode_all,
    pad_token_id,
)
from learner.share.layer import share_layers
from learner.share.math import LoraSeed, SeedLayer
from learner.share.prefix import FrozenPrefix
from learner.share.training import StepControl, model_device, optimise

log = logging.getLogger(__name__)

_PEFT_PREFIX = "base_model.model."
_ADAPTER = "default"


@dataclass
class SeedConfig:
    rank: int = 8
    alpha: int = 16
    target_modules: Sequence[str] = ("q_proj", "v_proj")
    dropout: float = 0.0
    steps: int = 60
    learning_rate: float = 2e-3
    batch_size: int = 4
    max_length: int = 1024
    seed: int = 0
    progress: bool = True
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0  # steps; 0 = only the final adapter is returned
    copy_weight: float = 1.0  # edit-weighted loss: weight of answer lines copied from the prompt (1 = plain)
    # recompute decoder activations in backward (learner.share.checkpoint)
    gradient_checkpointing: bool = False


@dataclass
class SeedResult:
    seed: LoraSeed
    losses: list[float]
    checkpoints: list[Path] = field(default_factory=list)


def train_lora_seed(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    name: str,
    config: SeedConfig | None = None,
    *,
    base_model_id: str | None = None,
    prefix: FrozenPrefix | None = None,
    control: StepControl | None = None,
) -> SeedResult:
    """Train a LoRA on ``examples`` (loss on answer tokens only) and return its per-layer A, B and scaling.

    Runs on whatever device the model is on. Seeded: same model, examples and config → same adapter.
    With ``prefix`` the frozen layers below the adapted ones run once per example (learner.share.prefix);
    every target module must then lie at or above its start layer.
    """
    from peft import LoraConfig, get_peft_model

    cfg = config or SeedConfig()
    if share_layers(model):
        raise ValueError(
            "the model carries ShareLinear layers: train LoRA seeds on the plain model (detach_share)"
        )
    if cfg.rank < 1:
        raise ValueError(f"LoRA rank must be ≥ 1, got {cfg.rank}")
    if prefix is not None and cfg.copy_weight != 1.0:
        raise ValueError("the edit-weighted loss is not supported with a frozen-prefix cache")
    encoded = encode_all(tokenizer, examples, cfg.max_length, copy_weight=cfg.copy_weight)
    device = model_device(model)
    pad = pad_token_id(tokenizer)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    checkpoints: list[Path] = []
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):  # LoRA init and dropout draw from the global stream
        torch.manual_seed(cfg.seed)
        lora = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            bias="none",
        )
        peft_model = get_peft_model(model, lora)
        try:
            peft_model.train(cfg.dropout > 0)  # no dropout → eval mode: deterministic, same as inference
            params = [p for p in peft_model.parameters() if p.requires_grad]
            if prefix is not None:
                prefix.require_suffix(_lora_module_names(peft_model))

            def loss_fn(batch: list[Any]) -> torch.Tensor:
                if prefix is not None:
                    return prefix.loss(peft_model, batch)
                weights = (
                    collate_weights(batch, device) if any(e.weights is not None for e in batch) else None
                )
                return answer_lm_loss(peft_model, collate(batch, pad, device), weights)

            def on_step(step: int, _loss: float) -> None:
                if (
                    cfg.checkpoint_dir is not None
                    and cfg.checkpoint_every
                    and step % cfg.checkpoint_every == 0
                ):
                    path = Path(cfg.checkpoint_dir) / f"{name}-step{step:05d}.safetensors"
                    checkpoints.append(save_seed(path, _extract(peft_model, name, base_model_id)))

            with checkpointed(peft_model, cfg.gradient_checkpointing):
                losses = optimise(
                    params,
                    loss_fn,
                    batch_stream(encoded, cfg.batch_size, cfg.seed),
                    steps=cfg.steps,
                    lr=cfg.learning_rate,
                    desc=f"LoRA seed {name}",
                    progress=cfg.progress,
                    on_step=on_step,
                    control=control,
                )
            seed = _extract(peft_model, name, base_model_id)
        finally:
            peft_model.unload()
            for p, flag in flags:
                p.requires_grad_(flag)
            model.train(was_training)
    log.info("LoRA seed %s: %d steps, loss %.4f → %.4f", name, len(losses), losses[0], losses[-1])
    return SeedResult(seed=seed, losses=losses, checkpoints=checkpoints)


def _lora_layers(peft_model: nn.Module) -> list[tuple[str, Any]]:
    """PEFT's LoRA layers carrying this module's adapter, with their module names."""
    from peft.tuners.lora import LoraLayer

    return [
        (name, module)
        for name, module in peft_model.named_modules()
        if isinstance(module, LoraLayer) and _ADAPTER in module.lora_A
    ]


def _lora_module_names(peft_model: nn.Module) -> list[str]:
    return [name for name, _ in _lora_layers(peft_model)]


def _extract(peft_model: nn.Module, name: str, base_model_id: str | None) -> LoraSeed:
    """Read the trained factors out of PEFT's LoRA layers, keyed by the base model's module names."""
    layers: dict[str, SeedLayer] = {}
    for module_name, lora in _lora_layers(peft_model):
        layers[module_name.removeprefix(_PEFT_PREFIX)] = SeedLayer(
            a=lora.lora_A[_ADAPTER].weight.detach().to("cpu", torch.float32).clone(),
            b=lora.lora_B[_ADAPTER].weight.detach().to("cpu", torch.float32).clone(),
            scaling=float(lora.scaling[_ADAPTER]),
        )
    if not layers:
        raise RuntimeError("PEFT injected no LoRA layers: check target_modules")
    return LoraSeed(name=name, layers=layers, base_model_id=base_model_id)
