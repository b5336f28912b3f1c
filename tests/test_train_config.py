"""One training configuration (learner.share.config.TrainConfig) for the night and the experiments."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from learner.share.config import TrainConfig
from service.night import train_config
from service.research.command import config_from
from service.research.experiment import ExperimentConfig
from service.settings import Settings


def _args(**values: object) -> argparse.Namespace:
    return argparse.Namespace(recipe="night", **values)


def test_the_experiments_night_recipe_is_the_nights_config() -> None:
    settings = Settings(
        share={
            "lora_rank": 4,
            "train_steps": 7,
            "learning_rate": 3e-3,
            "seed_learning_rate": 7e-4,
            "batch_size": 2,
            "seed": 5,
        },
        night={"seed_steps": 9, "max_length": 512, "copy_weight": 0.5},
    )
    night = train_config(settings)
    assert (night.lora_rank, night.phase2_steps, night.seed_steps, night.batch_size) == (4, 7, 9, 2)
    assert (night.seed, night.max_length, night.copy_weight, night.phase2_lr) == (5, 512, 0.5, 3e-3)
    assert night.seed_lr == night.seed_config().learning_rate == 7e-4
    config = config_from(_args(tasks=["borrows", "moves"]), settings)
    assert config.train_config() == night
    # the seed and Phase 2 configurations both commands hand to the trainers are the same objects' values
    assert config.train_config().seed_config(seed=config.seeds[0]) == night.seed_config()
    assert config.train_config().phase2_config() == night.phase2_config()
    assert night.phase2_config().copy_weight == 0.5 and night.seed_config().alpha == 8
    # activation checkpointing (on by default) reaches both trainers, and can be turned off
    assert night.seed_config().gradient_checkpointing and night.phase2_config().gradient_checkpointing
    off = train_config(Settings(night={"gradient_checkpointing": False}))
    assert not off.seed_config().gradient_checkpointing and not off.phase2_config().gradient_checkpointing
    # without the recipe the experiment keeps its own (cheaper) defaults: a different config
    plain = config_from(argparse.Namespace(tasks=["borrows", "moves"]), settings)
    assert plain.train_config() != night


def test_the_night_recipe_refuses_options_it_fixes() -> None:
    from service.cli import CliError

    with pytest.raises(CliError, match="--recipe night fixes lora_rank"):
        config_from(_args(tasks=["borrows", "moves"], lora_rank=2), Settings())


def test_bad_training_options_are_refused_in_one_place() -> None:
    with pytest.raises(ValueError, match="must be positive: batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="copy_weight must be in"):
        ExperimentConfig(copy_weight=2.0)
    with pytest.raises(ValueError, match="threshold must be in"):
        train_config(Settings(share={"variance_threshold": 0.0}))


def test_an_experiment_saved_before_a_new_option_resumes_at_its_default(tmp_path: Path) -> None:
    from service.research.experiment import Experiment

    saved = asdict(ExperimentConfig())
    del saved["copy_weight"]  # written by a version that had no such option
    (tmp_path / "config.json").write_text(json.dumps(saved))
    Experiment._check_config(_Root(tmp_path, ExperimentConfig()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="copy_weight"):
        Experiment._check_config(_Root(tmp_path, ExperimentConfig(copy_weight=0.5)))  # type: ignore[arg-type]


class _Root:
    def __init__(self, root: Path, config: ExperimentConfig) -> None:
        self.root, self.config = root, config


def test_share_phi_and_copy_weight_reach_both_trainers_configs() -> None:
    """share.phi goes to Phase 2 through TrainConfig (a caller fitting φ to a basis passes its own); the
    edit-weighted loss reaches the LoRA seeds as well as Phase 2."""
    night = train_config(Settings(share={"phi": 2}, night={"copy_weight": 0.25}))
    assert night.phi == 2 and night.phase2_config().phi == 2 and night.phase2_config(phi=1).phi == 1
    assert night.seed_config().copy_weight == 0.25 == night.phase2_config().copy_weight
    assert TrainConfig().phase2_config().phi == 0
    with pytest.raises(ValueError, match="phi must be"):
        TrainConfig(phi=-1)
