"""The generators' shared helpers (agent/generators/_common.py): every kernel shape of the kernel-based
families, drawn through them, still verifies in the real sandbox (a kernel's ``use`` lines reach both the
broken and the fixed program)."""

from __future__ import annotations

import random

from agent.dataset import verify_examples
from agent.generators import Example, Generator, generics, traits, type_mismatch
from agent.sandbox import Sandbox, SandboxConfig


def _one_draw_per_shape(generate: Generator, draws: int) -> dict[str, Example]:
    seen: dict[str, Example] = {}
    for seed in range(draws):
        example = generate(random.Random(seed))
        if "+" not in example.shape:  # single-kernel draws: a failure names its shape
            seen.setdefault(example.shape, example)
    return seen


def test_every_kernel_shape_verifies_and_keeps_its_use_lines() -> None:
    examples: list[Example] = []
    for module in (generics, traits, type_mismatch):
        shapes = _one_draw_per_shape(module.generate, 120)
        assert len(shapes) >= 4, (module.FAMILY, sorted(shapes))
        examples += shapes.values()
    phantom = next(e for e in examples if e.shape == "phantom")
    assert phantom.broken.startswith("use std::marker::PhantomData;")
    assert phantom.fixed.startswith("use std::marker::PhantomData;")
    problems = verify_examples(Sandbox(SandboxConfig()), examples)
    assert [(e.family, p) for e, p in zip(examples, problems, strict=True) if p] == []
