"""One training configuration for the night and the experiments (issue 16, item 6).

``dreamfix night`` (service/night.py, from the settings via ``service.settings.train_config``) and
``dreamfix experiment`` (service/research, ``ExperimentConfig.train_config``) both build their LoRA seed
and Phase 2 configurations here and nowhere else, so a number an experiment publishes for the night's
recipe (``dreamfix experiment run --recipe night``) describes the code and hyperparameters that run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from learner.share.phases import Phase2Config
from learner.share.seeds import SeedConfig


@dataclass(frozen=True)
class TrainConfig:
    lora_rank: int = 8
    target_modules: tuple[str, ...] = field(default=("q_proj", "v_proj"))
    seed_steps: int = 60
    # > 0: a LoRA seed trains at least this many passes over its examples (``seed_steps_for``); 0 = off
    seed_epochs: float = 0.0
    seed_lr: float = 5e-3
    phase2_steps: int = 60
    phase2_lr: float = 5e-3
    batch_size: int = 4
    max_length: int = 1024
    seed: int = 0  # the LoRA seeds' and Phase 2's random seed
    pseudo_rank: int = 1
    threshold: float = 0.6  # Phase 1 explained-variance threshold
    k_cap: int = 32
    copy_weight: float = 1.0  # edit-weighted loss (1 = plain), for the LoRA seeds and Phase 2 alike
    phi: int = 0  # Phase 2's temporary basis directions per side (≤ k/4); φ > 0 tasks are merged (Phase 3)
    gradient_checkpointing: bool = False  # LoRA seeds and Phase 2: recompute activations in backward

    def __post_init__(self) -> None:
        positive = {
            "lora_rank": self.lora_rank,
            "seed_steps": self.seed_steps,
            "phase2_steps": self.phase2_steps,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "pseudo_rank": self.pseudo_rank,
            "k_cap": self.k_cap,
            "seed_lr": self.seed_lr,
            "phase2_lr": self.phase2_lr,
        }
        bad = [f"{k}={v}" for k, v in positive.items() if not v > 0]
        if bad:
            raise ValueError(f"training options must be positive: {', '.join(bad)}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 <= self.copy_weight <= 1.0:
            raise ValueError(f"copy_weight must be in [0, 1], got {self.copy_weight}")
        if self.phi < 0:
            raise ValueError(f"phi must be ≥ 0, got {self.phi}")
        if not (math.isfinite(self.seed_epochs) and self.seed_epochs >= 0):
            raise ValueError(f"seed_epochs must be a finite number ≥ 0, got {self.seed_epochs}")

    def seed_steps_for(self, n_examples: int) -> int:
        """The steps a LoRA seed on ``n_examples`` examples trains: ``seed_steps``, or with ``seed_epochs`` =
        e > 0 at least enough batches for e passes over the examples, ``max(seed_steps, ceil(e · n /
        batch_size))``. ``learner.share.examples.batch_stream`` deals shuffled epochs, so ceil(n / batch) steps
        see every example exactly once. The night and the experiments both take the number from here."""
        if n_examples < 0:
            raise ValueError(f"n_examples must be ≥ 0, got {n_examples}")
        if self.seed_epochs <= 0:
            return self.seed_steps
        # the small slack keeps float rounding from adding a step (0.7 · 10 / 1 = 7.000000000000001)
        epochs = math.ceil(self.seed_epochs * n_examples / self.batch_size - 1e-9)
        return max(self.seed_steps, epochs)

    def seed_config(
        self, *, seed: int | None = None, target_modules: Any = None, steps: int | None = None
    ) -> SeedConfig:
        """The LoRA seed recipe (alpha = 2·rank); ``target_modules`` overrides the bare module names (an
        experiment adapting chosen layers passes their full names)."""
        return SeedConfig(
            rank=self.lora_rank,
            alpha=2 * self.lora_rank,
            target_modules=tuple(target_modules if target_modules is not None else self.target_modules),
            steps=steps if steps is not None else self.seed_steps,
            learning_rate=self.seed_lr,
            batch_size=self.batch_size,
            max_length=self.max_length,
            seed=self.seed if seed is None else seed,
            progress=False,
            copy_weight=self.copy_weight,
            gradient_checkpointing=self.gradient_checkpointing,
        )

    def phase2_config(
        self, *, pseudo_rank: int | None = None, phi: int | None = None, steps: int | None = None
    ) -> Phase2Config:
        """The Phase 2 recipe; ``phi`` None takes ``self.phi`` (a caller that fits φ to a basis passes its
        own, e.g. ``min(phi, max_phi(bases))``)."""
        return Phase2Config(
            pseudo_rank=pseudo_rank or self.pseudo_rank,
            phi=self.phi if phi is None else phi,
            steps=steps if steps is not None else self.phase2_steps,
            learning_rate=self.phase2_lr,
            batch_size=self.batch_size,
            max_length=self.max_length,
            seed=self.seed,
            progress=False,
            copy_weight=self.copy_weight,
            gradient_checkpointing=self.gradient_checkpointing,
        )

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)
