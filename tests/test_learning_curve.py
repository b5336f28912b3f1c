"""The learning-curve benchmark's statistics and state (tests/benchmarks/learning_curve.py). The benchmark
itself runs real nights (minutes even with the tiny model), so it is not run here; its smoke command is in
docs/learning.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.learning_curve import State, compare, flatten_env, group_rates, transfer, wilson


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
    env = flatten_env("DREAMFIX_", {"night": {"tasks": ["moves"], "seed_steps": 2, "eval_limit": 3}})
    assert env["DREAMFIX_NIGHT__TASKS"] == '["moves"]' and env["DREAMFIX_NIGHT__SEED_STEPS"] == "2"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert (settings.night.tasks, settings.night.seed_steps, settings.night.eval_limit) == (["moves"], 2, 3)
