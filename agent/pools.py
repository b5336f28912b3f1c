"""Gate pool and test pool: generated problems from held-out generator seeds, kept apart from everything else.

* The *gate pool* decides promotion (service/gate.py); the *test pool* is only reported, so selection never
  sees the problems the score is measured on.
* Both are drawn from seeds in a namespace training never uses (night draws use ``seed = run_id``, small
  integers; pools use ``POOL_SEED_BASE + …``), and — because different seeds can still produce the same
  program — they are also made disjoint *by normalised source hash* of the broken and fixed programs from
  each other, from the eval koans, and from any training draws passed in. ``Pools.blocks`` lets the night drop
  a training draw that hashes into a pool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.generators import Example, draw_unique, normalize, registry
from agent.koans import Koan

POOL_SEED_BASE = 7_000_000_000
GATE_SEED = POOL_SEED_BASE + 1
TEST_SEED = POOL_SEED_BASE + 2
POOL_SIZE = 200  # problems per pool by default (about 10 per family)


def source_hash(source: str) -> str:
    """sha256 of the normalised program (comments and layout do not change it)."""
    return hashlib.sha256(normalize(source).encode()).hexdigest()


def example_hashes(example: Example | Koan) -> set[str]:
    return {source_hash(example.broken), source_hash(example.fixed)}


@dataclass
class Pools:
    gate: list[Example]
    test: list[Example]
    _hashes: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        for example in (*self.gate, *self.test):
            self._hashes |= example_hashes(example)

    def blocks(self, source: str) -> bool:
        """True when ``source`` (a training draw's broken or fixed program) normalises into either pool."""
        return source_hash(source) in self._hashes


def _draw_pool(n: int, seed: int, taken: set[str], families: Sequence[str] | None) -> list[Example]:
    gens = registry()
    names = sorted(families) if families is not None else sorted(gens)
    if n <= 0 or not names:
        return []
    out: list[Example] = []
    for index, family in enumerate(names):
        per_family = n // len(names) + (index < n % len(names))
        # a generous draw per family, then the first ``per_family`` whose hashes are still free
        candidates = draw_unique(gens[family], per_family * 3, seed=seed * 1000 + index)
        kept = 0
        for example in candidates:
            if kept >= per_family:
                break
            hashes = example_hashes(example)
            if hashes & taken:
                continue
            taken |= hashes
            out.append(example)
            kept += 1
    return out


def build_pools(
    gate_n: int,
    test_n: int,
    eval_koans: Iterable[Koan],
    training: Iterable[Example | Koan] = (),
    *,
    families: Sequence[str] | None = None,
    gate_seed: int = GATE_SEED,
    test_seed: int = TEST_SEED,
) -> Pools:
    """Deterministic gate and test pools (≈ ``gate_n``/``test_n`` problems spread evenly over the families),
    disjoint by normalised hash from each other, the eval koans and ``training``. Verification through the
    sandbox (broken fails, fixed passes its tests) is the caller's (``agent.dataset.verify_examples``)."""
    taken: set[str] = set()
    for item in (*eval_koans, *training):
        taken |= example_hashes(item)
    gate = _draw_pool(gate_n, gate_seed, taken, families)
    test = _draw_pool(test_n, test_seed, taken, families)
    return Pools(gate, test)
