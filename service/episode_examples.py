"""An episode's verified model replies as training examples, word for word, with the prompt they were
generated from (issue 16, item 1) — rebuilt by the serving prompt builder (``agent.prompt.build_messages``)
and kept only when the rebuilt prompt's hash is the one the attempt logged, so a kept example's prompt is
exactly the prompt that was served.

The episode store keeps each attempt's candidate, verdict and note, not its prompt; the loop's state before
attempt k is replayed from them: the program the prompt shows is the original or the last candidate that
made progress (its diagnostics re-checked in the sandbox, which is deterministic), the feedback is what the
loop derives from attempt k−1's outcome, and the hints flag and answer format (which the loop escalates on a
stall) are each tried both ways. A prompt that still does not match — feedback on failing tests (the store
has no tests to re-run), or anything the replay does not model — is counted, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.prompt import Feedback, OutputFormat, build_messages, prompt_hash

Example = tuple[list[dict[str, str]], str]
CheckFn = Callable[[str], Sequence[Any]]  # program → its diagnostics
FORMATS: tuple[OutputFormat, ...] = ("program", "edits")


@dataclass(frozen=True)
class EpisodeAttempt:
    attempt: int
    strategy: str
    note: str
    candidate: str
    verdict: str
    fixed: bool
    prompt_hash: str | None
    reply: str

    @property
    def model_fix(self) -> bool:
        return self.fixed and bool(self.reply) and bool(self.prompt_hash) and self.strategy != "suggestions"


def _feedbacks(
    previous: EpisodeAttempt | None, working_diagnostics: Sequence[Any], check: CheckFn
) -> list[Any]:
    """What the loop may have shown after ``previous`` (agent/loop.py ``_take_result``, ``_failed_without_check``)."""
    if previous is None or previous.note.startswith("progress"):
        return [None]
    if previous.verdict == "test_failed":
        return []  # the feedback quotes the tests' output: not in the episode store
    options: list[Any] = [
        Feedback("the reply changed nothing", None, working_diagnostics),
        Feedback("the reply contained no program", None, working_diagnostics),
    ]
    if previous.candidate:
        after = list(check(previous.candidate))
        options += [
            Feedback("the same errors remain after its change", previous.candidate, after),
            Feedback("its change caused other errors", previous.candidate, after),
            Feedback(f"the candidate was rejected ({previous.verdict})", previous.candidate, after),
        ]
    return options


def rebuilt_prompt(
    source: str, attempts: Sequence[EpisodeAttempt], target: EpisodeAttempt, check: CheckFn
) -> list[dict[str, str]] | None:
    """The prompt ``target`` was generated from, if the replay rebuilds one with its logged hash."""
    before = [a for a in attempts if a.attempt < target.attempt]
    working = next((a.candidate for a in reversed(before) if a.note.startswith("progress")), source)
    diagnostics = list(check(working))
    previous = before[-1] if before else None
    for feedback in _feedbacks(previous, diagnostics, check):
        for hints in (True, False):
            for output_format in FORMATS:
                messages = build_messages(
                    working, diagnostics, hints=hints, output_format=output_format, feedback=feedback
                )
                if prompt_hash(messages) == target.prompt_hash:
                    return messages
    return None


def episode_examples(
    source: str, attempts: Sequence[EpisodeAttempt], check: CheckFn
) -> tuple[list[Example], int]:
    """(messages, reply) of every verified model reply whose prompt rebuilds; and how many did not."""
    examples: list[Example] = []
    missed = 0
    for target in (a for a in attempts if a.model_fix):
        messages = rebuilt_prompt(source, sorted(attempts, key=lambda a: a.attempt), target, check)
        if messages is None:
            missed += 1
        else:
            examples.append((messages, target.reply))
    return examples, missed
