"""rustfix-style repair: apply the edits rustc itself suggests, before (or instead of) asking a model.

This is the cheapest fixer and the baseline every learned fixer must beat (``dreamfix koans baseline``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.diagnostics import Diagnostic, Suggestion
from agent.sandbox import CheckResult, Sandbox, Verdict

MACHINE_APPLICABLE = "MachineApplicable"
MAYBE_INCORRECT = "MaybeIncorrect"


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: bytes

    def conflicts(self, other: _Edit) -> bool:
        if self == other:
            return False  # the same edit proposed twice is applied once
        if self.start == self.end == other.start == other.end:
            return True  # two different insertions at one point: their order is unknowable
        return (self.start < other.end and other.start < self.end) or (
            self.start == self.end and other.start < self.start < other.end
        )


def _groups(diagnostics: Iterable[Diagnostic], include_maybe_incorrect: bool, size: int) -> list[list[_Edit]]:
    """Each suggestion's parts as one all-or-nothing group of edits, in the order rustc gave them."""
    allowed = {MACHINE_APPLICABLE} | ({MAYBE_INCORRECT} if include_maybe_incorrect else set())
    groups: list[list[_Edit]] = []
    for diag in diagnostics:
        by_group: dict[int, list[Suggestion]] = {}
        for suggestion in diag.suggestions:
            by_group.setdefault(suggestion.group, []).append(suggestion)
        for parts in by_group.values():
            if any(p.applicability not in allowed for p in parts):
                continue
            edits: list[_Edit] = []
            for part in parts:
                edit = _Edit(part.byte_start, part.byte_end, part.replacement.encode("utf-8"))
                if not 0 <= edit.start <= edit.end <= size:
                    edits = []
                    break
                # Alternatives for the same span ("one of these") come as overlapping parts: keep the first.
                if not any(edit.conflicts(e) or edit == e for e in edits):
                    edits.append(edit)
            if edits:
                groups.append(edits)
    return groups


def apply_suggestions_counted(
    source: str, diagnostics: Iterable[Diagnostic], include_maybe_incorrect: bool = False
) -> tuple[str, int]:
    """Like ``apply_suggestions``, also returning how many suggestions were applied."""
    data = source.encode("utf-8")
    chosen: list[_Edit] = []
    applied = 0
    for group in _groups(diagnostics, include_maybe_incorrect, len(data)):
        fresh = [e for e in group if e not in chosen]
        if not fresh:
            continue
        if any(e.conflicts(c) for e in fresh for c in chosen):
            continue  # overlapping edits: skip this suggestion, a later round may still apply it
        chosen.extend(fresh)
        applied += 1
    for edit in sorted(chosen, key=lambda e: (e.start, e.end), reverse=True):
        data = data[: edit.start] + edit.text + data[edit.end :]
    try:
        return data.decode("utf-8"), applied
    except UnicodeDecodeError:
        return source, 0  # offsets that split a character: these diagnostics are not for this source


def apply_suggestions(
    source: str, diagnostics: Iterable[Diagnostic], include_maybe_incorrect: bool = False
) -> str:
    """Apply rustc's MachineApplicable (and optionally MaybeIncorrect) edits to ``source``.

    Offsets are UTF-8 byte offsets. Edits that overlap an already chosen edit are skipped (as rustfix does);
    the parts of one multi-span suggestion are applied together or not at all.
    """
    return apply_suggestions_counted(source, diagnostics, include_maybe_incorrect)[0]


@dataclass
class SuggestionOutcome:
    source: str
    rounds_used: int
    applied: int
    result: CheckResult  # the sandbox's judgement of ``source``


def fix_with_suggestions(
    sandbox: Sandbox,
    source: str,
    mode: str = "bin",
    edition: str = "2021",
    rounds: int = 3,
    include_maybe_incorrect: bool = False,
) -> SuggestionOutcome:
    """check → apply → check ... until the program compiles, nothing applies, or ``rounds`` are used up."""
    result = sandbox.check(source, mode, edition)
    applied_total = 0
    rounds_used = 0
    while not result.ok and rounds_used < rounds:
        if result.verdict != Verdict.COMPILE_ERROR:
            break
        new_source, applied = apply_suggestions_counted(source, result.diagnostics, include_maybe_incorrect)
        if applied == 0 or new_source == source:
            break
        source = new_source
        applied_total += applied
        rounds_used += 1
        result = sandbox.check(source, mode, edition)
    return SuggestionOutcome(source=source, rounds_used=rounds_used, applied=applied_total, result=result)
