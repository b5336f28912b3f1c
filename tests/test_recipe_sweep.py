"""The recipe sweep's dev set stays apart from everything that selects or reports, and its recipes map onto
the night's settings (tests/benchmarks/recipe_sweep.py; the sweep itself trains the real model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.koans import eval_koans, load_koans
from agent.pools import build_pools, example_hashes, source_hash
from agent.sandbox import Sandbox, SandboxConfig
from learner.replay import ReplayBuffer
from router.tasks import POOLED_TASK
from service.night import generated_draws, train_config
from tests.benchmarks.learning_curve import SHORT_PRESET
from tests.benchmarks.recipe_sweep import (
    buffered_examples,
    dev_problems,
    night_sizes,
    parse_recipe,
    settings_for,
)


def test_recipes_map_onto_the_nights_training_config(tmp_path: Path) -> None:
    recipe = parse_recipe("lr=2e-4,steps=24,copy=0.3,examples=64,rank=4,thr=0.9")
    assert recipe == {"lr": 2e-4, "steps": 24, "copy": 0.3, "examples": 64, "rank": 4, "thr": 0.9}
    settings = settings_for(recipe, tmp_path, "some-model", tmp_path / "cache")
    train = train_config(settings)
    assert (train.seed_lr, train.seed_steps, train.copy_weight, train.lora_rank) == (2e-4, 24, 0.3, 4)
    assert settings.night.max_examples_per_task == 64 and train.threshold == 0.9
    assert train.phase2_lr == settings.share.learning_rate  # the sweep's lr is the seeds' only
    # the rest is the learning curve's short preset
    assert settings.night.max_length == SHORT_PRESET["night"]["max_length"]
    assert settings.share.batch_size == SHORT_PRESET["share"]["batch_size"]
    assert not settings.scheduler.enabled
    with pytest.raises(SystemExit, match="unknown recipe key"):
        parse_recipe("learning_rate=1e-3")


def test_dev_problems_are_verified_and_disjoint_from_pools_koans_and_night_draws(tmp_path: Path) -> None:
    sandbox = Sandbox(SandboxConfig(cache_dir=tmp_path / "cache"))
    problems = dev_problems(12, sandbox, nights=2)
    assert len(problems) == 12 and len({p.id for p in problems}) == 12
    # spread over the families, not the first families of the draw
    assert len({p.family for p in problems}) == 12
    sizes = night_sizes()
    # the short and pooled presets' pools and the daemon's defaults (200 + 200, 200 draws a night)
    assert {(s["gate_pool"], s["test_pool"], s["generated_examples"]) for s in sizes} >= {
        (60, 60, 76),
        (120, 60, 76),
        (200, 200, 200),
    }
    real = [build_pools(s["gate_pool"], s["test_pool"], eval_koans()) for s in sizes]
    taken: set[str] = set()
    for koan in load_koans():
        taken |= example_hashes(koan)
    for run_id in (1, 2):
        for size in sizes:
            for draw in generated_draws(size["generated_examples"], seed=run_id):
                taken |= example_hashes(draw)
    for problem in problems:
        assert not any(pools.blocks(problem.source) for pools in real)
        assert source_hash(problem.source) not in taken
        # verified: the broken program fails to compile or its tests fail
        result = sandbox.check(problem.source, problem.mode, problem.edition)
        assert not result.ok


def test_the_pooled_task_trains_on_every_groups_buffer(tmp_path: Path) -> None:
    buffer = ReplayBuffer(tmp_path / "replay", cap=100)
    for group, n in (("ownership", 3), ("types", 2)):
        buffer.add(
            group, [([{"role": "user", "content": f"{group} {i}"}], f"fix {i}") for i in range(n)], night=1
        )
    pooled = buffered_examples(tmp_path / "replay", POOLED_TASK)
    assert sorted(m[0]["content"] for m, _ in pooled) == [
        "ownership 0",
        "ownership 1",
        "ownership 2",
        "types 0",
        "types 1",
    ]
    assert [m[0]["content"] for m, _ in buffered_examples(tmp_path / "replay", "types")] == [
        "types 0",
        "types 1",
    ]
    settings = settings_for({}, tmp_path, "some-model", tmp_path / "cache", pooled=True)
    assert settings.router.grouping == "pooled"
    assert settings.router.task_router().tasks == [POOLED_TASK]
