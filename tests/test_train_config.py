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


def test_seed_epochs_plan_enough_steps_to_cover_the_examples() -> None:
    """``TrainConfig.seed_steps_for``: with ``seed_epochs`` = e > 0, max(seed_steps, ceil(e · n / batch));
    0 (the default) keeps ``seed_steps`` whatever the buffer."""
    off = TrainConfig(seed_steps=60, batch_size=2)
    assert off.seed_epochs == 0.0 and off.seed_steps_for(232) == 60 == off.seed_steps_for(7)
    one = TrainConfig(seed_steps=2, seed_epochs=1.0, batch_size=2)
    assert one.seed_steps_for(7) == 4  # 3 full batches and the short last one
    assert one.seed_steps_for(8) == 4 and one.seed_steps_for(9) == 5
    assert one.seed_steps_for(3) == 2  # never fewer than seed_steps
    assert TrainConfig(seed_steps=60, seed_epochs=1.0, batch_size=2).seed_steps_for(232) == 116
    assert TrainConfig(seed_steps=1, seed_epochs=2.5, batch_size=4).seed_steps_for(10) == 7  # ceil(6.25)
    # no step added by float rounding (0.7 · 10 / 1 is 7.000000000000001 in floats)
    assert TrainConfig(seed_steps=1, seed_epochs=0.7, batch_size=1).seed_steps_for(10) == 7
    with pytest.raises(ValueError, match="seed_epochs must be"):
        TrainConfig(seed_epochs=-0.5)
    with pytest.raises(ValueError, match="seed_epochs must be"):
        TrainConfig(seed_epochs=float("inf"))


def test_seed_epochs_reach_the_nights_and_the_experiments_config() -> None:
    from pydantic import ValidationError

    from service.cli import CliError

    settings = Settings(night={"seed_steps": 3, "seed_epochs": 1.5}, share={"batch_size": 2})
    night = train_config(settings)
    assert (night.seed_steps, night.seed_epochs) == (3, 1.5) and night.seed_steps_for(10) == 8
    assert train_config(Settings()).seed_epochs == 0.0  # the daemon's default: off
    config = config_from(_args(tasks=["borrows", "moves"]), settings)
    assert config.seed_epochs == 1.5 and config.train_config() == night
    with pytest.raises(CliError, match="--recipe night fixes seed_epochs"):
        config_from(_args(tasks=["borrows", "moves"], seed_epochs=2.0), settings)
    plain = config_from(argparse.Namespace(tasks=["borrows", "moves"], seed_epochs=2.0), settings)
    assert plain.train_config().seed_epochs == 2.0
    with pytest.raises(ValidationError, match="seed_epochs"):
        Settings(night={"seed_epochs": -1.0})
    with pytest.raises(ValidationError, match="seed_epochs"):
        Settings(night={"seed_epochs": float("nan")})


def test_one_epoch_of_steps_sees_every_example_exactly_once() -> None:
    """learner.share.examples.batch_stream deals shuffled epochs: ceil(n / batch) steps hold each of the n
    examples once (7 examples at batch 2: 4 steps, the last a batch of 1), so ``seed_epochs`` = 1 trains on
    the whole buffer."""
    from learner.share.examples import EncodedExample, batch_stream

    encoded = [EncodedExample(input_ids=[i], labels=[i]) for i in range(7)]
    steps = TrainConfig(seed_steps=1, seed_epochs=1.0, batch_size=2).seed_steps_for(len(encoded))
    assert steps == 4
    stream = batch_stream(encoded, 2, seed=0)
    first = [next(stream) for _ in range(steps)]
    seen = sorted(e.input_ids[0] for batch in first for e in batch)
    assert seen == list(range(7)) and [len(b) for b in first] == [2, 2, 2, 1]
    # the next epoch's 4 steps hold each example once again
    second = sorted(e.input_ids[0] for _ in range(steps) for e in next(stream))
    assert second == list(range(7))
