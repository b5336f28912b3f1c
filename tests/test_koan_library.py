"""The shape of the koan library (whether each koan really breaks and really gets fixed is `dreamfix koans
validate`, run by CI over the whole library)."""

from __future__ import annotations

from collections import Counter

from agent.koans import load_koans

REQUIRED_CODES = {
    "E0382", "E0499", "E0502", "E0505", "E0507", "E0596", "E0594", "E0384", "E0106", "E0597", "E0515",
    "E0716", "E0373", "E0277", "E0599", "E0369", "E0308", "E0425", "E0432", "E0433", "E0603", "E0616",
    "E0061", "E0046", "E0004", "E0282",
}  # fmt: skip


def test_at_least_200_koans_in_16_families_with_a_frozen_third() -> None:
    koans = load_koans()
    assert len(koans) >= 200
    families = Counter(k.family for k in koans)
    assert len(families) >= 16
    for family, n in families.items():
        evals = sum(1 for k in koans if k.family == family and k.split == "eval")
        assert 3 * evals >= n, f"{family}: {evals} of {n} eval"
        assert evals < n, f"{family}: nothing to train on"


def test_the_everyday_error_codes_are_covered() -> None:
    covered = {c for k in load_koans() for c in k.codes}
    assert covered >= REQUIRED_CODES, sorted(REQUIRED_CODES - covered)


def test_koans_are_small_distinct_programs() -> None:
    koans = load_koans()
    for k in koans:
        lines = len(k.broken.strip().splitlines())
        assert 5 <= lines <= 60, f"{k.id}: {lines} lines"
        assert k.broken != k.fixed, k.id
        assert "#[test]" in k.tests, k.id
    assert len({k.broken for k in koans}) == len(koans)
    assert sum(len(k.codes) >= 2 for k in koans) >= 20  # multi-error programs
    assert {k.edition for k in koans} >= {"2021", "2024"}
    assert {k.mode for k in koans} == {"bin", "lib", "test"}
