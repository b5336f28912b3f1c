"""The night's wall budget and progress (service/night_progress.py), with the tiny model, the real sandbox
and SQLite."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from service.app_services import Services
from service.db import migrate
from service.db.repositories import RunRepository
from service.db.session import Database
from service.jobs import RunContext
from service.night_progress import NightProgress
from service.settings import Settings
from tests.helpers import make_settings


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


def _succeeded_night(settings: Settings) -> tuple[dict[str, Any], str]:
    """One night through the job runner on a small eval and gate pool; its run's summary and log."""
    settings.night.eval_limit = 2
    settings.night.gate_pool = 3
    services = Services.build(settings)
    run_id = services.jobs.run_now("night")
    with services.db.session() as s:
        run = RunRepository(s).get(run_id)
        assert run is not None and run.status == "succeeded", run and run.error
        summary, log = run.summary, run.log
    services.stop()
    return summary, log


def test_a_night_reports_progress_peak_rss_and_stays_within_a_generous_budget(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, tiny_model_dir)
    settings.night.progress_every_items = 1
    summary, log = _succeeded_night(settings)
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
    summary, log = _succeeded_night(settings)
    budget = summary["budget"]
    assert budget["status"].startswith("stopped early (wall budget): data self-data sampling")
    stages = [e["stage"] for e in budget["stopped_early"]]
    assert stages[0] == "data" and stages.count("train") == len(summary["candidates"]) >= 1
    assert all("after 1 of 5 steps" in e["what"] for e in budget["stopped_early"] if e["stage"] == "train")
    self_data = summary["self_data"]
    assert self_data["budget_skipped"] == self_data["problems"] > 0 and self_data["samples"] == 0
    assert "wall budget: stage data ends early" in log
    assert summary["candidates"] and "gate" in summary  # the night still gated what it trained
