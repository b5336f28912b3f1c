"""The generated training set: enough distinct draws, each family's draws verified through the sandbox, and
none reproducing an eval koan. (The full run is `dreamfix koans generate`; figures in docs/koans.md.)"""

from __future__ import annotations

import pytest

from agent.dataset import build_dataset, reproduces_eval
from agent.generators import draw_unique, normalize, registry
from agent.koans import eval_koans, load_koans
from agent.sandbox import Sandbox, SandboxConfig


def test_every_family_has_a_generator() -> None:
    assert {k.family for k in load_koans()} <= set(registry())


def test_generators_yield_at_least_2000_distinct_programs() -> None:
    total = 0
    for family, generate in registry().items():
        draws = draw_unique(generate, 120, seed=0)
        assert len(draws) >= 100, f"{family}: only {len(draws)} distinct draws"
        assert len({normalize(e.broken) for e in draws}) == len(draws)
        assert all(e.family == family and e.codes is not None for e in draws)
        total += len(draws)
    assert total >= 2000


def test_draws_are_deterministic_per_seed() -> None:
    for generate in registry().values():
        assert draw_unique(generate, 5, seed=3) == draw_unique(generate, 5, seed=3)


def test_an_eval_koan_is_recognised_as_reproduced() -> None:
    from agent.generators import Example

    koan = eval_koans()[0]
    targets = [normalize(k.broken) for k in eval_koans()]
    copy = Example(
        koan.family, "copy", koan.broken + "\n// renamed nothing\n", koan.fixed, koan.tests, koan.codes
    )
    assert reproduces_eval(copy, targets)


@pytest.mark.slow
def test_a_sample_of_every_family_verifies_in_the_sandbox() -> None:
    examples, reports = build_dataset(Sandbox(SandboxConfig()), eval_koans(), per_family=3, seed=11)
    for report in reports:
        assert report.invalid == 0, (report.family, report.failures)
        assert report.too_close == 0, report.family
        assert report.closest_similarity is not None and report.closest_similarity < 0.9
    assert len(examples) == 3 * len(reports)
