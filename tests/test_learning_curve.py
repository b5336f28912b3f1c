"""The learning-curve benchmark's statistics, state, model resolution, preset and resumption
(tests/benchmarks/learning_curve.py). The benchmark itself runs real nights (minutes even with the tiny
model), so it is not run here: a stand-in night (the daemon's ``JobRunner`` and ``NightLock``, no model)
exercises the resumption; its smoke command is in docs/learning.md."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.learning_curve import (
    POOLED_PRESET,
    REPO,
    SHORT_PRESET,
    TINY_SETTINGS,
    Evaluator,
    State,
    compare,
    effective_settings,
    environment,
    flatten_env,
    group_rates,
    koans_limit,
    night_report,
    provisioned_model,
    run_night,
    transfer,
    wilson,
)


def test_wilson_interval_matches_the_textbook_values() -> None:
    assert wilson(0, 0) is None
    assert wilson(0, 4) == (0.0, 0.4899)  # z² / (n + z²) for 0 of n
    lo, hi = wilson(50, 100) or (0, 0)
    assert (lo, hi) == (0.4038, 0.5962)
    assert wilson(10, 10) == (0.7225, 1.0)


def test_compare_counts_discordant_pairs_and_the_one_sided_sign_test() -> None:
    base = {f"p{i}": i < 2 for i in range(10)}  # p0, p1 pass
    current = {f"p{i}": i < 7 and i != 1 for i in range(10)}  # p1 lost; p2..p6 won
    row = compare(base, current)
    assert (row["n"], row["pass"], row["base_pass"], row["wins"], row["losses"]) == (10, 6, 2, 5, 1)
    assert row["p_vs_base"] == pytest.approx(7 / 64)  # P[Bin(6, 1/2) ≥ 5]
    assert row["ci95"] == wilson(6, 10) and row["base_ci95"] == wilson(2, 10)
    assert compare(base, base)["p_vs_base"] == 1.0


def test_group_rates_bwt_and_forgetting_by_pass_rate() -> None:
    assert group_rates({"a": True, "b": False, "c": True}, {"a": "x", "b": "x", "c": None}) == {"x": 0.5}
    rows = [{"x": 0.2, "y": 0.1}, {"x": 0.6, "y": 0.3}, {"x": 0.4, "y": 0.3}]
    out = transfer(rows, {"x": 1, "y": 2})
    # x: from night 1: last − first = 0.4 − 0.2, peak 0.6 → forgot 0.2; y: from night 2: 0, 0
    assert out["groups"] == ["x", "y"]
    assert out["bwt"] == pytest.approx(0.1) and out["forgetting"] == pytest.approx(0.1)
    assert transfer(rows, {"x": 3})["bwt"] is None  # first promoted tonight: nothing to look back on
    assert transfer(rows[:1], {})["groups"] == []


def test_a_nights_json_line_carries_its_per_problem_gate_outcomes(tmp_path: Path) -> None:
    """The night's served and candidate outcomes on its gate pool (service.night.gate_outcomes) go into its
    JSON line, so a candidate can be paired after the fact; a night from before them says None."""
    state = State(tmp_path / "s.json")
    outcomes = {
        pool: {name: {f"{pool}-1": [False, "h"]} for name in ("one_shot", "served")}
        for pool in ("test_pool", "koans")
    }
    state.data["base"] = outcomes
    state.night(1).update({"run_id": 7, "eval": outcomes})
    gate_outcomes = {"served": {"gate-0000-arity": False}, "candidates": {"all": {"gate-0000-arity": True}}}
    summary = {"promoted": [], "gate": {"all": {"reason": "rejected"}}, "gate_outcomes": gate_outcomes}
    report = night_report(1, state, summary, {})
    assert report["gate_outcomes"] == gate_outcomes and report["run_id"] == 7
    json.dumps(report)  # the JSON line
    assert night_report(1, state, {"promoted": []}, {})["gate_outcomes"] is None


def test_state_resumes_and_refuses_other_options(tmp_path: Path) -> None:
    state = State(tmp_path / "s.json")
    state.check_options({"model": "tiny", "nights": 2})
    state.night(1)["run_id"] = 7
    state.save()
    again = State(tmp_path / "s.json")
    assert again.night(1)["run_id"] == 7 and again.night(2) == {}
    again.check_options({"model": "tiny", "nights": 5})  # more nights: the same benchmark, continued
    with pytest.raises(SystemExit, match="other options \\(model\\)"):
        again.check_options({"model": "other", "nights": 5})


def test_settings_reach_the_night_subprocess_as_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import Settings

    with pytest.raises(ValueError, match="DREAMFIX_NIGHT__EVAL_LIMIT: None cannot"):
        flatten_env("DREAMFIX_", {"night": {"eval_limit": None}})
    env = flatten_env("DREAMFIX_", {"night": {"tasks": ["ownership"], "seed_steps": 2, "eval_limit": 3}})
    assert env["DREAMFIX_NIGHT__TASKS"] == '["ownership"]' and env["DREAMFIX_NIGHT__SEED_STEPS"] == "2"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert (settings.night.tasks, settings.night.seed_steps, settings.night.eval_limit) == (
        ["ownership"],
        2,
        3,
    )


# ---------------------------------------------------------------------------------------------- the model
DEFAULT = "qwen2.5-coder-0.5b-instruct"


def fake_provisioned(cache: Path, name: str = DEFAULT) -> Path:
    """A model folder as ``dreamfix model pull`` leaves it, as far as resolution looks (no weights)."""
    from learner.provision import PROVENANCE_FILE

    folder = cache / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / PROVENANCE_FILE).write_text(json.dumps({"name": name}))
    return folder


def lc_args(data_dir: Path, **options: Any) -> argparse.Namespace:
    defaults = {"db": None, "model": None, "preset": "default", "test_pool": None, "koans_limit": None}
    return argparse.Namespace(data_dir=str(data_dir), **{**defaults, **options})


def test_the_default_model_is_found_provisioned_in_the_standard_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from learner.provision import DEFAULT_MODEL, resolve_model
    from service.settings import Settings

    assert Settings.model_fields["model"].default == DEFAULT_MODEL == DEFAULT
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data_dir = tmp_path / "lc"
    with pytest.raises(SystemExit, match=r"not provisioned in .*lc/models nor .*home/\.dreamfix/models"):
        provisioned_model(DEFAULT, data_dir, {})
    standard = fake_provisioned(tmp_path / "home" / ".dreamfix" / "models")
    # the documented `--data-dir ~/lc` without --model: <data-dir>/models has no model, ~/.dreamfix has
    env = environment(lc_args(data_dir), {})
    assert env["DREAMFIX_MODEL"] == str(standard) and env["DREAMFIX_DATA_DIR"] == str(data_dir)
    source = resolve_model(env["DREAMFIX_MODEL"], data_dir / "models")  # as the night's load resolves it
    assert source.local_dir == standard and source.name == DEFAULT  # the same model id as by name
    # the data dir the environment names comes before the standard one, <data-dir>/models before both
    named = fake_provisioned(tmp_path / "named" / "models")
    assert provisioned_model(DEFAULT, data_dir, {"DREAMFIX_DATA_DIR": str(tmp_path / "named")}) == str(named)
    own = fake_provisioned(data_dir / "models")
    assert provisioned_model(DEFAULT, data_dir, {"DREAMFIX_DATA_DIR": str(tmp_path / "named")}) == str(own)
    # DREAMFIX_MODEL or --model name the model; a relative folder is made absolute (the night runs in REPO)
    other = fake_provisioned(tmp_path / "folders", "other")
    monkeypatch.chdir(tmp_path)
    assert environment(lc_args(data_dir, model="folders/other"), {})["DREAMFIX_MODEL"] == str(other)
    assert environment(lc_args(data_dir), {"DREAMFIX_MODEL": str(other)})["DREAMFIX_MODEL"] == str(other)
    assert (
        provisioned_model("Qwen/Qwen2.5-Coder-0.5B-Instruct", data_dir, {})
        == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    )


# ---------------------------------------------------------------------------------------------- the preset
def test_the_short_preset_sets_real_settings_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import Settings

    data_dir = tmp_path / "lc"
    fake_provisioned(data_dir / "models")
    user = {"DREAMFIX_NIGHT__SEED_STEPS": "5"}
    env = environment(lc_args(data_dir, preset="short"), user)
    assert "DREAMFIX_NIGHT__SEED_STEPS" not in env  # set explicitly: the user's value reaches the night
    assert env["DREAMFIX_NIGHT__WALL_BUDGET_S"] == "2400" and env["DREAMFIX_SHARE__BATCH_SIZE"] == "2"
    assert (
        environment(lc_args(data_dir, preset="short", test_pool=30), user)["DREAMFIX_NIGHT__TEST_POOL"]
        == "30"
    )
    for key in [k for k in os.environ if k.upper().startswith("DREAMFIX_")]:
        monkeypatch.delenv(key)
    for key, value in {**user, **env}.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    # every preset value names a real field (pydantic ignores unknown ones): read back from the settings
    for section, values in SHORT_PRESET.items():
        for field, value in values.items():
            expected = 5 if field == "seed_steps" else value
            assert getattr(getattr(settings, section), field) == expected, f"{section}.{field}"
    effective = effective_settings(settings, "short", koans_limit(lc_args(data_dir, preset="short")))
    assert effective["preset"] == "short" and effective["koans_limit"] == 20
    assert effective["night"]["seed_steps"] == 5 and effective["share"]["train_steps"] == 12
    assert effective["model"] == str(data_dir / "models" / DEFAULT)
    assert koans_limit(lc_args(data_dir, preset="short", koans_limit=7)) == 7
    assert koans_limit(lc_args(data_dir)) is None
    assert environment(lc_args(data_dir), {}).keys() == {
        "DREAMFIX_DATA_DIR",
        "DREAMFIX_SCHEDULER__ENABLED",
        "DREAMFIX_MODEL",
    }


def test_the_pooled_preset_trains_one_adapter_at_the_default_nights_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.night import train_config
    from service.settings import NightSettings, Settings

    data_dir = tmp_path / "lc"
    fake_provisioned(data_dir / "models")
    env = environment(lc_args(data_dir, preset="pooled"), {})
    for key in [k for k in os.environ if k.upper().startswith("DREAMFIX_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    for section, values in POOLED_PRESET.items():
        for field, value in values.items():
            assert getattr(getattr(settings, section), field) == value, f"{section}.{field}"
    assert settings.router.grouping == "pooled" and settings.router.task_router().tasks == ["all"]
    assert settings.night.seed_steps == NightSettings().seed_steps  # the default night's size, at least ...
    # ... and enough steps to see every buffered example once (the daemon's default leaves that off)
    assert settings.night.seed_epochs == 1.0 and NightSettings().seed_epochs == 0.0
    train = train_config(settings)
    assert train.seed_steps_for(232) == 116  # run 3's buffer at batch 2: 60 steps saw 120 of its 232
    assert train.seed_steps_for(100) == 60  # a small buffer keeps the 60 steps
    assert settings.night.test_pool == SHORT_PRESET["night"]["test_pool"]
    assert koans_limit(lc_args(data_dir, preset="pooled")) == 20


def test_another_preset_is_refused_and_an_older_state_resumes_as_the_default(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"options": {"db": None, "model": None}, "nights": {}}))
    State(old).check_options({"db": None, "model": None, "preset": "default"})  # saved before --preset
    with pytest.raises(SystemExit, match="other options \\(preset\\)"):
        State(old).check_options({"db": None, "model": None, "preset": "short"})
    state = State(tmp_path / "s.json")
    state.check_options({"model": None, "preset": "short"})
    with pytest.raises(SystemExit, match="other options \\(preset\\)"):
        state.check_options({"model": None, "preset": "default"})


# ---------------------------------------------------------------------------------------------- resumption
#: A stand-in for ``python -m service night``: the CLI's start (``JobRunner.recover``, then ``run_now``) and
#: the night's lease (``NightLock``); "hang" stops inside the night, as a night killed mid-way would.
STAND_IN_NIGHT = """
import sys, time
from service.db import migrate
from service.db.repositories import NightLock
from service.db.session import Database
from service.jobs import JobRunner
from service.settings import Settings

settings = Settings()
migrate.upgrade(settings.db_url)
db = Database(settings.db_url)

def night(ctx):
    lock = NightLock(db)
    if not lock.acquire():
        raise RuntimeError("the night lease of a dead process was not taken over")
    if sys.argv[1] == "hang":
        print("inside the night", flush=True)
        time.sleep(600)
    lock.release()
    return {"night_seconds": 0.1, "peak_rss_mb": 1.0}

jobs = JobRunner(settings, db, {"night": night})
jobs.recover()
jobs.run_now("night", "cli")
"""


def stand_in(mode: str) -> list[str]:
    return [sys.executable, "-c", STAND_IN_NIGHT, mode]


def lc_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, str]]:
    from service.settings import Settings

    env = {"DREAMFIX_DATA_DIR": str(tmp_path), "DREAMFIX_SCHEDULER__ENABLED": "false"}
    monkeypatch.delenv("DREAMFIX_DATABASE_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(), env


def runs(settings: Any) -> list[tuple[int, str, str | None]]:
    from service.db.repositories import RunRepository
    from service.db.session import Database

    with Database(settings.db_url).session() as s:
        return [(r.id, r.status, r.error) for r in reversed(RunRepository(s).recent("night"))]


@pytest.mark.slow
def test_with_nothing_served_the_current_evaluation_is_the_base_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    from service.db import migrate
    from service.settings import Settings

    lc_settings(tmp_path, monkeypatch)
    for key, value in flatten_env("DREAMFIX_", TINY_SETTINGS).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DREAMFIX_MODEL", str(tiny_model_dir))
    settings = Settings()
    migrate.upgrade(settings.db_url)
    evaluator = Evaluator(settings, 2, 4)
    base: dict[str, Any] = {}
    rerun: dict[str, Any] = {}
    copied: dict[str, Any] = {}
    assert evaluator.run(base, lambda: None, base=True) is False
    assert sum(len(base[pool][name]) for pool in base for name in base[pool]) == 2 * (2 + 4)
    # no version served: decoding again gives the base's outcomes and first replies, which is why ...
    assert evaluator.run(rerun, lambda: None, base=False) is False
    assert rerun == base
    # ... the benchmark copies them instead of spending the evaluation again
    assert evaluator.run(copied, lambda: None, base=False, base_results=base) is True
    assert copied == base


@pytest.mark.slow
def test_a_night_killed_mid_way_is_swept_and_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.db.models import Lease
    from service.db.session import Database

    settings, env = lc_settings(tmp_path, monkeypatch)
    state = State(tmp_path / "state.json")
    state.night(1)["runs_before"] = 0  # as recorded before the night that is killed
    hung = subprocess.Popen(
        stand_in("hang"), env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert hung.stdout is not None and hung.stdout.readline().strip() == "inside the night"
    finally:
        os.kill(hung.pid, signal.SIGKILL)  # the session ends: no finally, no release
        hung.wait()
    assert runs(settings) == [(1, "running", None)]
    with Database(settings.db_url).session() as s:
        lease = s.get(Lease, "night")
        assert lease is not None and f":{hung.pid}" in lease.holder  # held by the dead process
    entry = run_night(state, 1, settings, env, command=stand_in("ok"), sleep=lambda _: pytest.fail("waited"))
    (first, second) = runs(settings)
    assert first[:2] == (1, "failed") and "abandoned" in (first[2] or "")
    assert second == (2, "succeeded", None) and entry["run_id"] == 2
    assert entry["process"]["wall_s"] > 0 and entry["process"]["peak_rss_mb"] > 10
    assert State(tmp_path / "state.json").night(1)["run_id"] == 2  # saved
    assert run_night(state, 1, settings, env, command=stand_in("must not run")) is entry


def test_a_night_still_running_is_waited_for_not_started_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.db import migrate
    from service.db.repositories import RunRepository
    from service.db.session import Database

    settings, env = lc_settings(tmp_path, monkeypatch)
    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)
    with db.session() as s:  # a night of a live process (this one): the benchmark stopped, its night did not
        run_id = RunRepository(s).create("night", "cli").id
        RunRepository(s).start(run_id)
    state = State(tmp_path / "state.json")
    state.night(1)["runs_before"] = 0
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            with db.session() as s:
                RunRepository(s).finish(run_id, "succeeded", {"night_seconds": 5.0})

    refuse = [sys.executable, "-c", "raise SystemExit('a second night was started')"]
    entry = run_night(state, 1, settings, env, command=refuse, poll_s=0.5, sleep=sleep)
    assert waits == [0.5, 0.5] and entry["run_id"] == run_id and "process" not in entry
