"""`dreamfix experiment` stages end to end on the tiny model, the real sandbox and the real koans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from agent.sandbox import Sandbox, SandboxConfig
from learner.runtime import ModelRuntime
from learner.share.layer import share_layers
from router import TaskRouter
from service.research import sweep as sweep_stage
from service.research.data import eval_items, task_examples
from service.research.experiment import Experiment, ExperimentConfig
from service.research.report import markdown
from service.research.scoring import reference_nll
from service.research.variants import applied, lora_deltas

TASKS = ["mutability", "moves", "borrows"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    return Sandbox(SandboxConfig(cache_dir=tmp_path_factory.mktemp("sandbox-cache")))


def _config(**overrides: object) -> ExperimentConfig:
    values: dict[str, object] = dict(
        tasks=TASKS,
        per_task=4,
        eval_per_family=2,
        seed_steps=2,
        phase2_steps=2,
        seeds=[0, 1],
        batch_size=2,
        max_length=512,
        k_cap=8,
        sweep_caps=[2, 8],
        sweep_ps=[1, 2],
        sweep_phis=[0, 1],
        phi=1,
        seed_lr=5e-2,
        phase2_lr=5e-2,
    )
    values.update(overrides)
    return ExperimentConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def experiment(tmp_path: Path, tiny_runtime: ModelRuntime, sandbox: Sandbox) -> Experiment:
    exp = Experiment(tmp_path / "exp", _config(), tiny_runtime, sandbox, TaskRouter())
    exp.progress = lambda _msg: None
    return exp


def test_training_examples_never_contain_eval_koans_and_use_the_shared_prompt(sandbox: Sandbox) -> None:
    from agent.koans import eval_koans

    examples = task_examples(sandbox, ["mutability"], per_task=6)
    assert 0 < len(examples["mutability"]) <= 6
    evals = eval_koans()
    for messages, answer in examples["mutability"]:
        user = messages[-1]["content"]
        assert "rustc reports:" in user and answer.startswith("```rust")
        assert not any(k.broken.strip() in user for k in evals)


def test_reference_nll_depends_on_the_applied_adapter(experiment: Experiment) -> None:
    items = experiment.items()[:2]
    base = reference_nll(experiment.runtime, items)
    again = reference_nll(experiment.runtime, items)
    assert base == again and all(v["nll"] > 0 and v["edit_nll"] > 0 for v in base)
    lora = experiment.seed("mutability")
    with applied(experiment.model, lora_deltas(lora)):
        changed = reference_nll(experiment.runtime, items)
    assert changed != base
    assert reference_nll(experiment.runtime, items) == base  # weights restored exactly


def test_an_experiments_seed_trains_the_steps_seed_epochs_plan(
    tmp_path: Path, tiny_runtime: ModelRuntime, sandbox: Sandbox
) -> None:
    """``seed_epochs`` (the night's ``night.seed_epochs`` under ``--recipe night``): a seed trains
    ``TrainConfig.seed_steps_for`` its task's examples, as the night's seeds do."""
    config = _config(seed_steps=1, seed_epochs=1.0, batch_size=2)
    exp = Experiment(tmp_path / "exp", config, tiny_runtime, sandbox, TaskRouter())
    exp.progress = lambda _msg: None
    assert exp._seed_config(0, 7).steps == 4 and exp._seed_config(0, 1).steps == 1
    exp.seed("mutability")
    n = len(exp.examples()["mutability"])
    losses = json.loads((exp.root / "training.json").read_text())["mutability-s0"]["losses"]
    assert n > 2 and len(losses) == config.train_config().seed_steps_for(n) == -(-n // 2)


def test_edit_mask_covers_exactly_the_changed_lines(experiment: Experiment) -> None:
    from learner.share.examples import IGNORE_INDEX, encode_example
    from service.research.scoring import edit_token_mask

    tokenizer = experiment.runtime.tokenizer
    for item in experiment.items()[:3]:
        encoded = encode_example(tokenizer, item.messages, item.answer, 2048)
        answer = [t for t, lab in zip(encoded.input_ids, encoded.labels, strict=True) if lab != IGNORE_INDEX]
        mask = edit_token_mask(tokenizer, item, answer)
        assert len(mask) == len(answer) and any(mask) and not all(mask)
        marked = tokenizer.decode([t for t, m in zip(answer, mask, strict=True) if m])
        broken_lines = {line.strip() for line in item.problem.source.splitlines()}
        changed = [line for line in item.koan.fixed.splitlines() if line.strip() not in broken_lines]
        assert changed and any(line.strip() and line.strip()[:8] in marked for line in changed)


def test_share_rows_change_outputs_only_when_coefficients_are_nonzero(experiment: Experiment) -> None:
    p1 = experiment.phase1_bases()
    items = experiment.items()[:2]
    base = reference_nll(experiment.runtime, items)
    with experiment.share(p1.bases) as bank:
        bank.set_task("mutability", p1.coefficients["mutability"], 1)
        zero = {
            k: type(c)(torch.zeros_like(c.eb), torch.zeros_like(c.ea))
            for k, c in p1.coefficients["moves"].items()
        }
        bank.set_task("zero", zero, 1)
        routed = reference_nll(experiment.runtime, items, [("mutability", 1)] * 2, bank.snapshot())
        zeroed = reference_nll(experiment.runtime, items, [("zero", 1)] * 2, bank.snapshot())
        assert routed != base
        flat = [v for d in base for v in d.values()]
        assert [v for d in zeroed for v in d.values()] == pytest.approx(flat, abs=1e-5)
    assert not share_layers(experiment.model)


def test_all_stages_run_resume_and_write_figures(experiment: Experiment, tmp_path: Path) -> None:
    for stage in ("seeds", "strategies", "heatmap", "sequential", "subspace", "sweep"):
        result = experiment.run(stage)
        assert experiment.result_path(stage).exists()
        assert result["wall_seconds_this_run"] >= 0
    strategies = json.loads(experiment.result_path("strategies").read_text())
    assert set(strategies["summary"]) == {
        "base",
        "hints",
        "mean adapter",
        "per-task LoRA",
        "averaged coefficients",
        "routed",
        "oracle",
    }
    assert strategies["bytes_per_task"]["share"] < strategies["bytes_per_task"]["lora"]
    heat = json.loads(experiment.result_path("heatmap").read_text())
    assert len(heat["matrix"]) == len(TASKS) + 1
    assert all(v > 0 for v in heat["applied_check"]["max_abs_logit_change"].values())
    seq = json.loads(experiment.result_path("sequential").read_text())
    for method in ("Share", "naive LoRA", "per-task LoRA"):
        assert len(seq["R"][method]) == len(TASKS) and set(seq["metrics"][method]) >= {"acc", "bwt", "fwt"}
    assert seq["R"]["per-task LoRA"][0][1] == seq["base"][TASKS[1]]  # not yet learned: the base model
    sub = json.loads(experiment.result_path("subspace").read_text())
    assert "disjoint_tasks" in sub and "other_seeds" in sub
    sweep = json.loads(experiment.result_path("sweep").read_text())
    assert {"base", "LoRA"} <= set(sweep["points"]) and len(sweep["points"]) >= 5
    trained = {k: p for k, p in sweep["points"].items() if ":" in k}
    assert all(p["phi_used"] == 0 for k, p in trained.items() if "phi=0" in k)
    assert {k for k in trained if k.startswith("phi:")} == {
        "phi: cap=8 p=1 phi=0 full span",
        "phi: cap=8 p=1 phi=1 full span",
    }
    with_phi, without = trained["phi: cap=8 p=1 phi=1 full span"], trained["phi: cap=8 p=1 phi=0 full span"]
    assert with_phi["phi_used"] == 1  # the full span leaves room for φ
    # Phase 3 merged the other tasks too: the basis is still the shared one, not refitted to the task alone.
    assert with_phi["k"] >= without["k"] and with_phi["merge_worst_error"] is not None
    for png in ("heatmap", "sequential", "subspace_tasks", "subspace_seeds", "sweep", "strategies_nll"):
        assert (experiment.root / "figures" / f"{png}.png").stat().st_size > 1000
    text = markdown(experiment.root, tmp_path / "figs", "figs")
    assert "(not run yet)" not in text
    for heading in ("R matrix, Share", "GEM metrics", "Subspace stability, other seeds", "| routed |"):
        assert heading in text
    assert (tmp_path / "figs" / f"{experiment.root.name}-heatmap.png").exists()
    assert f"](figs/{experiment.root.name}-sweep.png)" in text
    partial = json.loads(experiment.result_path("sequential").read_text())
    experiment.save_result("sequential", {"R": partial["R"]})  # as a stage still running leaves it
    assert "(incomplete: the stage has not finished; missing 'tasks')" in markdown(experiment.root)
    experiment.save_result("sequential", partial)
    # Resuming does no training again: every seed is on disk and every stage skips finished cells.
    before = json.loads((experiment.root / "training.json").read_text())
    experiment.run("strategies")
    assert json.loads((experiment.root / "training.json").read_text()) == before


def test_the_prefix_cache_gives_the_same_seeds_and_scores_as_full_forwards(
    tmp_path: Path, tiny_runtime: ModelRuntime, sandbox: Sandbox
) -> None:
    results = {}
    for cached in (True, False):
        exp = Experiment(
            tmp_path / f"cache-{cached}",
            _config(layers=[1], prefix_cache=cached, seeds=[0]),
            tiny_runtime,
            sandbox,
            TaskRouter(),
        )
        exp.progress = lambda _msg: None
        exp.run("seeds")
        results[cached] = exp.run("strategies")
    assert results[True]["prefix_cache"]["hits"] > 0 and "prefix_cache" not in results[False]
    summary = results[False]["summary"]
    assert len(summary) == 7
    for name, row in summary.items():
        for metric in ("nll", "edit_nll"):
            assert results[True]["summary"][name][metric] == pytest.approx(row[metric], abs=2e-3), name
            assert results[True]["summary"][name][f"{metric}_by_family"] == pytest.approx(
                row[f"{metric}_by_family"], abs=2e-3
            ), name


def test_pass_rates_fill_into_an_experiment_scored_without_them(
    tmp_path: Path, tiny_runtime: ModelRuntime, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    def make(pass_rate: bool) -> Experiment:
        # Two caps above any k two rank-8 LoRAs can give (16 per side): the second cannot bind.
        config = _config(
            seeds=[0], eval_per_family=1, max_new_tokens=16, pass_rate=pass_rate, sweep_caps=[16, 32]
        )
        exp = Experiment(tmp_path / "exp", config, tiny_runtime, sandbox, TaskRouter())
        exp.progress = lambda _msg: None
        return exp

    first = make(False)
    before = {stage: first.run(stage) for stage in ("strategies", "sweep", "sequential")}
    assert all("fixed" not in v for s in before["strategies"]["scores"].values() for v in s.values())
    trained = json.loads((first.root / "training.json").read_text())

    later = make(True)  # pass_rate is a run option: same experiment, pass outcomes added
    assert json.loads((later.root / "config.json").read_text())["pass_rate"] is True
    strategies = later.run("strategies")
    for name, scores in strategies["scores"].items():
        for item_id, v in scores.items():
            assert isinstance(v["fixed"], bool) and v["generate_seconds"] > 0
            # the NLLs were kept, not recomputed
            assert v["edit_nll"] == before["strategies"]["scores"][name][item_id]["edit_nll"]
        entry = strategies["summary"][name]
        assert 0 <= entry["pass_rate"] <= 1 and set(entry["pass_by_family"]) == set(TASKS)
        assert isinstance(entry["regressions"], list)
    assert json.loads((later.root / "training.json").read_text()) == trained  # no seed trained again
    sweep = later.run("sweep")
    for label, point in sweep["points"].items():
        assert 0 <= point["pass_rate"] <= 1, label
        # A point re-run to add its pass rate reproduces the earlier run's score (same seeds, same data).
        assert point["earlier_run"]["score"] == pytest.approx(point["score"], abs=1e-4), label
    # The R matrices are complete: naive LoRA and Share replay their nights to score the last one's fixes.
    seq = later.run("sequential")
    assert set(seq["final"]) == {"base", "per-task LoRA", "naive LoRA", "Share"}
    # Served states the strategies stage already scored are reused, not generated again.
    assert seq["final"]["base"] == strategies["scores"]["base"]
    assert seq["final"]["per-task LoRA"] == strategies["scores"]["per-task LoRA"]
    for method, matrix in before["sequential"]["R"].items():
        assert seq["R"][method] == [pytest.approx(row, abs=1e-4) for row in matrix], method
    assert all(isinstance(v["fixed"], bool) for m in seq["final"].values() for v in m.values())
    assert set(seq["final_summary"]) == set(seq["final"]) and "regressions" in seq["final_summary"]["Share"]
    heat = later.run("heatmap")
    assert len(heat["pass_matrix"]) == len(TASKS) + 1 and set(heat["base_pass_by_family"]) == set(TASKS)
    # Cells the strategies stage generated with the same coefficients are reused, not generated again.
    assert heat["columns"]["routed"] == strategies["scores"]["routed"]
    own = {k: v for k, v in heat["columns"]["moves"].items() if k.startswith("moves")}
    assert own and all(v == strategies["scores"]["oracle"][k] for k, v in own.items())
    # A cap that does not bind gives the same basis: that point is a copy, not a second Phase 2.
    unbound, bound = sweep["points"]["cap: cap=32 p=1 phi=0"], sweep["points"]["cap: cap=16 p=1 phi=0"]
    assert unbound["same_basis_as"] == "cap: cap=16 p=1 phi=0" and "same_basis_as" not in bound
    assert (unbound["score"], unbound["pass_rate"], unbound["k"]) == (
        bound["score"],
        bound["pass_rate"],
        bound["k"],
    )
    # Resumed with only the copy missing: the finished twin is recognised without training again.
    saved = json.loads(later.result_path("sweep").read_text())
    del saved["points"]["cap: cap=32 p=1 phi=0"]
    later.save_result("sweep", saved)
    with monkeypatch.context() as patched:
        patched.setattr(sweep_stage, "phase2", lambda *a, **k: pytest.fail("Phase 2 trained again"))
        resumed = later.run("sweep")["points"]["cap: cap=32 p=1 phi=0"]
    assert resumed["same_basis_as"] == "cap: cap=16 p=1 phi=0" and resumed["score"] == bound["score"]
    for png in ("strategies_pass", "sweep_pass", "heatmap_pass"):
        assert (later.root / "figures" / f"{png}.png").stat().st_size > 1000
    text = markdown(later.root)
    assert "One-shot pass rate (greedy" in text and "earlier run: score / final loss" in text
    assert "Δ one-shot pass rate vs base" in text and "What each method serves after the last night" in text
    again = later.run("strategies")  # complete: nothing generated again
    assert again["scores"] == strategies["scores"]


def test_a_resumed_experiment_must_keep_its_config(
    experiment: Experiment, tiny_runtime: ModelRuntime, sandbox: Sandbox
) -> None:
    with pytest.raises(ValueError, match="per_task"):
        Experiment(experiment.root, _config(per_task=5), tiny_runtime, sandbox, TaskRouter())


def test_eval_items_are_the_frozen_split_with_router_decisions(sandbox: Sandbox) -> None:
    items = eval_items(sandbox, TaskRouter(), per_family=1)
    assert len({i.family for i in items}) == len(items) >= 19
    assert all(i.koan.split == "eval" and i.diagnostics for i in items)
    assert sum(i.routed_task == i.family for i in items) >= len(items) // 2


def test_experiment_cli_lists_shows_and_rejects_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main
    from service.settings import get_settings

    monkeypatch.setenv("DREAMFIX_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        assert main(["experiment", "list"]) == 0  # migrates a fresh database first
        assert "no experiment runs recorded yet" in capsys.readouterr().out
        assert main(["experiment", "show", "--name", "nope"]) == 2
        assert "no experiment named 'nope'" in capsys.readouterr().err
        assert main(["experiment", "report", "--name", "nope"]) == 2
        assert "no experiment 'nope'" in capsys.readouterr().err
        assert main(["experiment", "run", "seeds", "--name", "x", "--tasks", "borrows,nonesuch"]) == 2
        assert "unknown task(s) ['nonesuch']" in capsys.readouterr().err
        assert main(["experiment", "run", "seeds", "--name", "../x"]) == 2
        assert main(["experiment", "run", "seeds", "--name", "x", "--phase2-lr", "0"]) == 2
        assert "must be positive: phase2_lr=0.0" in capsys.readouterr().err
        assert main(["experiment", "run", "seeds", "--name", "x", "--threshold", "1.5"]) == 2
        assert "threshold must be in (0, 1], got 1.5" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
