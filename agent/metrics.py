"""Evaluation metrics over the loop's ProblemRecords: what `dreamfix eval` prints and the night job's gate uses.

* pass rate — fixed AND verified (compiles and the koan's tests pass); an unverified "fix" never counts.
* repeat-error rate — of the failed attempts, the share whose error signature equals the previous state's
  (the previous attempt's result, or the original program for the first attempt). The signature here is the
  verdict plus the sorted error codes, so it can be computed from stored records alone; it is what shows a
  loop going round in circles.
* median steps to green — attempts used by the problems that were fixed (0 = already compiled).
* regressions — problems a baseline run fixed and this run did not.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agent.episodes import AttemptRecord, ProblemRecord

ALL = "ALL"


def passed(record: ProblemRecord) -> bool:
    return record.fixed and record.verified


def pass_rate(records: Sequence[ProblemRecord]) -> float:
    return sum(passed(r) for r in records) / len(records) if records else 0.0


def _signature(verdict: str, codes: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    return verdict, tuple(sorted(codes))


def repeat_flags(record: ProblemRecord) -> list[bool]:
    """For each failed attempt of a problem: did it end in the same error signature as the state before?"""
    flags: list[bool] = []
    previous: tuple[str, tuple[str, ...]] | None = None
    for attempt in record.attempts:
        before = previous if previous is not None else _signature("compile_error", attempt.error_codes_before)
        after = _signature(attempt.verdict, attempt.error_codes_after)
        if not attempt.fixed:
            flags.append(after == before)
        previous = after
    return flags


def repeat_error_rate(records: Iterable[ProblemRecord]) -> float | None:
    """Share of failed attempts that repeated the previous error signature; None when no attempt failed."""
    flags = [flag for record in records for flag in repeat_flags(record)]
    return sum(flags) / len(flags) if flags else None


def median_steps_to_green(records: Iterable[ProblemRecord]) -> float | None:
    steps = [r.steps_to_green for r in records if passed(r) and r.steps_to_green is not None]
    return float(statistics.median(steps)) if steps else None


def regressions(baseline: Iterable[ProblemRecord], current: Iterable[ProblemRecord]) -> list[str]:
    """Ids the baseline fixed (verified) that the current run did not, among problems both runs attempted."""
    now = {r.problem_id: passed(r) for r in current}
    return sorted(
        r.problem_id for r in baseline if passed(r) and r.problem_id in now and not now[r.problem_id]
    )


def _attempts(records: Iterable[ProblemRecord]) -> list[AttemptRecord]:
    return [a for r in records for a in r.attempts]


@dataclass(frozen=True)
class FamilyStats:
    family: str
    problems: int
    fixed: int
    pass_rate: float
    repeat_error_rate: float | None
    median_steps: float | None
    attempts: int
    wall_seconds: float  # when the last problem of the family was settled, from the start of the run
    generate_seconds: float
    check_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stats(family: str, records: list[ProblemRecord]) -> FamilyStats:
    attempts = _attempts(records)
    return FamilyStats(
        family=family,
        problems=len(records),
        fixed=sum(passed(r) for r in records),
        pass_rate=pass_rate(records),
        repeat_error_rate=repeat_error_rate(records),
        median_steps=median_steps_to_green(records),
        attempts=len(attempts),
        wall_seconds=max((r.wall_seconds for r in records), default=0.0),
        generate_seconds=sum(a.generate_seconds for a in attempts),
        check_seconds=sum(a.check_seconds for a in attempts),
    )


def by_family(records: Sequence[ProblemRecord]) -> dict[str, FamilyStats]:
    """Stats per family (sorted) plus the ``ALL`` row over every record."""
    groups: dict[str, list[ProblemRecord]] = {}
    for record in records:
        groups.setdefault(record.family or "-", []).append(record)
    table = {family: _stats(family, groups[family]) for family in sorted(groups)}
    table[ALL] = _stats(ALL, list(records))
    return table


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def format_family_table(stats: dict[str, FamilyStats], title: str = "") -> str:
    """A plain-text table: family, n, fixed, pass rate, repeat-error rate, median steps, attempts, times."""
    header = f"{'family':<16} {'n':>3} {'fixed':>5} {'pass':>6} {'repeat':>6} {'steps':>5} {'tries':>5} {'wall s':>8}"
    header += f" {'gen s':>8} {'check s':>7}"
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for name, s in stats.items():
        if name == ALL:
            lines.append("-" * len(header))
        lines.append(
            f"{s.family:<16} {s.problems:>3} {s.fixed:>5} {s.pass_rate:>6.1%} "
            f"{_fmt(s.repeat_error_rate, '{:.1%}'):>6} {_fmt(s.median_steps, '{:.1f}'):>5} {s.attempts:>5} "
            f"{s.wall_seconds:>8.1f} {s.generate_seconds:>8.1f} {s.check_seconds:>7.1f}"
        )
    return "\n".join(lines)
