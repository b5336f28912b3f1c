"""Parametric training-data generators, one module per koan family.

Each module ``agent/generators/<family>.py`` defines ``FAMILY`` and ``generate(rng) -> Example``: one random
draw of a (broken, fixed, tests) triple. Variety comes from several program shapes per family with random
names, types, values and structure. Everything here is pure text; verification through the sandbox and the
guarantee that nothing reproduces an eval koan are done by ``build_dataset``'s callers (``dreamfix koans
generate``), which use ``normalize``/``similarity`` below.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.koans import Koan


@dataclass(frozen=True)
class Example:
    family: str
    shape: str  # which program shape of the family produced it
    broken: str
    fixed: str
    tests: str
    codes: tuple[str, ...]
    mode: str = "bin"
    edition: str = "2021"


Generator = Callable[[random.Random], Example]


def registry() -> dict[str, Generator]:
    """family -> generate function, for every generator module in this package."""
    found: dict[str, Generator] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[module.FAMILY] = module.generate
    return found


_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_SPACE = re.compile(r"\s+")


def normalize(source: str) -> str:
    """Comments removed, whitespace collapsed: two programs that differ only in layout normalise equal."""
    return _SPACE.sub(" ", _COMMENT.sub(" ", source)).strip()


_TOKEN = re.compile(r"\w+|[^\w\s]")


@functools.lru_cache(maxsize=8192)
def _tokens(normalised: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(normalised))


def _matcher(a: str, b: str) -> difflib.SequenceMatcher[str]:
    """Compared token by token (identifiers, literals, punctuation): ~5x fewer elements than characters, so
    the quadratic matcher is fast enough to compare thousands of draws with every eval koan."""
    return difflib.SequenceMatcher(None, _tokens(a), _tokens(b), autojunk=False)


def similarity(a: str, b: str) -> float:
    """Similarity in [0, 1] of two normalised programs (difflib ratio over tokens); distance = 1 - it."""
    return _matcher(a, b).ratio()


def near_any(text: str, targets: Iterable[str], limit: float) -> bool:
    """True when normalised ``text`` is at least ``limit``-similar to any normalised target. The cheap upper
    bounds (length ratio, character multiset) prune almost every pair before the quadratic ratio."""
    for target in targets:
        matcher = _matcher(text, target)
        if matcher.real_quick_ratio() < limit or matcher.quick_ratio() < limit:
            continue
        if matcher.ratio() >= limit:
            return True
    return False


def draw_unique(generate: Generator, n: int, seed: int, max_tries_factor: int = 20) -> list[Example]:
    """Up to ``n`` examples with pairwise-distinct normalised broken programs (deterministic for a seed)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[Example] = []
    for _ in range(n * max_tries_factor):
        if len(out) >= n:
            break
        example = generate(rng)
        key = normalize(example.broken)
        if key in seen:
            continue
        seen.add(key)
        out.append(example)
    return out


def closest_to_eval(examples: Iterable[Example], eval_koans: Iterable[Koan]) -> tuple[float, str | None]:
    """The highest similarity between any example and any eval koan (broken or fixed), and that koan's id."""
    targets = [(k.id, normalize(k.broken)) for k in eval_koans] + [
        (k.id, normalize(k.fixed)) for k in eval_koans
    ]
    best, best_id = 0.0, None
    for example in examples:
        text = normalize(example.broken)
        for koan_id, target in targets:
            matcher = _matcher(text, target)
            if matcher.real_quick_ratio() <= best or matcher.quick_ratio() <= best:
                continue
            ratio = matcher.ratio()
            if ratio > best:
                best, best_id = ratio, koan_id
    return best, best_id
