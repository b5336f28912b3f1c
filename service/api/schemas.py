"""Request and response bodies. Validation lives here so bad input is a 422 with a clear message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.api.enums import (
    AdapterStatus,
    AttemptVerdict,
    FinalStatus,
    ProblemOrigin,
    RunKind,
    RunStatus,
    RunTrigger,
    Verdict,
)

Mode = Literal["lib", "bin", "test"]


def _as_utc(ts: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC, and OpenAPI's date-time needs an offset."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


def no_nul(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: text that reaches the database is refused with a 422 at the edge."""
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL (\\x00) characters")
    return value


#: What OpenAPI says of NUL-free text (the validator gives the clear message).
NUL_FREE: dict[str, Any] = {"pattern": "^[^\\x00]*$"}
NulFreeStr = Annotated[str, AfterValidator(no_nul), Field(json_schema_extra=NUL_FREE)]
Edition = Literal["2015", "2018", "2021", "2024"]


class ErrorBody(BaseModel):
    error: str
    detail: Any | None = None


class FixRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: NulFreeStr = Field(min_length=1, description="The Rust source to fix (one file).")
    mode: Mode = "bin"
    edition: Edition = "2021"
    diagnostics: NulFreeStr | None = Field(
        default=None,
        description="The client's own compiler output: rendered text or --error-format=json lines. Used to "
        "route, and to fix code the sandbox cannot build (crates or modules it lacks).",
    )
    tests: NulFreeStr | None = Field(
        default=None, description="Optional #[test] functions the fix must pass."
    )
    # strict: JSON types as OpenAPI states them (pydantic's lax mode takes ``true`` for 1, ``1`` for true).
    max_attempts: int | None = Field(default=None, ge=1, le=8, strict=True)
    hints: bool | None = Field(default=None, strict=True)
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        strict=True,
        allow_inf_nan=False,
        description="This request's deadline in seconds (default: the server's limits.request_timeout_s; at "
        "most limits.max_request_timeout_s, the maximum stated here). Admission refuses (429) a fix that "
        "cannot finish within it; the loop starts no model round that could not end before it (the answer is "
        "then a 200 with the attempts made), and a round the deadline cuts ends in a 504 carrying the attempts "
        "so far.",
    )


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1)
    mode: Mode = "bin"
    edition: Edition = "2021"


class SuggestionOut(BaseModel):
    message: str
    replacement: str
    line_start: int | None = None
    column_start: int | None = None
    applicability: str | None = None


class DiagnosticOut(BaseModel):
    level: str
    code: str | None
    message: str
    line: int | None
    column: int | None
    rendered: str
    suggestions: list[SuggestionOut] = []


class CheckResponse(BaseModel):
    ok: bool
    verdict: Verdict
    error_codes: list[str]
    diagnostics: list[DiagnosticOut]
    message: str | None = None
    duration_s: float


class RouteOut(BaseModel):
    task: str | None = Field(
        description="Task the diagnostics route to; null = nothing matched (base model)."
    )
    version: int | None = Field(description="Active coefficient version of that task; null = base model.")
    confidence: float | None = Field(default=None, description="Router confidence (request level only).")


class AttemptOut(BaseModel):
    attempt: int
    strategy: str
    verdict: AttemptVerdict
    fixed: bool
    error_codes: list[str]
    route: RouteOut
    note: str = ""
    seconds: float


class FixResponse(BaseModel):
    fixed: bool
    verified: bool = Field(description="False when the sandbox could not build the code (missing crates).")
    code: str
    diff: str
    error_codes: list[str]
    attempts: list[AttemptOut]
    route: RouteOut
    episode_id: int | None
    status: FinalStatus
    wall_seconds: float
    steps_to_green: int | None = Field(default=None, description="Attempts used until fixed; null if never.")
    remaining_error_codes: list[str] = Field(default_factory=list, description="Error codes left at the end.")


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: RunKind


class RunOut(BaseModel):
    id: int
    kind: RunKind
    status: RunStatus
    trigger: RunTrigger
    created_at: UtcDatetime | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    summary: dict[str, Any]
    error: str | None


class RunDetail(RunOut):
    log: str


class AdapterOut(BaseModel):
    task: str
    version: int
    name: str
    status: AdapterStatus
    basis_id: str
    base_model_id: str
    gate: dict[str, Any]
    reason: str
    params: int
    bytes: int
    created_at: UtcDatetime | None
    promoted_at: UtcDatetime | None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(
        default=None, ge=1, le=2**31 - 1, strict=True, description="Default: the previously active version."
    )


class AttemptDetail(BaseModel):
    attempt: int
    strategy: str
    route_task: str | None
    route_version: int | None
    prompt_hash: str | None
    model_id: str | None
    error_codes_before: list[str]
    error_codes_after: list[str]
    diff: str
    verdict: AttemptVerdict
    fixed: bool
    prompt_tokens: int
    completion_tokens: int
    generate_seconds: float
    check_seconds: float
    note: str


class EpisodeOut(BaseModel):
    id: int
    run_id: int | None
    origin: ProblemOrigin
    problem_ref: str
    family: str | None
    fixed: bool
    verified: bool
    steps_to_green: int | None
    final_status: FinalStatus
    strategy: str
    error_codes: list[str]
    route_task: str | None
    route_version: int | None
    wall_seconds: float
    created_at: UtcDatetime | None


class EpisodeDetail(EpisodeOut):
    source: str
    final_code: str
    attempts: list[AttemptDetail]


class EpisodePage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[EpisodeOut]


class MetricPointOut(BaseModel):
    ts: UtcDatetime | None
    name: str
    value: float
    labels: dict[str, Any]
    run_id: int | None


class MetricHistory(BaseModel):
    items: list[MetricPointOut]


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    ready: bool
    database: Literal["ok", "unreachable"]
    model: str = Field(description="'loaded', 'loading', or why the model failed to load.")
    route_epoch: int
    scheduler: Literal["leader", "follower", "stopped", "disabled"] = Field(
        description="Whether this replica runs the scheduled jobs (one leader per database: docs/service.md)."
    )
    scheduler_holder: str | None = Field(
        description="host:pid@start (the process start time, clock ticks since boot) of the replica holding the scheduler lease."
    )


class RunCreated(BaseModel):
    run_id: int
    status: RunStatus
    kind: RunKind


class RunPage(BaseModel):
    items: list[RunOut]
    limit: int
    offset: int


class AdapterList(BaseModel):
    items: list[AdapterOut]
    active: dict[str, int] = Field(description="task → its active version")
    served_epoch: int


class RollbackOut(BaseModel):
    task: str
    active_version: int | None = Field(description="The task's active version now; null = the base model.")
    served_epoch: int
