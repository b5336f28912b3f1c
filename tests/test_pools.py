"""Gate/test pools (agent/pools.py) from the real generators and the real koan library."""

from __future__ import annotations

import random

from agent.generators import registry
from agent.koans import eval_koans, train_koans
from agent.pools import build_pools, example_hashes, source_hash


def _training_draws(seeds: range, per_family: int = 3) -> list:
    """What the night draws for training: ``generated_pairs`` uses ``random.Random(run_id)`` over families."""
    gens = registry()
    out = []
    for seed in seeds:
        rng = random.Random(seed)
        for family in sorted(gens):
            for _ in range(per_family):
                out.append(gens[family](rng))
    return out


def test_source_hash_ignores_layout_and_comments() -> None:
    assert source_hash("fn main() {\n    let x = 1; // one\n}") == source_hash("fn main() { let x = 1; }")
    assert source_hash("fn main() { let x = 1; }") != source_hash("fn main() { let x = 2; }")


def test_pools_are_disjoint_from_each_other_evals_and_training() -> None:
    evals = eval_koans()
    training = [*train_koans(), *_training_draws(range(1, 6))]
    pools = build_pools(60, 60, evals, training)
    assert len(pools.gate) >= 50 and len(pools.test) >= 50
    gate = set().union(*(example_hashes(e) for e in pools.gate))
    test = set().union(*(example_hashes(e) for e in pools.test))
    evals_h = set().union(*(example_hashes(k) for k in evals))
    train_h = set().union(*(example_hashes(t) for t in training))
    assert not gate & test
    assert not (gate | test) & evals_h
    assert not (gate | test) & train_h
    assert len({source_hash(e.broken) for e in pools.gate}) == len(pools.gate)
    assert {e.family for e in pools.gate} == set(registry())


def test_pools_are_deterministic_and_block_colliding_training_draws() -> None:
    first = build_pools(20, 20, eval_koans())
    second = build_pools(20, 20, eval_koans())
    assert [e.broken for e in first.gate] == [e.broken for e in second.gate]
    assert [e.broken for e in first.test] == [e.broken for e in second.test]
    planted = first.gate[0]
    reformatted = planted.broken.replace("\n", "\n  // layout only\n")
    assert first.blocks(reformatted)
    assert first.blocks(first.test[-1].fixed)
    fresh = [t for t in _training_draws(range(1, 3)) if not first.blocks(t.broken)]
    assert fresh  # ordinary training draws mostly stay


def test_excluding_a_draw_keeps_it_out_of_the_pools() -> None:
    base = build_pools(20, 0, eval_koans())
    excluded = base.gate[:5]
    again = build_pools(20, 0, eval_koans(), training=excluded)
    hashes = set().union(*(example_hashes(e) for e in again.gate))
    for example in excluded:
        assert not example_hashes(example) & hashes
