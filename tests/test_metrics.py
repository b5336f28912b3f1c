"""Eval metrics on hand-built records whose right answers can be counted by eye."""

from __future__ import annotations

import pytest

from agent.episodes import AttemptRecord, ProblemRecord
from agent.metrics import (
    ALL,
    by_family,
    format_family_table,
    median_steps_to_green,
    pass_rate,
    regressions,
    repeat_error_rate,
    repeat_flags,
)


def _attempt(i: int, before: list[str], after: list[str], verdict: str, fixed: bool = False) -> AttemptRecord:
    return AttemptRecord(
        problem_id="p",
        content_hash="h",
        attempt=i,
        strategy="model",
        route_task=None,
        route_version=None,
        prompt_hash=None,
        model_id="m",
        error_codes_before=before,
        error_codes_after=after,
        diff="",
        verdict=verdict,
        fixed=fixed,
        candidate="",
        generate_seconds=2.0,
        check_seconds=0.5,
    )


def _record(pid: str, family: str, attempts: list[AttemptRecord], verified: bool = True) -> ProblemRecord:
    fixed = any(a.fixed for a in attempts)
    steps = next((i + 1 for i, a in enumerate(attempts) if a.fixed), None)
    return ProblemRecord(
        problem_id=pid,
        content_hash=pid,
        family=family,
        source="",
        final_code="",
        fixed=fixed,
        verified=verified,
        steps_to_green=steps,
        final_status="fixed" if fixed else "unfixed",
        strategy="loop",
        error_codes=attempts[0].error_codes_before if attempts else [],
        attempts=attempts,
        wall_seconds=10.0 + len(attempts),
    )


def _run() -> list[ProblemRecord]:
    return [
        # fixed at once
        _record("moves-1", "moves", [_attempt(0, ["E0382"], [], "ok", True)]),
        # repeat, then other error, then fixed at step 3
        _record(
            "moves-2",
            "moves",
            [
                _attempt(0, ["E0382"], ["E0382"], "compile_error"),
                _attempt(1, ["E0382"], ["E0308"], "compile_error"),
                _attempt(2, ["E0382"], [], "ok", True),
            ],
        ),
        # never fixed: compiles-but-tests-fail twice in a row (a repeat), after a first different failure
        _record(
            "borrows-1",
            "borrows",
            [
                _attempt(0, ["E0502"], ["E0499"], "compile_error"),
                _attempt(1, ["E0502"], [], "test_failed"),
                _attempt(2, ["E0502"], [], "test_failed"),
            ],
        ),
        # "fixed" but unverified never counts as passed
        _record("borrows-2", "borrows", [_attempt(0, ["E0433"], [], "ok", True)], verified=False),
    ]


def test_pass_rate_counts_only_verified_fixes() -> None:
    records = _run()
    assert pass_rate(records) == pytest.approx(2 / 4)
    stats = by_family(records)
    assert (stats["moves"].fixed, stats["moves"].pass_rate) == (2, 1.0)
    assert (stats["borrows"].fixed, stats["borrows"].pass_rate) == (0, 0.0)
    assert stats[ALL].problems == 4 and stats[ALL].attempts == 8
    assert pass_rate([]) == 0.0


def test_repeat_error_rate_compares_each_failure_with_the_state_before_it() -> None:
    records = _run()
    assert repeat_flags(records[1]) == [True, False]
    assert repeat_flags(records[2]) == [False, False, True]
    # failed attempts: 2 + 3 = 5, of which 2 repeated
    assert repeat_error_rate(records) == pytest.approx(2 / 5)
    assert repeat_error_rate(records[:1]) is None


def test_median_steps_and_regressions() -> None:
    records = _run()
    assert median_steps_to_green(records) == 2.0  # steps 1 and 3 among verified fixes
    assert median_steps_to_green(records[2:]) is None
    baseline = [_record("moves-2", "moves", [_attempt(0, ["E0382"], [], "ok", True)])]
    baseline.append(_record("borrows-1", "borrows", [_attempt(0, ["E0502"], [], "ok", True)]))
    baseline.append(_record("other-9", "other", [_attempt(0, ["E0502"], [], "ok", True)]))
    # borrows-1 was fixed by the baseline, not now; other-9 was not attempted now, so it is no regression.
    assert regressions(baseline, records) == ["borrows-1"]


def test_family_table_lists_every_family_and_the_total() -> None:
    table = format_family_table(by_family(_run()), "== loop ==")
    lines = table.splitlines()
    assert lines[0] == "== loop =="
    assert any(line.startswith("moves") and "100.0%" in line for line in lines)
    assert any(line.startswith("borrows") and "0.0%" in line for line in lines)
    assert lines[-1].startswith("ALL") and "50.0%" in lines[-1] and "40.0%" in lines[-1]
