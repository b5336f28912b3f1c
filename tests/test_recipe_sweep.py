"""The recipe sweep's dev set stays apart from everything that selects or reports, and its recipes map onto
the night's settings (tests/benchmarks/recipe_sweep.py; the sweep itself trains the real model)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

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
    candidate_versions,
    comparisons,
    dev_problems,
    gate_pool_size,
    load_state,
    night_sizes,
    parse_args,
    parse_recipe,
    parse_version,
    settings_for,
    table,
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
    # epochs: night.seed_epochs, the seed's steps then cover its examples (TrainConfig.seed_steps_for)
    epochs = train_config(settings_for(parse_recipe("epochs=1,steps=10"), tmp_path, "m", tmp_path / "c"))
    assert epochs.seed_epochs == 1.0 and epochs.batch_size == 2
    assert epochs.seed_steps_for(16) == 10 and epochs.seed_steps_for(232) == 116


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


def test_the_sweep_options_and_what_they_refuse(tmp_path: Path) -> None:
    night = ["--night-dir", str(tmp_path), "--group", "all", "--out", str(tmp_path / "o.json")]
    args = parse_args([*night, "--recipes", "lr=1e-3"])
    assert (args.pool, args.candidate, args.recipes, args.night_run, args.gate_pool) == (
        "dev",
        None,
        ["lr=1e-3"],
        None,
        None,
    )
    # --candidate alone: the night's candidate for the group; a row of its own, no recipe needed
    args = parse_args([*night, "--candidate", "--pool", "gate", "--night-run", "3"])
    assert (args.candidate, args.recipes, args.pool, args.night_run) == ([], [], "gate", 3)
    args = parse_args([*night, "--candidate", "all@v1", "all@v2", "--recipes", "lr=1e-3", "steps=24"])
    assert args.candidate == ["all@v1", "all@v2"] and args.recipes == ["lr=1e-3", "steps=24"]
    assert parse_version("all@v12") == ("all", 12) and parse_version("ownership@v3") == ("ownership", 3)
    for bad in ("all", "all@1", "@v1", "all@vx"):
        with pytest.raises(SystemExit, match="TASK@vN"):
            parse_version(bad)
    for refused in (
        [],  # nothing to evaluate
        ["--recipes", "lr=1e-3", "--pool", "test"],
        ["--candidate", "types@v1"],  # another group's adapter
        ["--candidate", "--gate-pool", "0"],
    ):
        with pytest.raises(SystemExit):
            parse_args([*night, *refused])
    with pytest.raises(SystemExit, match="unknown recipe key"):  # before any model loads
        parse_args([*night, "--recipes", "lr=1e-3", "rate=2"])


def test_the_candidate_and_the_gate_pool_size_come_from_the_nights_summary() -> None:
    summary = {"candidates": {"all": "all@v3"}, "gate_pool": {"size": 120, "drawn": 120, "verified": 118}}
    assert candidate_versions([], "all", summary) == [("all", 3)]
    assert candidate_versions(["all@v1"], "all", summary) == [("all", 1)]
    with pytest.raises(SystemExit, match="no candidate for 'types' \\(its candidates: all\\)"):
        candidate_versions([], "types", summary)
    assert gate_pool_size(None, summary) == 120 and gate_pool_size(60, summary) == 60
    with pytest.raises(SystemExit, match="--gate-pool"):
        gate_pool_size(None, {"gate_pool": {"drawn": 120, "verified": 118}})  # a night from before "size"


def test_a_results_file_resumes_only_on_its_own_pool_and_night(tmp_path: Path) -> None:
    old = tmp_path / "old.json"  # written before --pool: a dev-set file
    old.write_text(json.dumps({"problems": [], "base": {}, "rows": {"lr=1e-3": {}}}))
    assert set(load_state(old, "dev", None)["rows"]) == {"lr=1e-3"}
    with pytest.raises(SystemExit, match="on the dev pool, not gate"):
        load_state(old, "gate", 4)
    state = load_state(tmp_path / "new.json", "gate", 4)
    assert (state["pool"], state["night_run"], state["rows"]) == ("gate", 4, {})
    (tmp_path / "new.json").write_text(json.dumps({**state, "problems": []}))
    assert load_state(tmp_path / "new.json", "gate", 4)["night_run"] == 4
    with pytest.raises(SystemExit, match="night run 4, not 5"):
        load_state(tmp_path / "new.json", "gate", 5)


def test_rows_pair_with_the_base_and_with_the_nights_served_model_as_the_gate_does() -> None:
    """A row ran the group's problems (g1..g3); elsewhere (o1, o2) it is the base model against the base
    and, like the night's one-shot gate, the served model against served."""
    base = {"g1": False, "g2": True, "g3": False, "o1": False, "o2": True}
    served = {"g1": False, "g2": False, "g3": True, "o1": True, "o2": True}
    state: dict[str, Any] = {
        "base": base,
        "served": served,
        "rows": {
            "lr=1e-3": {
                "outcomes": {"g1": True, "g2": True, "g3": True},
                "steps": 60,
                "loss_first_last": [1, 0.5],
            },
            "candidate:all@v1": {"outcomes": {"g1": True, "g2": False, "g3": False}, "loss_first_last": None},
        },
    }
    lines = {line["row"]: line for line in comparisons(state)}
    assert list(lines) == ["base", "lr=1e-3", "candidate:all@v1"]
    assert lines["base"]["vs_base"] == {"n": 5, "passed": 2, "reference": 2, "wins": 0, "losses": 0, "p": 1.0}
    # the base against served, on all five problems: g2 won, g3 and o1 lost
    assert (lines["base"]["vs_served"]["wins"], lines["base"]["vs_served"]["losses"]) == (1, 2)
    recipe = lines["lr=1e-3"]
    assert recipe["vs_base"] == {"n": 5, "passed": 4, "reference": 2, "wins": 2, "losses": 0, "p": 0.25}
    # against served: g1 and g2 won, g3 held; o1 and o2 are served's own (no pair)
    assert recipe["vs_served"] == {"n": 5, "passed": 5, "reference": 3, "wins": 2, "losses": 0, "p": 0.25}
    assert recipe["steps"] == 60 and recipe["loss"] == [1, 0.5]
    candidate = lines["candidate:all@v1"]
    assert (candidate["vs_base"]["wins"], candidate["vs_base"]["losses"]) == (1, 1)
    assert (candidate["vs_served"]["wins"], candidate["vs_served"]["losses"]) == (1, 1)
    text = table(state)
    assert "served" in text.splitlines()[0] and len(text.splitlines()) == 4
    assert "lr=1e-3" in text and "4/5" in text and "2/0" in text
    # on the dev set there are no served outcomes: no such columns
    del state["served"]
    assert "vs_served" not in comparisons(state)[1] and "served" not in table(state).splitlines()[0]


@pytest.mark.slow
def test_the_sweep_pairs_a_recipe_and_the_nights_candidate_on_its_gate_pool(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end on the tiny model: a pooled night records its gate outcomes; ``--pool gate --candidate``
    redraws the night's gate pool from its summary (the same problem ids), loads the night's candidate from
    its database, trains a recipe on the night's buffer (``epochs``: one pass, 2 steps for 4 examples at
    batch 2), and pairs every row with the night's served outcomes."""
    from service.app_services import Services
    from tests.benchmarks.recipe_sweep import CANDIDATE_ROW, main
    from tests.helpers import make_settings, run_night

    night_dir = tmp_path / "night"
    settings = make_settings(night_dir, tiny_model_dir)
    settings.router.grouping = "pooled"
    settings.night.tasks = [POOLED_TASK]
    settings.night.eval_limit = 2
    settings.night.gate_pool = 4
    services = Services.build(settings)
    run_id, summary, _ = run_night(services)
    services.stop()
    assert summary["candidates"] == {POOLED_TASK: f"{POOLED_TASK}@v1"}
    served = summary["gate_outcomes"]["served"]

    monkeypatch.setenv("DREAMFIX_AGENT__MAX_NEW_TOKENS", "16")  # the sweep's settings: the short preset's
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the sweep's work dirs, removed with tmp_path
    out = tmp_path / "sweep.json"
    recipe = "steps=1,examples=4,epochs=1"
    argv = ["--night-dir", str(night_dir), "--group", POOLED_TASK, "--pool", "gate", "--candidate"]
    argv += ["--recipes", recipe, "--model", str(tiny_model_dir), "--out", str(out)]
    assert main(argv) == 0
    state = json.loads(out.read_text())
    assert (state["pool"], state["night_run"], state["gate_pool_size"]) == ("gate", run_id, 4)
    assert [p["id"] for p in state["problems"]] == sorted(served) and state["served"] == served
    routed = set(state["routed"])
    assert routed and routed <= set(served) and set(state["base"]) == set(served)
    row = state["rows"][recipe]
    assert (row["examples"], row["steps"]) == (4, 2) and set(row["outcomes"]) == routed
    assert row["n"] == len(served) and len(row["loss_first_last"]) == 2
    candidate = state["rows"][f"{CANDIDATE_ROW}{POOLED_TASK}@v1"]
    assert candidate["night_run"] == run_id and set(candidate["outcomes"]) == routed
    # the night's gate ran this very candidate on these problems with greedy decoding: the same outcomes
    assert candidate["agrees_with_nights_gate"] == len(routed)
    printed = capsys.readouterr().out
    assert "the night's served model" in printed and f"{CANDIDATE_ROW}{POOLED_TASK}@v1" in printed
    # resumed: every row is there, nothing is evaluated again
    assert main(argv) == 0
    assert json.loads(out.read_text())["rows"] == state["rows"]
