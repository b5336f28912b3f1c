"""What the experiments train and score on: per-task training examples and the frozen eval items.

Tasks are koan families (the router's task keys). Training examples come from the family's generator draws
(verified through the sandbox, dropped when they come close to any eval koan, exactly like the generated
training set) plus the family's *train* koans; eval koans never enter training. Every example and every
eval item is built by the one prompt builder (``agent.prompt``), so what the model learns is what it is
asked at inference.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.dataset import build_dataset
from agent.diagnostics import Diagnostic
from agent.koans import Koan, eval_koans, train_koans
from agent.loop import DEFAULT_OUTPUT_FORMAT
from agent.problems import Problem
from agent.prompt import build_messages, training_example
from agent.sandbox import Job, Sandbox
from router import TaskRouter

Messages = list[dict[str, str]]
Example = tuple[Messages, str]


@dataclass(frozen=True)
class EvalItem:
    """One frozen eval koan as the experiments see it: the prompt the agent would send, the verified
    reference fix as the answer the model is trained to give, and where the router sends it."""

    koan: Koan
    problem: Problem
    diagnostics: tuple[Diagnostic, ...]
    routed_task: str | None  # the router's choice from the koan's own diagnostics (None = base model)
    messages: Messages
    answer: str

    @property
    def id(self) -> str:
        return self.koan.id

    @property
    def family(self) -> str:
        return self.koan.family


def eval_items(
    sandbox: Sandbox,
    router: TaskRouter,
    *,
    families: Sequence[str] | None = None,
    per_family: int | None = None,
    hints: bool = False,
    koans_dir: Path | None = None,
) -> list[EvalItem]:
    """The eval split (optionally only some families, and the first ``per_family`` koans of each)."""
    koans = [k for k in eval_koans(koans_dir) if families is None or k.family in families]
    if per_family is not None:
        kept: list[Koan] = []
        counts: dict[str, int] = {}
        for koan in sorted(koans, key=lambda k: k.id):
            if counts.get(koan.family, 0) < per_family:
                kept.append(koan)
                counts[koan.family] = counts.get(koan.family, 0) + 1
        koans = kept
    checks = sandbox.check_many([Job(k.broken, k.mode, k.edition) for k in koans])
    items = []
    for koan, check in zip(koans, checks, strict=True):
        diagnostics = tuple(check.diagnostics)
        messages, answer = training_example(
            koan.broken, diagnostics, koan.fixed, hints, DEFAULT_OUTPUT_FORMAT
        )
        items.append(
            EvalItem(
                koan=koan,
                problem=Problem.from_koan(koan),
                diagnostics=diagnostics,
                routed_task=router.route(diagnostics).task,
                messages=messages,
                answer=answer,
            )
        )
    return items


def task_examples(
    sandbox: Sandbox,
    families: Sequence[str],
    *,
    per_task: int,
    seed: int = 0,
    hints: bool = False,
    koans_dir: Path | None = None,
) -> dict[str, list[Example]]:
    """Up to ``per_task`` (messages, answer) pairs per family: its train koans first, then generator draws.

    Generator draws are verified (the broken program fails with the declared codes, the fix passes its
    tests) and dropped when they nearly reproduce an eval koan (``agent.dataset.build_dataset``)."""
    evals = eval_koans(koans_dir)
    eval_texts = {k.broken.strip() for k in evals} | {k.fixed.strip() for k in evals}
    generated, _reports = build_dataset(sandbox, evals, per_family=per_task, seed=seed, families=families)
    pairs: dict[str, list[tuple[str, str, str, str]]] = {f: [] for f in families}
    for koan in train_koans(koans_dir):
        if koan.family in pairs:
            pairs[koan.family].append((koan.broken, koan.fixed, koan.mode, koan.edition))
    for example in generated:
        pairs[example.family].append((example.broken, example.fixed, example.mode, example.edition))
    out: dict[str, list[Example]] = {}
    for family, rows in pairs.items():
        rows = [r for r in rows if r[0].strip() not in eval_texts and r[1].strip() not in eval_texts]
        checks = sandbox.check_many([Job(broken, mode, edition) for broken, _, mode, edition in rows])
        examples = [
            training_example(broken, check.diagnostics, fixed, hints, DEFAULT_OUTPUT_FORMAT)
            for (broken, fixed, _, _), check in zip(rows, checks, strict=True)
            if not check.ok and check.diagnostics
        ]
        random.Random(f"{seed}:{family}").shuffle(examples)
        out[family] = examples[:per_task]
    return out


def prompt_for(item: EvalItem, hints: bool) -> Messages:
    """The item's prompt with or without error-specific hints (the 'hints' strategy)."""
    return build_messages(
        item.problem.source, item.diagnostics, hints=hints, output_format=DEFAULT_OUTPUT_FORMAT
    )
