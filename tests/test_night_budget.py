"""The night's wall budget and progress (service/night_progress.py), with the tiny model, the real sandbox
and SQLite."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from service.db import migrate
from service.db.repositories import RunRepository
from service.db.session import Database
from service.jobs import RunContext
from service.night_progress import NightProgress
from tests.helpers import make_settings, succeeded_night


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_written_into_the_run_row_and_moves(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_model_dir)
    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)
    with db.session() as s:
        run_id = RunRepository(s).create("night", "test").id
    ctx = RunContext(run_id, "night", db, settings)
    clock = FakeClock()
    progress = NightProgress(ctx, budget_s=1000.0, every_s=60.0, every_items=4, clock=clock)

    def stored() -> dict[str, object]:
        with db.session() as s:
            run = RunRepository(s).get(run_id)
            assert run is not None
            return dict(run.summary["progress"])

    progress.stage("data", 10)
    assert stored() == {
        "stage": "data",
        "done": 0,
        "total": 10,
        "elapsed_s": 0.0,
        "stage_elapsed_s": 0.0,
        "stage_eta_s": None,
        "eta_s": None,
        "budget_left_s": 1000.0,
    }
    clock.now += 20
    progress.advance(2)  # neither 60 s nor 4 items since the last write: not written
    assert stored()["done"] == 0
    progress.advance(2)
    row = stored()
    # 4 of 10 in 20 s: 30 s more for this stage, then the later stages' shares (65% of the budget)
    assert (row["done"], row["stage_eta_s"], row["eta_s"], row["budget_left_s"]) == (4, 30.0, 680.0, 980.0)
    clock.now += 61
    progress.advance(1)  # 61 s since the last write
    assert stored()["done"] == 5
    assert not progress.over_budget()
    clock.now = 100 + 350  # the data stage ends at 35% of the budget
    assert progress.over_budget()
    progress.stopped("self-data sampling")
    with db.session() as s:
        run = RunRepository(s).get(run_id)
        assert run is not None
        assert (
            run.summary["budget"]["status"] == "stopped early (wall budget): data self-data sampling at 5/10"
        )
        assert run.summary["peak_rss_mb"] > 10
        assert len(re.findall(r"progress: data \d+/10", run.log)) == 3
    progress.stage("baseline", 3)
    assert not progress.over_budget()  # the baseline decides: it is never cut
    with pytest.raises(ValueError, match="unknown night stage"):
        progress.stage("lunch", 1)


def test_a_night_reports_progress_peak_rss_and_stays_within_a_generous_budget(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, tiny_model_dir)
    settings.night.progress_every_items = 1
    summary, log = succeeded_night(settings)
    assert summary["budget"] == {"wall_s": 4 * 3600.0, "status": "within budget", "stopped_early": []}
    assert summary["progress"]["stage"] == "done" and summary["peak_rss_mb"] > 50
    for stage in ("baseline", "train"):
        done = [int(d) for d in re.findall(rf"progress: {stage} (\d+)/\d+", log)]
        assert len(done) >= 2 and done == sorted(done) and done[-1] > 0, (stage, done)
    gate = re.findall(r"progress: gate (\d+)/(\d+)", log)
    assert gate and gate[-1][0] == gate[-1][1]  # the candidates' routed subsets, all run
    # tonight's verified examples went into the tasks' replay buffers (tests/test_replay.py: their use)
    assert set(summary["replay"]) == set(summary["candidates"])
    assert all((tmp_path / "replay" / f"{task}.jsonl").stat().st_size > 0 for task in summary["replay"])
    train_total = int(re.findall(r"progress: train \d+/(\d+)", log)[0])
    assert train_total == settings.night.seed_steps * len(summary["candidates"])


def test_a_tiny_budget_ends_sampling_and_training_early_and_says_so(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, tiny_model_dir)
    settings.night.self_samples = 2
    settings.night.seed_steps = 5
    settings.night.wall_budget_s = 0.001
    summary, log = succeeded_night(settings)
    budget = summary["budget"]
    assert budget["status"].startswith("stopped early (wall budget): data self-data sampling")
    stages = [e["stage"] for e in budget["stopped_early"]]
    assert stages[0] == "data" and stages.count("train") == len(summary["candidates"]) >= 1
    assert all("after 1 of 5 steps" in e["what"] for e in budget["stopped_early"] if e["stage"] == "train")
    self_data = summary["self_data"]
    assert self_data["budget_skipped"] == self_data["problems"] > 0 and self_data["samples"] == 0
    assert "wall budget: stage data ends early" in log
    assert summary["candidates"] and "gate" in summary  # the night still gated what it trained


class SteppedProgress(NightProgress):
    """Each training step takes one second of a fake clock (``advance`` is the night's per-step hook)."""

    def __init__(self, *args: Any, fake: FakeClock, **kwargs: Any) -> None:
        super().__init__(*args, clock=fake, **kwargs)
        self.fake = fake

    def advance(self, n: int = 1) -> None:
        if self.name == "train":
            self.fake.now += n
        super().advance(n)


class _Lock:
    def renew(self) -> None:
        pass


def _training_night(tmp_path: Path, tiny_model_dir: Path) -> tuple[Any, RunContext, SteppedProgress]:
    """A Night, a run context and a progress whose train stage has 9 fake seconds left (of its 80)."""
    from service.night import Night

    settings = make_settings(tmp_path, tiny_model_dir)
    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)
    with db.session() as s:
        run_id = RunRepository(s).create("night", "test").id
    ctx = RunContext(run_id, "night", db, settings)
    clock = FakeClock()
    progress = SteppedProgress(ctx, budget_s=100.0, every_s=1e9, every_items=10_000, fake=clock)
    clock.now = progress.started + 71.0  # the train stage ends at 80% of the budget: 9 s, one step each
    night = Night(settings, db, None, lambda: None)  # type: ignore[arg-type,return-value]
    return night, ctx, progress


def _steps_per_task(ctx: RunContext) -> dict[str, int]:
    out = {}
    for entry in ctx.summary["budget"]["stopped_early"]:
        found = re.fullmatch(r"training (\S+) after (\d+) of \d+ steps", entry["what"])
        assert found, entry
        out[found.group(1)] = int(found.group(2))
    return out


EXAMPLES = [
    ([{"role": "user", "content": 'Fix: let x: i32 = "1";'}], "let x: i32 = 1;"),
    ([{"role": "user", "content": "Fix: let v = w; v.push(1);"}], "let mut v = w; v.push(1);"),
]


def test_a_cut_train_stage_is_shared_equally_by_the_tasks(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The wall budget cuts training: each task gets an equal share of the stage's remaining time (9 s over
    3 tasks: 3 steps each), not the first task everything and the others one step."""
    from learner.runtime import ModelRuntime
    from learner.share.config import TrainConfig
    from learner.tiny import build_tiny_model

    night, ctx, progress = _training_night(tmp_path, tiny_model_dir)
    model, tokenizer = build_tiny_model(0)
    runtime = ModelRuntime(model, tokenizer, device="cpu", model_id="tiny")
    train = TrainConfig(lora_rank=2, seed_steps=20, batch_size=1, max_length=128)
    data = {task: EXAMPLES for task in ("a", "b", "c")}
    seeds = night._train_seeds(ctx, data, runtime, train, progress, _Lock())
    assert set(seeds) == set(data)
    steps = _steps_per_task(ctx)
    assert set(steps) == set(data) and max(steps.values()) - min(steps.values()) <= 1, steps
    assert sum(steps.values()) == 9


def _examples(n: int) -> list[tuple[list[dict[str, str]], str]]:
    return [
        ([{"role": "user", "content": f"Fix: let v{i} = w; v{i}.push({i});"}], f"let mut v{i} = w;")
        for i in range(n)
    ]


def test_seed_epochs_plan_each_tasks_seed_steps_from_its_examples(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """night.seed_epochs: each task's seed trains max(seed_steps, ceil(epochs · examples / batch)) steps
    (7 examples at batch 2: 4 steps; 2 examples: seed_steps' 3); the train stage's total is their sum and
    the summary and the log say what each task was planned."""
    from learner.runtime import ModelRuntime
    from learner.share.config import TrainConfig
    from learner.tiny import build_tiny_model

    night, ctx, progress = _training_night(tmp_path, tiny_model_dir)
    progress.fake.now = progress.started  # the whole budget ahead: nothing is cut
    model, tokenizer = build_tiny_model(0)
    runtime = ModelRuntime(model, tokenizer, device="cpu", model_id="tiny")
    train = TrainConfig(lora_rank=2, seed_steps=3, seed_epochs=1.0, batch_size=2, max_length=128)
    data = {"a": _examples(7), "b": _examples(2)}
    night._train_seeds(ctx, data, runtime, train, progress, _Lock())
    assert ctx.summary["seed_steps"] == {"a": 4, "b": 3}
    assert (progress.name, progress.total, progress.done) == ("train", 7, 7)  # every planned step ran
    assert not ctx.summary.get("budget", {}).get("stopped_early")  # nothing was cut
    with ctx.db.session() as s:
        run = RunRepository(s).get(ctx.run_id)
        assert run is not None
        assert "LoRA seed a: 7 examples, 4 steps" in run.log and "LoRA seed b: 2 examples, 3 steps" in run.log


def test_a_cut_seed_reports_its_planned_steps(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The wall budget still cuts seeds planned by seed_epochs (9 s over 3 tasks: 3 steps each), and the cut
    is reported against each task's planned steps (2 examples, 3 epochs at batch 1: 6)."""
    from learner.runtime import ModelRuntime
    from learner.share.config import TrainConfig
    from learner.tiny import build_tiny_model

    night, ctx, progress = _training_night(tmp_path, tiny_model_dir)
    model, tokenizer = build_tiny_model(0)
    runtime = ModelRuntime(model, tokenizer, device="cpu", model_id="tiny")
    train = TrainConfig(lora_rank=2, seed_steps=1, seed_epochs=3.0, batch_size=1, max_length=128)
    data = {task: EXAMPLES for task in ("a", "b", "c")}
    night._train_seeds(ctx, data, runtime, train, progress, _Lock())
    assert ctx.summary["seed_steps"] == dict.fromkeys(data, 6)
    whats = [e["what"] for e in ctx.summary["budget"]["stopped_early"]]
    assert whats == [f"training {task} after 3 of 6 steps" for task in data], whats


def test_phase2_gets_share_phi_capped_to_the_basis_and_the_fair_budget(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """share.phi reaches Phase 2 (capped at k/4 of the smallest layer basis: 4/4 = 1 here, not 3), and Phase 2
    shares a cut train stage equally too."""
    from types import SimpleNamespace

    from learner.runtime import ModelRuntime
    from learner.share.layer import attach_share
    from learner.share.phases import max_phi, phase1
    from learner.tiny import build_tiny_model
    from service.night import train_config
    from tests.helpers import random_seed

    night, ctx, progress = _training_night(tmp_path, tiny_model_dir)
    model, tokenizer = build_tiny_model(0)
    bases = phase1([random_seed(model, "s0", 0), random_seed(model, "s1", 1)], threshold=1.0, cap=4).bases
    assert max_phi(bases) == 1
    bank = attach_share(model, bases)
    shadow = SimpleNamespace(runtime=ModelRuntime(model, tokenizer, device="cpu", model_id="tiny"), bank=bank)
    night.settings.share.phi = 3
    night.settings.share.train_steps = 20
    train = train_config(night.settings)
    assert train.phi == 3 and train.phase2_config().phi == 3
    data = {task: EXAMPLES for task in ("a", "b", "c")}
    results = night._train_phase2(ctx, data, shadow, train, progress, _Lock())
    assert {task: r.phi for task, r in results.items()} == dict.fromkeys(data, 1)
    assert ctx.summary["phi"] == 1
    steps = _steps_per_task(ctx)
    assert set(steps) == set(data) and max(steps.values()) - min(steps.values()) <= 1, steps
