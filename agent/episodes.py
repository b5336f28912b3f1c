"""What the fix loop reports: one record per attempt and one per problem.

The agent returns these plain records; ``service`` persists them. Nothing here knows about SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AttemptRecord:
    """One attempt at one problem: a suggestion pass or one model reply, always verified by the sandbox."""

    problem_id: str
    content_hash: str  # sha256 of the problem's original source
    attempt: int  # 0-based position in the problem's sequence of attempts
    strategy: str  # "suggestions" | "model" | "model+hints" | ...
    route_task: str | None  # task key the router chose; None = base model
    route_version: int | None  # coefficient version used; None = base model
    prompt_hash: str | None
    model_id: str | None
    error_codes_before: list[str]
    error_codes_after: list[str]
    diff: str
    verdict: str  # the sandbox verdict of the candidate ("ok", "compile_error", "test_failed", ...)
    fixed: bool
    candidate: str
    reply: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generate_seconds: float = 0.0
    check_seconds: float = 0.0
    note: str = ""  # e.g. "unchanged reply", "no progress"


@dataclass
class ProblemRecord:
    """The outcome of the whole loop for one problem."""

    problem_id: str
    content_hash: str
    family: str | None
    source: str
    final_code: str
    fixed: bool
    verified: bool  # False when the sandbox could not judge (e.g. crates it lacks)
    steps_to_green: int | None  # attempts used until success; None if never fixed
    final_status: str
    strategy: str
    error_codes: list[str]
    attempts: list[AttemptRecord] = field(default_factory=list)
    wall_seconds: float = 0.0
    # THE route of the problem (SQL, the API and the CLI all report this one): the task the original
    # program's diagnostics route to and that task's version in the loop's pinned snapshot (None = base).
    # Attempts carry their own routes (a later round may route differently).
    route_task: str | None = None
    route_version: int | None = None
