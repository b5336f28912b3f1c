"""What several koan generators share: a program part, the assembly of parts into one example, the
bin-or-lib finish of a single-function draw. (The leading underscore keeps it out of ``registry()``.)"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from agent.generators import Example

P = TypeVar("P", bound="Part")


@dataclass
class Part:
    """One function (plus items) of a program: its broken and fixed text, tests and a line for main."""

    shape: str
    broken: str
    fixed: str
    tests: str
    demo: str
    codes: tuple[str, ...]


def finish(
    family: str,
    rng: random.Random,
    shape: str,
    broken: str,
    fixed: str,
    tests: str,
    codes: Iterable[str],
    demo: str,
) -> Example:
    """Half the draws are binaries with a small main that prints ``demo``; the rest are libraries."""
    mode = rng.choice(["bin", "lib"])
    if mode == "bin":
        main = f'\nfn main() {{\n    println!("{{:?}}", {demo});\n}}\n'
        broken, fixed = broken.rstrip() + "\n" + main, fixed.rstrip() + "\n" + main
    return Example(family, shape, broken.lstrip(), fixed.lstrip(), tests.lstrip(), tuple(sorted(codes)), mode)


def publish(text: str, keywords: Sequence[str]) -> str:
    """Every top-level item starting with one of ``keywords`` (e.g. ``"fn "``) made ``pub``, for a library."""
    for kw in keywords:
        text = text.replace("\n" + kw, "\npub " + kw)
    return ("pub " + text) if text.startswith(tuple(keywords)) else text


def with_main(text: str, parts: Sequence[Part]) -> str:
    """The program with a ``main`` that runs every part's demo line."""
    return text + "\nfn main() {\n" + "\n".join(p.demo for p in parts) + "\n}\n"


def parts_example(
    family: str, parts: Sequence[Part], mode: str, broken: str, fixed: str, edition: str = "2021"
) -> Example:
    """The example of assembled parts: their shapes joined, their tests together, every code they declare."""
    return Example(
        family=family,
        shape="+".join(p.shape for p in parts),
        broken=broken,
        fixed=fixed,
        tests="\n".join(p.tests for p in parts),
        codes=tuple(sorted({c for p in parts for c in p.codes})),
        mode=mode,
        edition=edition,
    )


def assemble(
    family: str, rng: random.Random, parts: Sequence[Part], public: Sequence[str], edition: str = "2021"
) -> Example:
    """Two binaries in three (a main running the demos), else a library whose ``public`` items are pub."""
    mode = rng.choice(["bin", "bin", "lib"])

    def body(texts: list[str]) -> str:
        out = "\n".join(texts)
        return publish(out, public) if mode == "lib" else with_main(out, parts)

    return parts_example(
        family, parts, mode, body([p.broken for p in parts]), body([p.fixed for p in parts]), edition
    )


def one_or_two(rng: random.Random, shapes: Sequence[Callable[[random.Random], P]]) -> list[P]:
    """One drawn shape's part, and in a quarter of the draws a second, different shape's."""
    first = rng.choice(shapes)
    parts = [first(rng)]
    if rng.random() < 0.25:
        parts.append(rng.choice([s for s in shapes if s is not first])(rng))
    return parts


@dataclass
class Kernel:
    """One self-contained piece of a kernel-based program (its items, main lines, tests, ``use`` lines)."""

    shape: str
    codes: set[str]
    broken: str
    fixed: str
    main: list[str] = field(default_factory=list)
    tests: str = ""
    uses_broken: list[str] = field(default_factory=list)
    uses_fixed: list[str] = field(default_factory=list)


def kernels_example(family: str, kernels: Sequence[Kernel], mode: str) -> Example:
    """The kernels as one program: their ``use`` lines on top, a main running their main lines for a bin."""

    def program(broken: bool) -> str:
        uses = sorted({u for k in kernels for u in (k.uses_broken if broken else k.uses_fixed)})
        body = "\n\n".join(k.broken if broken else k.fixed for k in kernels)
        if uses:
            body = "\n".join(uses) + "\n\n" + body
        if mode == "bin":
            lines = "".join(f"    {line}\n" for k in kernels for line in k.main)
            body += f"\n\nfn main() {{\n{lines}}}"
        return body + "\n"

    codes: set[str] = set().union(*(k.codes for k in kernels))
    shape = "+".join(k.shape for k in kernels)
    tests = "\n".join(k.tests for k in kernels)
    return Example(family, shape, program(True), program(False), tests, tuple(sorted(codes)), mode=mode)
