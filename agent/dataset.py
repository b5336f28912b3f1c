"""The generated training set: many distinct, verified (broken, fixed, tests) examples per family that never
reproduce an eval koan.

Verified means what it means for koans: the broken program fails with exactly the declared codes and the fix
compiles and passes its tests, all through the sandbox. "Never reproduces an eval koan" is checked by
normalised-text similarity against every eval koan (broken and fixed); the closest distance per family is
reported so a drifting generator is caught.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agent.generators import Example, closest_to_eval, draw_unique, near_any, normalize, registry
from agent.koans import Koan
from agent.sandbox import Job, Sandbox

#: A generated program at least this similar to an eval koan is dropped (never trained on).
MAX_EVAL_SIMILARITY = 0.9


@dataclass
class FamilyReport:
    family: str
    drawn: int = 0
    valid: int = 0
    invalid: int = 0
    too_close: int = 0
    closest_similarity: float | None = None
    closest_koan: str | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def closest_distance(self) -> float | None:
        return None if self.closest_similarity is None else 1.0 - self.closest_similarity


def reproduces_eval(example: Example, targets: Sequence[str]) -> bool:
    """True when the example's broken or fixed program is at least MAX_EVAL_SIMILARITY-similar to any target
    (normalised eval programs)."""
    return any(
        near_any(normalize(text), targets, MAX_EVAL_SIMILARITY) for text in (example.broken, example.fixed)
    )


def verify_examples(sandbox: Sandbox, examples: Sequence[Example]) -> list[str | None]:
    """None for a valid example, else why it is not."""
    broken = sandbox.check_many([Job(e.broken, e.mode, e.edition) for e in examples])
    fixed = sandbox.verify_many([Job(e.fixed, e.mode, e.edition, e.tests) for e in examples])
    problems: list[str | None] = []
    for e, b, f in zip(examples, broken, fixed, strict=True):
        if b.ok:
            problems.append(f"{e.shape}: broken program compiles")
        elif set(b.error_codes) != set(e.codes):
            problems.append(f"{e.shape}: codes {sorted(b.error_codes)} != declared {sorted(e.codes)}")
        elif not f.ok:
            problems.append(f"{e.shape}: fix fails ({f.verdict}) {f.message or ''}".strip())
        else:
            problems.append(None)
    return problems


def build_dataset(
    sandbox: Sandbox,
    eval_koans: Sequence[Koan],
    per_family: int,
    seed: int = 0,
    families: Iterable[str] | None = None,
    verify: bool = True,
    on_family: Callable[[FamilyReport], None] | None = None,
) -> tuple[list[Example], list[FamilyReport]]:
    """Draw, dedupe against the eval koans and verify ``per_family`` examples of each family; ``on_family``
    is called with each family's report as it completes (a progress bar)."""
    gens = registry()
    wanted = sorted(families) if families else sorted(gens)
    unknown = [f for f in wanted if f not in gens]
    if unknown:
        raise ValueError(f"no generator for {unknown}; known: {sorted(gens)}")
    kept: list[Example] = []
    reports: list[FamilyReport] = []
    targets = [normalize(k.broken) for k in eval_koans] + [normalize(k.fixed) for k in eval_koans]
    for family in wanted:
        report = FamilyReport(family)
        drawn = draw_unique(gens[family], per_family, seed)
        report.drawn = len(drawn)
        close: list[Example] = []
        ok: list[Example] = []
        for example in drawn:
            (close if reproduces_eval(example, targets) else ok).append(example)
        report.too_close = len(close)
        report.closest_similarity, report.closest_koan = closest_to_eval(ok, eval_koans)
        problems = verify_examples(sandbox, ok) if verify else [None] * len(ok)
        for example, problem in zip(ok, problems, strict=True):
            if problem is None:
                kept.append(example)
            else:
                report.failures.append(problem)
        report.invalid = sum(p is not None for p in problems)
        report.valid = len(ok) - report.invalid
        reports.append(report)
        if on_family is not None:
            on_family(report)
    return kept, reports


def write_jsonl(path: Path, examples: Iterable[Example]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for example in examples:
            fh.write(json.dumps(asdict(example)) + "\n")
            n += 1
    return n
