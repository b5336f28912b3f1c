"""The night's data discipline and its Phase 3 merge, on the tiny model with the real sandbox and SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.episodes import ProblemRecord
from agent.koans import eval_koans
from agent.prompt import build_messages, training_example
from service.app_services import Services
from service.db.repositories import AdapterRepository, EpisodeRepository, RunRepository
from service.jobs import RunContext
from service.night import MERGE_CANDIDATE, EvalGuard, Pair, collect_pairs
from tests.helpers import make_settings, run_night, succeeded_night


def test_eval_guard_blocks_eval_koans_and_near_copies() -> None:
    evals = eval_koans()
    guard = EvalGuard(evals)
    koan = evals[0]
    assert guard.blocks(Pair(koan.broken, koan.fixed, "client", "req-1"))
    renamed_layout = (
        "\n\n".join(line.strip() for line in koan.broken.splitlines()) + "\n// a client comment\n"
    )
    assert guard.blocks(Pair(renamed_layout, koan.fixed, "client", "req-2"))
    assert not guard.blocks(
        Pair('fn main() { let x: i32 = "no"; }', "fn main() { let x: i32 = 1; }", "client", "r")
    )


def test_training_data_never_contains_eval_koans(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_model_dir)
    services = Services.build(settings)
    leaked = eval_koans()[3]
    record = ProblemRecord(
        problem_id="req-x",
        content_hash="0" * 64,
        family=None,
        source=leaked.broken,  # a client sent an eval koan verbatim and it got fixed
        final_code=leaked.fixed,
        fixed=True,
        verified=True,
        steps_to_green=1,
        final_status="fixed",
        strategy="serve",
        error_codes=list(leaked.codes),
    )
    with services.db.session() as s:
        EpisodeRepository(s).save(
            record, origin="client", problem_ref="req-x", mode=leaked.mode, edition=leaked.edition
        )
        run_id = RunRepository(s).create("night", "cli").id
    ctx = RunContext(run_id, "night", services.db, settings)
    pairs = collect_pairs(ctx, services.serving.sandbox)
    assert ctx.summary["pairs_blocked_as_eval"] >= 1
    guard = EvalGuard(eval_koans())
    assert not any(guard.blocks(p) for p in pairs)
    eval_texts = {k.broken for k in eval_koans()}
    assert not any(p.source in eval_texts for p in pairs)
    assert len(pairs) >= 100  # the train koans at least
    services.stop()


def test_training_and_inference_share_one_prompt_builder() -> None:
    from agent.sandbox import Sandbox, SandboxConfig

    koan = eval_koans()[0]
    diags = Sandbox(SandboxConfig()).check(koan.broken, koan.mode, koan.edition).diagnostics
    messages, answer = training_example(koan.broken, diags, koan.fixed, hints=True)
    assert messages == build_messages(koan.broken, diags, hints=True, output_format="program")
    assert koan.fixed.strip() in answer


@pytest.mark.slow
def test_second_night_merges_with_phase3_and_reports_reconstruction(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = make_settings(
        tmp_path,
        tiny_model_dir,
        share={"train_steps": 2, "lora_rank": 2, "k_cap": 4, "merge_every": 2},
    )
    settings.night.eval_limit = 8
    services = Services.build(settings)
    first = services.jobs.run_now("night")
    second = services.jobs.run_now("night")
    with services.db.session() as s:
        runs = {r.id: r for r in RunRepository(s).recent("night")}
        assert runs[first].status == "succeeded", runs[first].error
        assert runs[second].status == "succeeded", runs[second].error
        merge = runs[second].summary["merge"]
        assert set(merge["reconstruction_errors"]) >= {"moves", "mutability"}
        assert all(err < 1e-3 for err in merge["reconstruction_errors"].values()), merge
        rows = AdapterRepository(s).versions("moves")
        assert [r.version for r in rows] == [2, 1]
        assert rows[0].basis_id == merge["basis_id"] != rows[1].basis_id
        assert rows[0].gate["merge"] is True
        # the merge is one candidate on the whole gate pool: its per-problem outcomes beside served's
        outcomes = runs[second].summary["gate_outcomes"]
        assert set(outcomes["candidates"]) == {MERGE_CANDIDATE}
        served, merged = outcomes["served"], outcomes["candidates"][MERGE_CANDIDATE]
        assert len(served) == runs[second].summary["gate_pool"]["verified"] >= 1
        assert set(merged) == set(served)
        gate = rows[0].gate["paired_gate"]
        assert gate["n"] == len(served)
        assert gate["wins"] == sum(merged[i] and not served[i] for i in served)
        assert gate["losses"] == sum(served[i] and not merged[i] for i in served)
        # night 1 promoted its candidates (statistics off) and recorded that configuration's gate outcomes:
        # the merge night serves it, so it reused them; the promoted merge is every task in the new basis,
        # and what the next night will serve has the merge's outcomes
        assert runs[second].summary["gate_baseline_reused_from"] == first
        assert served == runs[first].summary["served_gate_after"]["outcomes"]
        after = runs[second].summary["served_gate_after"]
        assert rows[0].status == "active"
        assert after["served"] == {
            "versions": {"moves": 2, "mutability": 2},
            "basis_id": merge["basis_id"],
        }
        assert after["outcomes"] == merged
    services.stop()


@pytest.mark.slow
def test_night_promotes_only_on_the_paired_gate_over_the_gate_pool(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """End to end with the tiny model: the night runs served and candidate on the verified gate pool with the
    gate strategy and decides by ``paired_gate`` at its real settings. The tiny model cannot fix anything, so
    there is no discordant pair: every candidate is rejected by the sign test and nothing is served; the eval
    koans are reported but do not decide (their old gate would have passed a 0% → 0% candidate)."""
    settings = make_settings(tmp_path, tiny_model_dir)
    settings.night.eval_limit = 4
    settings.night.gate_pool = 5
    settings.night.gate_alpha = 0.05
    settings.night.gate_min_net_gain = 2
    settings.night.self_samples = 2  # the training data is self-generated too (service/self_data.py)
    services = Services.build(settings)
    _, summary, _ = run_night(services)
    with services.db.session() as s:
        assert summary["gate_pool"]["drawn"] == 5 and 1 <= summary["gate_pool"]["verified"] <= 5
        assert summary["candidates"] and summary["promoted"] == []
        self_data = summary["self_data"]
        assert self_data["problems"] > 0 and self_data["samples"] == 2 * (
            self_data["problems"] - self_data["greedy_pass"]
        )
        for task, decision in summary["gate"].items():
            gate = decision["paired_gate"]
            assert gate["n"] == summary["gate_pool"]["verified"]
            assert (gate["wins"], gate["losses"], gate["promoted"]) == (0, 0, False)
            assert decision["passed"] is False and decision["reason"] == gate["reason"]
            assert "net gain 0 < 2" in gate["reason"]
            assert decision["koans_passed"] is True  # report-only: it would have promoted
            rows = AdapterRepository(s).versions(task)
            assert [r.status for r in rows] == ["rejected"]
            assert rows[0].gate["paired_gate"] == gate
        assert AdapterRepository(s).active_for("moves") is None
    services.stop()


@pytest.mark.slow
def test_the_nights_summary_holds_every_gate_problems_outcome_for_served_and_candidates(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """summary["gate_outcomes"]: the served model's and each candidate's outcome on every verified gate-pool
    problem, the very outcomes the paired gate decided on, so a candidate can be paired with anything after
    the fact; served as the run's summary by ``GET /admin/runs/{id}``. The pool's draw size is recorded, and
    redrawing it (``gate_problems``, as recipe_sweep.py --pool gate does) gives the same problem ids."""
    from fastapi.testclient import TestClient

    from agent.pools import build_pools
    from service.api.app import create_app
    from service.gate import paired_gate
    from service.night import gate_config, gate_problems
    from tests.helpers import AUTH

    settings = make_settings(tmp_path, tiny_model_dir)
    settings.night.eval_limit = 2
    settings.night.gate_pool = 6
    services = Services.build(settings)
    run_id, summary, _ = run_night(services)
    outcomes = summary["gate_outcomes"]
    served = outcomes["served"]
    assert summary["gate_pool"]["size"] == 6
    assert len(served) == summary["gate_pool"]["verified"] >= 1
    assert all(isinstance(ok, bool) for ok in served.values())
    redrawn = gate_problems(services.serving.sandbox, build_pools(6, 0, eval_koans()).gate)
    assert [p.id for p in redrawn] == sorted(served)
    family_of = {p.id: p.family or "?" for p in redrawn}
    assert set(outcomes["candidates"]) == set(summary["candidates"]) == {"moves", "mutability"}
    for task, candidate in outcomes["candidates"].items():
        assert set(candidate) == set(served) and all(isinstance(ok, bool) for ok in candidate.values())
        # the paired gate on the recorded outcomes is the decision the night recorded
        decision = paired_gate(served, candidate, family_of, gate_config(settings)).as_json()
        assert decision == summary["gate"][task]["paired_gate"]
    client = TestClient(create_app(services))  # no lifespan: the services are already built
    run = client.get(f"/admin/runs/{run_id}", headers=AUTH)
    assert run.status_code == 200
    assert run.json()["summary"]["gate_outcomes"] == outcomes
    services.stop()


@pytest.mark.slow
def test_night_two_phase2_starts_from_night_ones_served_coefficients(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Night 1 (statistics off in make_settings, so its candidates are served) makes the basis; night 2's
    Phase 2 warm-starts from the served coefficients: with a vanishing learning rate its candidates equal
    night 1's versions (a random start would be noise of std init_std, nowhere near them)."""
    import torch

    from learner.share.artifacts import load_task_version

    settings = make_settings(tmp_path, tiny_model_dir)
    settings.night.eval_limit = 2
    settings.night.gate_pool = 3
    services = Services.build(settings)
    _, summary, _ = run_night(services)
    promoted = summary["promoted"]
    assert promoted and "warm_start" not in summary
    settings.share.learning_rate = 1e-12
    second, summary, _ = run_night(services)
    assert sorted(summary["warm_start"].values()) == sorted(promoted)
    with services.db.session() as s:
        repo = AdapterRepository(s)
        for name in promoted:
            task = name.split("@")[0]
            v1, v2 = repo.get(task, 1), repo.get(task, 2)
            assert v1 is not None and v2 is not None and v2.run_id == second
            before, after = load_task_version(v1.path).coeffs, load_task_version(v2.path).coeffs
            assert set(before) == set(after)
            for key in before:
                assert torch.allclose(before[key].eb, after[key].eb, atol=1e-6)
                assert torch.allclose(before[key].ea, after[key].ea, atol=1e-6)
    services.stop()


@pytest.mark.slow
def test_self_data_asks_each_problem_with_its_tasks_served_version(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expert iteration refines what is served: after night 1 promoted its candidates, night 2's
    self-generated data asks every routed problem with its task's served (task, version) key, not the base
    model's. The keys are observed on the real runtime's ``generate`` (a recording wrapper) while the night
    builds its self-generated targets."""
    import service.night as night_module
    from service.compose import load_runtime

    settings = make_settings(tmp_path, tiny_model_dir)
    settings.night.eval_limit = 2
    settings.night.gate_pool = 3
    asked: list[object] = []
    recording: list[bool] = []

    def factory() -> Any:
        runtime = load_runtime(settings)
        real = runtime.generate

        def generate(prompts: Any, params: Any, keys: Any = None, snapshot: Any = None) -> Any:
            if recording:
                asked.extend(keys if keys is not None else [None] * len(prompts))
            return real(prompts, params, keys, snapshot)

        runtime.generate = generate  # type: ignore[method-assign]
        return runtime

    real_targets = night_module.self_generated_targets

    def observed_targets(*args: Any, **kwargs: Any) -> Any:
        recording.append(True)
        try:
            return real_targets(*args, **kwargs)
        finally:
            recording.pop()

    monkeypatch.setattr(night_module, "self_generated_targets", observed_targets)
    services = Services.build(settings, runtime_factory=factory)
    _, summary, _ = run_night(services)  # self_samples = 0: reference targets, the model is not asked
    promoted = summary["promoted"]
    assert sorted(p.split("@")[0] for p in promoted) == sorted(settings.night.tasks or [])
    assert asked == []
    settings.night.self_samples = 1
    _, summary, _ = run_night(services)
    assert summary["self_data"]["problems"] > 0
    served = {(p.split("@v")[0], int(p.split("@v")[1])) for p in promoted}
    assert asked and set(asked) == served, set(asked)
    services.stop()


@pytest.mark.slow
def test_a_night_with_coarse_groups_trains_and_serves_one_adapter_per_group(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The daemon's default grouping: a night's examples are pooled per coarse group (ownership holds moves,
    borrows, mutability, ...), one adapter per group is trained and served, and problems of different
    families of one group are routed to that group's served version."""
    from agent.diagnostics import Diagnostic
    from service.compose import route_fn

    settings = make_settings(tmp_path, tiny_model_dir)  # statistics off: what trains is served
    settings.router.grouping = "coarse"  # (assigned: make_settings' fine night.tasks would not validate)
    settings.night.tasks = ["ownership", "types"]
    summary, _ = succeeded_night(settings)
    examples = summary["examples"]
    assert set(examples) == {"ownership", "types"}
    # the group's examples come from all its families: more than any one family has train koans (≤ 9)
    assert examples["ownership"] > 9 and examples["types"] > 9
    assert sorted(p.split("@")[0] for p in summary["promoted"]) == ["ownership", "types"]
    services = Services.build(settings)  # the daemon after the night: its serving model, the active versions
    services.serving.load()
    assert services.serving.active_versions() == {"ownership": 1, "types": 1}
    route = route_fn(services.serving.router, services.serving.pinned_snapshot())

    def error(code: str, message: str) -> Diagnostic:
        return Diagnostic("error", code, message, 1, 1, f"error[{code}]: {message}")

    assert route([error("E0382", "use of moved value: `x`")]).key == ("ownership", 1)
    assert route([error("E0596", "cannot borrow `v` as mutable")]).key == ("ownership", 1)
    assert route([error("E0308", "mismatched types")]).key == ("types", 1)
    assert route([error("E0425", "cannot find value `y` in this scope")]).key is None  # items: not trained
    services.stop()
