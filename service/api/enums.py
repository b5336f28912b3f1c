"""The closed sets of values the API reports, as string enums so OpenAPI lists the allowed values.

The database columns stay plain strings (no migration): these enums name what the code writes there.
"""

from __future__ import annotations

import enum

from agent.sandbox import Verdict

__all__ = [
    "AdapterStatus",
    "AttemptVerdict",
    "FinalStatus",
    "ProblemOrigin",
    "RunKind",
    "RunStatus",
    "RunTrigger",
    "Verdict",
]


class RunKind(enum.StrEnum):
    DAY = "day"
    NIGHT = "night"


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RunTrigger(enum.StrEnum):
    """Who started a run: the cron schedule, ``POST /admin/runs`` or ``dreamfix day|night``."""

    SCHEDULE = "schedule"
    ADMIN = "admin"
    CLI = "cli"


class ProblemOrigin(enum.StrEnum):
    """Where an episode's problem came from (``service.day`` stores retried client problems as ``day``)."""

    CLIENT = "client"
    KOAN = "koan"
    DAY = "day"
    GENERATED = "generated"


class AdapterStatus(enum.StrEnum):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    REJECTED = "rejected"
    RETIRED = "retired"


class AttemptVerdict(enum.StrEnum):
    """An attempt's verdict: the sandbox's (``agent.sandbox.Verdict``), ``no_candidate`` when the model's
    reply held no program, or ``prompt_too_long``."""

    OK = "ok"
    COMPILE_ERROR = "compile_error"
    TEST_FAILED = "test_failed"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    INVALID_INPUT = "invalid_input"
    SANDBOX_ERROR = "sandbox_error"
    NO_CANDIDATE = "no_candidate"
    PROMPT_TOO_LONG = "prompt_too_long"  # the prompt does not fit the model's context (main's agent.loop)


class FinalStatus(enum.StrEnum):
    """How the fix loop closed a problem (``agent.loop.FixLoop._close``): a loop outcome, or the verdict of
    an original program there was nothing to repair in (invalid input, a timeout, ...)."""

    FIXED = "fixed"
    ALREADY_OK = "already_ok"
    UNFIXED = "unfixed"
    UNVERIFIED = "unverified"
    EXHAUSTED = "exhausted"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    INVALID_INPUT = "invalid_input"
    SANDBOX_ERROR = "sandbox_error"
    PROMPT_TOO_LONG = "prompt_too_long"
