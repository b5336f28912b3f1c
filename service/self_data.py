"""Self-generated verified training data (expert iteration / ReST-EM) for the night.

For every training problem the model is first asked greedily, with exactly the prompt serving sends
(``agent.prompt.build_messages``) and the route key serving would use (its task's served version). Every
reply is judged as the fix loop judges a fix (``agent.validation.judge_candidate``: it compiles, the tests
pass, and in ``test`` mode every original ``#[test]`` still exists, ran and passed, and no
``todo!()``/``unimplemented!()`` was added). A greedy reply the judge accepts is kept word for word. For a
problem the model fails greedily, ``k`` replies are sampled in one batch (temperature > 0; the runtime seeds
row i with ``seed + i``), each is parsed and judged, and every passing reply with a distinct fixed program is
kept word for word — the cause sentence the model wrote and its program — as a training target. Only where
no sample passes is the reference fix used, and then in the serving reply's shape: a cause sentence first,
then the program.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.diagnostics import Diagnostic
from agent.generators import normalize
from agent.hints import hints_for
from agent.loop import GenerateFn, RowKey, SampleFn
from agent.prompt import (
    OutputFormat,
    build_messages,
    error_codes_in_order,
    format_edits_answer,
    format_program_answer,
    parse_reply,
)
from agent.sandbox import Sandbox
from agent.validation import judge_candidate

Messages = list[dict[str, str]]
TargetKind = Literal["greedy", "sampled", "reference", "episode"]  # episode: a verified served reply


@dataclass(frozen=True)
class SelfProblem:
    """One training problem: its broken program, diagnostics, the reference fix and the tests a fix must pass."""

    source: str
    diagnostics: Sequence[Diagnostic]
    fixed: str
    mode: str = "bin"
    edition: str = "2021"
    tests: str | None = None
    key: RowKey = None  # the (task, version) its route serves it with (None = base)


@dataclass(frozen=True)
class Target:
    messages: Messages
    answer: str
    kind: TargetKind


@dataclass
class SelfDataStats:
    problems: int = 0
    greedy_pass: int = 0
    sampled_rescued: int = 0  # failed greedily, at least one sample verified
    sampled_targets: int = 0
    reference_only: int = 0
    samples: int = 0
    budget_skipped: int = 0  # never asked: the night's wall budget ended the data stage (reference kept)
    per_problem: list[TargetKind] = field(default_factory=list)

    @classmethod
    def combined(cls, parts: Sequence[SelfDataStats], *, problems: int) -> SelfDataStats:
        """The stats of several batches together; ``problems`` counts every problem, and those in no batch
        (the wall budget ended the stage) are ``budget_skipped``."""
        out = cls(problems=problems, budget_skipped=problems - sum(p.problems for p in parts))
        for part in parts:
            out.greedy_pass += part.greedy_pass
            out.sampled_rescued += part.sampled_rescued
            out.sampled_targets += part.sampled_targets
            out.reference_only += part.reference_only
            out.samples += part.samples
            out.per_problem += part.per_problem
        return out

    def as_json(self) -> dict[str, int]:
        return {
            "problems": self.problems,
            "greedy_pass": self.greedy_pass,
            "sampled_rescued": self.sampled_rescued,
            "sampled_targets": self.sampled_targets,
            "reference_only": self.reference_only,
            "samples": self.samples,
            "budget_skipped": self.budget_skipped,
        }


def cause_sentence(diagnostics: Sequence[Diagnostic]) -> str:
    """One sentence naming the cause, for a reference fix (the model writes its own for sampled targets)."""
    codes = error_codes_in_order(diagnostics)
    advice = hints_for(codes, limit=1)
    if advice:
        code, _, hint = advice[0].partition(": ")
        return f"The error is {code}: {hint.rstrip('.')}."
    first = next((d.message for d in diagnostics if d.is_error and d.message), "the program does not compile")
    return f"The compiler reports: {first.rstrip('.')}; the corrected program below fixes it."


def reference_answer(problem: SelfProblem, output_format: OutputFormat) -> str:
    body = (
        format_program_answer(problem.fixed)
        if output_format == "program"
        else format_edits_answer(problem.source, problem.fixed)
    )
    return f"{cause_sentence(problem.diagnostics)}\n\n{body}"


def _verified(
    sandbox: Sandbox, problems: Sequence[SelfProblem], replies: Sequence[str], output_format: OutputFormat
) -> list[str | None]:
    """The fixed program of each reply when the fix loop's judge accepts it (``judge_candidate``: compiles,
    tests pass, and in ``test`` mode every original ``#[test]`` still exists, ran and passed and no
    ``todo!()``/``unimplemented!()`` was added), else None."""
    programs = [parse_reply(text, p.source, output_format) for p, text in zip(problems, replies, strict=True)]
    todo = [i for i, prog in enumerate(programs) if prog is not None and prog != problems[i].source]

    def judge(i: int) -> Any:
        p = problems[i]
        return judge_candidate(sandbox, p.source, programs[i] or "", p.mode, p.edition, p.tests)

    workers = max(1, min(sandbox.config.max_concurrency, len(todo)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="self-data") as pool:
        results = list(pool.map(judge, todo))
    out: list[str | None] = [None] * len(problems)
    for i, result in zip(todo, results, strict=True):
        if result.ok:
            out[i] = programs[i]
    return out


def self_generated_targets(
    problems: Sequence[SelfProblem],
    sandbox: Sandbox,
    generate: GenerateFn,
    sample: SampleFn,
    *,
    k: int,
    seed: int,
    hints: bool,
    output_format: OutputFormat = "program",
) -> tuple[list[list[Target]], SelfDataStats]:
    """Training targets per problem (same order), and what happened. See the module docstring."""
    stats = SelfDataStats(problems=len(problems))
    if not problems:
        return [], stats
    messages = [
        build_messages(p.source, p.diagnostics, hints=hints, output_format=output_format) for p in problems
    ]
    keys = [p.key for p in problems]
    greedy = [g.text for g in generate(messages, keys)]
    greedy_ok = _verified(sandbox, problems, greedy, output_format)
    targets: list[list[Target]] = [[] for _ in problems]
    failed = []
    for i, program in enumerate(greedy_ok):
        if program is not None:
            targets[i].append(Target(messages[i], greedy[i], "greedy"))
            stats.greedy_pass += 1
        else:
            failed.append(i)
    if failed and k > 0:
        # one batch: k rows per failed problem, row j seeded seed + j by the runtime
        order = [i for i in failed for _ in range(k)]
        replies = [g.text for g in sample([messages[i] for i in order], [keys[i] for i in order], seed)]
        stats.samples = len(replies)
        ok = _verified(sandbox, [problems[i] for i in order], replies, output_format)
        seen: dict[int, set[str]] = {}
        for i, text, program in zip(order, replies, ok, strict=True):
            if program is None:
                continue
            key = normalize(program)
            if key in seen.setdefault(i, set()):
                continue
            seen[i].add(key)
            targets[i].append(Target(messages[i], text, "sampled"))
            stats.sampled_targets += 1
        stats.sampled_rescued = sum(1 for i in failed if targets[i])
    for i in failed:
        if not targets[i]:
            targets[i].append(Target(messages[i], reference_answer(problems[i], output_format), "reference"))
            stats.reference_only += 1
    stats.per_problem = [t[0].kind for t in targets]
    return targets, stats
