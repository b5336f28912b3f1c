"""The paired gate (service/gate.py): planted outcome vectors, real decision function."""

from __future__ import annotations

import random

import pytest

from service.gate import GateConfig, GateInputError, paired_gate, sign_test_p

FAMILIES = ("borrow", "lifetimes", "traits", "types")


def _pool(n: int = 200, base_rate: float = 0.3, seed: int = 0) -> tuple[dict[str, bool], dict[str, str]]:
    rng = random.Random(seed)
    served = {f"p{i:03d}": rng.random() < base_rate for i in range(n)}
    family_of = {pid: FAMILIES[i % len(FAMILIES)] for i, pid in enumerate(served)}
    return served, family_of


def test_sign_test_exact_values() -> None:
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(5, 0) == pytest.approx(1 / 32)
    assert sign_test_p(3, 3) == pytest.approx(42 / 64)
    assert sign_test_p(8, 2) == pytest.approx(56 / 1024)  # (1 + 10 + 45) / 2**10


def test_identical_candidate_is_rejected() -> None:
    served, family_of = _pool()
    result = paired_gate(served, dict(served), family_of)
    assert not result.promoted
    assert (result.wins, result.losses, result.p_value) == (0, 0, 1.0)


def test_noop_candidate_with_balanced_flips_is_rejected() -> None:
    """Sampling noise with no real effect: as many problems flip to fixed as flip to failed."""
    served, family_of = _pool()
    rng = random.Random(1)
    fixed = rng.sample([p for p, ok in served.items() if ok], 14)
    failed = rng.sample([p for p, ok in served.items() if not ok], 14)
    candidate = {pid: (pid in failed) or (ok and pid not in fixed) for pid, ok in served.items()}
    result = paired_gate(served, candidate, family_of)
    assert not result.promoted
    assert result.p_value > 0.05


def test_regressing_candidate_is_rejected() -> None:
    served, family_of = _pool()
    fixed = [pid for pid, ok in served.items() if ok]
    candidate = dict(served)
    for pid in fixed[:15]:
        candidate[pid] = False
    result = paired_gate(served, candidate, family_of)
    assert not result.promoted
    assert result.losses == 15 and result.wins == 0


def test_real_gain_is_promoted() -> None:
    served, family_of = _pool()
    failed = [pid for pid, ok in served.items() if not ok]
    fixed = [pid for pid, ok in served.items() if ok]
    candidate = dict(served)
    for pid in failed[:16]:
        candidate[pid] = True
    candidate[fixed[0]] = False  # a little noise the other way
    result = paired_gate(served, candidate, family_of)
    assert result.promoted, result.reason
    assert result.p_value < 0.05
    assert result.pass_after > result.pass_before


def test_gain_that_sinks_one_family_is_rejected() -> None:
    served, family_of = _pool()
    candidate = dict(served)
    gains = [p for p, ok in served.items() if not ok and family_of[p] != "traits"][:20]
    sunk = [p for p, ok in served.items() if ok and family_of[p] == "traits"][:3]
    for pid in gains:
        candidate[pid] = True
    for pid in sunk:
        candidate[pid] = False
    result = paired_gate(served, candidate, family_of, GateConfig(max_family_net_loss=1))
    assert not result.promoted
    assert "traits" in result.reason
    assert result.p_value < 0.05  # statistically a gain overall; the family cap still blocks it


def test_small_significant_gain_below_min_net_is_rejected() -> None:
    served = {"a": False, "b": False}
    family_of = {"a": "x", "b": "x"}
    result = paired_gate(served, {"a": True, "b": False}, family_of, GateConfig(alpha=0.6, min_net_gain=2))
    assert not result.promoted and "net gain" in result.reason


def test_mismatched_pools_are_refused() -> None:
    with pytest.raises(GateInputError):
        paired_gate({"a": True}, {"b": True}, {"a": "x", "b": "x"})
    with pytest.raises(GateInputError):
        paired_gate({}, {}, {})
    with pytest.raises(GateInputError):
        paired_gate({"a": True}, {"a": True}, {})


def test_alpha_one_and_no_minimum_gain_turn_the_statistics_off_but_keep_the_family_cap() -> None:
    served = {"a": False, "b": True}
    family_of = {"a": "f", "b": "g"}
    assert not paired_gate(served, dict(served), family_of).promoted  # a tie never passes the real gate
    off = GateConfig(alpha=1.0, min_net_gain=0, max_family_net_loss=0)
    assert paired_gate(served, dict(served), family_of, off).promoted
    assert not paired_gate(served, {"a": False, "b": False}, family_of, off).promoted
