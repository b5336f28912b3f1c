"""The night's gate baseline, reused across nights (issue 16): the fingerprint of what the served configuration's
gate-pool outcomes depend on, the outcomes after a night's promotions, and nights on the tiny model (real
sandbox, SQLite) that reuse or re-run the baseline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import service.night as night_module
from agent.problems import Problem
from learner.cpu import KERNEL_FLAGS, parse_cpuinfo
from service.app_services import Services
from service.night import (
    MERGE_CANDIDATE,
    fingerprint_sha256,
    gate_fingerprint,
    served_gate_after,
    served_outcomes_after,
)
from service.settings import Settings
from tests.helpers import make_settings, run_night

# ------------------------------------------------------------------------------------ pure functions

MODEL = {"id": "m", "setting": "m", "dtype": "torch.float32", "weights": "int8", "device": "cpu"}
PLATFORM: dict[str, Any] = {
    "torch": "2.5.0",
    "threads": 2,
    "cpu": {"model": "Some CPU", "flags": ["avx2", "avx512f"]},
}


def _problems() -> list[Problem]:
    return [
        Problem("gate-0000-moves", "fn main() { let a = String::new(); let b = a; a; }"),
        Problem("gate-0001-mutability", "fn main() { let v = Vec::new(); v.push(1); }", "bin", "2021"),
        Problem("gate-0002-traits", "struct S; fn main() { S.x(); }", "lib", "2024", "#[test] fn t() {}"),
    ]


def _fingerprint(settings: Settings, **changes: Any) -> str:
    args: dict[str, Any] = {
        "model": dict(MODEL),
        "served": {"moves": 3, "mutability": 1},
        "basis_id": "basis-a",
        "settings": settings,
        "problems": _problems(),
        "platform": json.loads(json.dumps(PLATFORM)),
    }
    args.update(changes)
    return fingerprint_sha256(gate_fingerprint(**args))


def _with(settings: Settings, section: str, field: str, value: Any) -> Settings:
    changed = settings.model_copy(deep=True)
    setattr(getattr(changed, section), field, value)
    return changed


def test_the_gate_fingerprint_is_equal_for_equal_inputs_and_changes_with_each_component(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path)
    base = _fingerprint(settings)
    # equal inputs (fresh objects, other orders): equal fingerprints
    assert _fingerprint(Settings(data_dir=tmp_path)) == base
    assert _fingerprint(settings, problems=list(reversed(_problems()))) == base
    assert _fingerprint(settings, served={"mutability": 1, "moves": 3}) == base
    assert len(base) == 64 and int(base, 16) >= 0

    problems = _problems()
    edited = [problems[0], Problem(problems[1].id, problems[1].source + " "), problems[2]]
    cpu = dict(PLATFORM["cpu"])
    changed = {
        "model id": _fingerprint(settings, model={**MODEL, "id": "other"}),
        "model setting": _fingerprint(settings, model={**MODEL, "setting": "/models/other"}),
        "dtype": _fingerprint(settings, model={**MODEL, "dtype": "torch.bfloat16"}),
        "weights": _fingerprint(settings, model={**MODEL, "weights": "float"}),
        "device": _fingerprint(settings, model={**MODEL, "device": "cuda:0"}),
        "a served version": _fingerprint(settings, served={"moves": 2, "mutability": 1}),
        "a task more": _fingerprint(settings, served={"moves": 3, "mutability": 1, "traits": 1}),
        "a task less": _fingerprint(settings, served={"moves": 3}),
        "the basis": _fingerprint(settings, basis_id="basis-b"),
        "a problem less": _fingerprint(settings, problems=problems[:2]),
        "a problem's program": _fingerprint(settings, problems=edited),
        "torch": _fingerprint(settings, platform={**PLATFORM, "torch": "2.6.0"}),
        "threads": _fingerprint(settings, platform={**PLATFORM, "threads": 1}),
        "cpu model": _fingerprint(settings, platform={**PLATFORM, "cpu": {**cpu, "model": "Other CPU"}}),
        "cpu flags": _fingerprint(
            settings, platform={**PLATFORM, "cpu": {**cpu, "flags": ["avx2", "avx512f", "avx512_vnni"]}}
        ),
        "gate attempts": _fingerprint(_with(settings, "night", "gate_max_attempts", 2)),
        "max new tokens": _fingerprint(_with(settings, "agent", "max_new_tokens", 512)),
        "hints": _fingerprint(_with(settings, "agent", "hints", False)),
        "grouping": _fingerprint(_with(settings, "router", "grouping", "pooled")),
        "router threshold": _fingerprint(_with(settings, "router", "confidence_threshold", 0.7)),
        "sandbox time limit": _fingerprint(_with(settings, "sandbox", "wall_seconds", 5.0)),
    }
    monkeypatch.setattr(night_module, "GATE_OUTCOMES_FORMAT", night_module.GATE_OUTCOMES_FORMAT + 1)
    changed["reply format"] = _fingerprint(settings)
    monkeypatch.undo()
    assert {name: h for name, h in changed.items() if h == base} == {}
    assert len(set(changed.values())) == len(changed)  # and each one differently

    # what does not change an outcome does not change the fingerprint: the gate's statistics decide on the
    # outcomes, serving's own attempts and prompt lookup (the night decodes without it) are not the gate's
    for section, field, value in [
        ("night", "gate_alpha", 0.5),
        ("night", "gate_min_net_gain", 5),
        ("night", "gate_max_family_net_loss", 3),
        ("night", "seed_steps", 7),
        ("night", "reuse_gate_baseline", False),
        ("agent", "max_attempts", 1),
        ("agent", "prompt_lookup", False),
        ("sandbox", "max_concurrency", 1),
    ]:
        assert _fingerprint(_with(settings, section, field, value)) == base, (section, field)
    # with no task served every row runs the base model, whatever basis the bank holds
    plain = _fingerprint(settings, served={}, basis_id=None)
    assert _fingerprint(settings, served={}, basis_id="basis-a") == plain
    assert _fingerprint(settings, served={}, basis_id="basis-b") == plain != base


def test_served_outcomes_after_take_each_promoted_candidates_own_outcomes() -> None:
    served = {"g0": False, "g1": True, "g2": False, "g3": True, "g4": False}
    # a one-shot gate runs each candidate on the problems routed to its task
    runs = {"moves": {"g0": True, "g1": False}, "mutability": {"g2": True, "g3": False}}
    before = dict(served)
    assert served_outcomes_after(served, runs, []) == served
    assert served_outcomes_after(served, runs, ["moves"]) == {
        "g0": True,
        "g1": False,
        "g2": False,
        "g3": True,
        "g4": False,
    }
    assert served_outcomes_after(served, runs, ["mutability", "moves"]) == {
        "g0": True,
        "g1": False,
        "g2": True,
        "g3": False,
        "g4": False,
    }
    assert served == before  # not changed in place
    # a merge ran on every problem: promoted, its outcomes are the served ones
    merge = {"g0": True, "g1": True, "g2": True, "g3": False, "g4": False}
    assert served_outcomes_after(served, {MERGE_CANDIDATE: merge}, [MERGE_CANDIDATE]) == merge
    with pytest.raises(ValueError, match="both ran 'g0'"):
        served_outcomes_after(served, {"a": {"g0": True}, "b": {"g0": False}}, ["a", "b"])
    with pytest.raises(ValueError, match="not in the gate pool"):
        served_outcomes_after(served, {"a": {"g9": True}}, ["a"])


def test_served_gate_after_carries_the_fingerprint_the_next_night_computes(tmp_path: Path) -> None:
    """After a promotion the recorded fingerprint is the one of the promoted configuration, computed the way
    the next night computes it from what it serves; with nothing promoted it is the night's own."""
    settings = Settings(data_dir=tmp_path)
    tonight = gate_fingerprint(
        model=MODEL,
        served={"moves": 3},
        basis_id="basis-a",
        settings=settings,
        problems=_problems(),
        platform=PLATFORM,
    )
    outcomes = {p.id: False for p in _problems()}
    unchanged = served_gate_after(tonight, {"moves": 3}, "basis-a", outcomes)
    assert unchanged["fingerprint"] == fingerprint_sha256(tonight)
    assert unchanged["outcomes"] == outcomes
    promoted = served_gate_after(tonight, {"moves": 4, "traits": 1}, "basis-a", outcomes)
    assert promoted["served"] == {"versions": {"moves": 4, "traits": 1}, "basis_id": "basis-a"}
    assert promoted["fingerprint"] == _fingerprint(settings, served={"traits": 1, "moves": 4})
    assert promoted["fingerprint"] != unchanged["fingerprint"]


def test_cpuinfo_gives_the_model_name_and_the_kernel_flags() -> None:
    text = (
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
        "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_int8 avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: another\nflags\t\t: fpu\n"
    )
    info = parse_cpuinfo(text)
    assert info.model == "Intel(R) Xeon(R) Platinum 8481C"
    assert "fpu" in info.flags and "avx_vnni" not in info.flags
    assert info.kernel_flags() == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"]
    assert info.kernel_flags() == [f for f in KERNEL_FLAGS if f in info.flags]
    empty = parse_cpuinfo("processor\t: 0\nisa\t\t: rv64imafdc\n")
    assert (empty.model, empty.flags, empty.kernel_flags()) == ("", frozenset(), [])


# ------------------------------------------------------------------------------------ nights (tiny model)


class GateCalls:
    """Counts the gate-pool problems each night hands ``service.night.evaluate_problems`` (the real function
    runs), and with ``record`` the model's greedy replies while the night's first gate-pool evaluation runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[str]] = []  # gate-problem ids per call with gate problems
        self.replies: list[tuple[str, object, str]] = []  # (prompt, key, reply) of the first such call
        self._recording = False
        real = night_module.evaluate_problems

        def counted(serving: Any, problems: Any, strategy: Any, progress: Any = None) -> Any:
            ids = [p.id for p in problems if p.id.startswith("gate-")]
            first = bool(ids) and not self.calls
            if ids:
                self.calls.append(ids)
            self._recording = first
            try:
                return real(serving, problems, strategy, progress)
            finally:
                self._recording = False

        monkeypatch.setattr(night_module, "evaluate_problems", counted)

    def factory(self, settings: Settings) -> Any:
        from service.compose import load_runtime

        def make() -> Any:
            runtime = load_runtime(settings)
            real = runtime.generate

            def generate(prompts: Any, params: Any, keys: Any = None, snapshot: Any = None) -> Any:
                out = real(prompts, params, keys, snapshot)
                if self._recording:
                    for i, (prompt, result) in enumerate(zip(prompts, out, strict=True)):
                        key = tuple(keys[i]) if keys is not None and keys[i] is not None else None
                        self.replies.append((json.dumps(prompt), key, result.text))
                return out

            runtime.generate = generate  # type: ignore[method-assign]
            return runtime

        return make

    def night(self, services: Services) -> tuple[int, dict[str, Any], str, list[list[str]], list[Any]]:
        """One night: its id, summary, log, gate-problem calls and recorded replies."""
        self.calls, self.replies = [], []
        run_id, summary, log = run_night(services)
        return run_id, summary, log, self.calls, sorted(self.replies, key=repr)


def _evaluated(calls: list[list[str]]) -> int:
    return sum(len(ids) for ids in calls)


@pytest.fixture
def small_settings(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Settings]:
    settings = make_settings(tmp_path, tiny_model_dir)
    settings.share.merge_every = 0  # Phase 2 nights only (the merge night has its own test in test_night.py)
    settings.night.eval_limit = 2
    settings.night.gate_pool = 3
    yield settings


@pytest.mark.slow
def test_a_night_on_an_unchanged_served_configuration_reuses_the_gate_baseline(
    small_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is promoted (the tiny model shows no gain and the sign test is on), so night 2 serves what night 1
    served, the base model (now with the Share layers of night 1's basis attached, none of them routed to):
    night 2 reuses night 1's gate-pool outcomes instead of running them, and night 3 with the reuse switched
    off runs them and gets the same outcomes, from the same replies as night 1's base model."""
    settings = small_settings
    settings.night.gate_alpha = 0.05
    settings.night.gate_min_net_gain = 2
    gate = GateCalls(monkeypatch)
    services = Services.build(settings, runtime_factory=gate.factory(settings))

    first, one, log1, calls1, replies1 = gate.night(services)
    verified = one["gate_pool"]["verified"]
    pool = sorted(one["gate_outcomes"]["served"])
    assert verified == len(pool) >= 1 and one["promoted"] == []
    assert "gate_baseline_reused_from" not in one and "reused from" not in log1
    assert sorted(calls1[0]) == pool  # the baseline ran the whole pool, then each candidate its routed part
    after = one["served_gate_after"]
    assert after["fingerprint"] == one["gate_fingerprint"]["sha256"]  # nothing promoted: what it found
    assert after["served"] == {"versions": {}, "basis_id": None}
    assert after["outcomes"] == one["gate_outcomes"]["served"]
    assert replies1 and all(key is None for _, key, _ in replies1)

    _, two, log2, calls2, _ = gate.night(services)
    assert "losses" in two and "seed_steps" not in two and two["promoted"] == []  # Phase 2, night 1's basis
    assert two["gate_baseline_reused_from"] == first
    assert two["gate_fingerprint"]["sha256"] == after["fingerprint"]
    assert f"gate baseline: {verified} outcomes reused from night #{first}" in log2
    assert two["gate_outcomes"]["served"] == after["outcomes"]
    # the baseline stage counted only the eval koans; no call ran the served model on the whole pool
    assert "progress: baseline 0/2," in log2 and f"progress: baseline 0/{2 + verified}," in log1
    assert _evaluated(calls2) == _evaluated(calls1) - verified

    settings.night.reuse_gate_baseline = False
    _, three, log3, calls3, replies3 = gate.night(services)
    assert "gate_baseline_reused_from" not in three
    assert three["gate_fingerprint"]["sha256"] == after["fingerprint"]
    assert f"progress: baseline 0/{2 + verified}," in log3
    assert sorted(calls3[0]) == pool and _evaluated(calls3) == _evaluated(calls2) + verified
    assert three["gate_outcomes"]["served"] == two["gate_outcomes"]["served"]
    # not only the outcomes (the tiny model fixes nothing): the very replies of night 1's base model, which
    # ran without Share layers, and of night 3's, with the layers attached and no task routed to them
    assert replies3 == replies1
    services.stop()


@pytest.mark.slow
def test_the_gate_baseline_follows_what_is_served_through_promotions_and_rollbacks(
    small_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statistics are off (make_settings), so every night promotes its candidates. Night 1 records the
    promoted configuration's outcomes (its candidates' on their routed problems), and night 2, which serves
    that configuration, reuses them. A rollback between nights changes what is served: night 3 (one task
    rolled back) matches no recorded configuration and runs its baseline; after rolling both tasks back to
    night 1's versions, night 4 serves night 1's promoted configuration again and reuses night 1's outcomes."""
    settings = small_settings
    gate = GateCalls(monkeypatch)
    services = Services.build(settings, runtime_factory=gate.factory(settings))

    first, one, _, calls1, _ = gate.night(services)
    verified = one["gate_pool"]["verified"]
    assert sorted(one["promoted"]) == ["moves@v1", "mutability@v1"]
    after1 = one["served_gate_after"]
    assert after1["served"] == {"versions": {"moves": 1, "mutability": 1}, "basis_id": one["basis_id"]}
    assert after1["fingerprint"] != one["gate_fingerprint"]["sha256"]  # the base model's, before
    assert set(after1["outcomes"]) == set(one["gate_outcomes"]["served"])

    _, two, log2, calls2, _ = gate.night(services)
    served2 = two["gate_fingerprint"]["components"]["served"]
    assert served2 == after1["served"]
    assert two["gate_baseline_reused_from"] == first
    assert two["gate_outcomes"]["served"] == after1["outcomes"]
    assert f"gate baseline: {verified} outcomes reused from night #{first}" in log2
    assert _evaluated(calls2) == _evaluated(calls1) - verified
    assert sorted(two["promoted"]) == ["moves@v2", "mutability@v2"]
    assert two["served_gate_after"]["served"]["versions"] == {"moves": 2, "mutability": 2}

    assert services.rollback("moves", 1) == 1  # the admin endpoint's action, between nights
    _, three, log3, calls3, _ = gate.night(services)
    assert three["gate_fingerprint"]["components"]["served"]["versions"] == {"moves": 1, "mutability": 2}
    assert "gate_baseline_reused_from" not in three and "reused from" not in log3
    assert sorted(calls3[0]) == sorted(one["gate_outcomes"]["served"])  # the whole pool was run
    assert _evaluated(calls3) == _evaluated(calls2) + verified

    assert services.rollback("moves", 1) == 1 and services.rollback("mutability", 1) == 1
    _, four, log4, calls4, _ = gate.night(services)
    assert four["gate_fingerprint"]["sha256"] == after1["fingerprint"]
    assert four["gate_baseline_reused_from"] == first  # not night 3's, which ended serving v3
    assert four["gate_outcomes"]["served"] == after1["outcomes"]
    assert f"gate baseline: {verified} outcomes reused from night #{first}" in log4
    assert _evaluated(calls4) == _evaluated(calls3) - verified
    services.stop()
