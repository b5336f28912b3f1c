"""SQL schema. One row per attempt (``attempts``) and one per problem (``problems``) — the prototype's one
row per task lost exactly the data the night job learns from."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[str]: JSON, list[Any]: JSON}


class Run(Base):
    """A day or night cycle (scheduled, triggered by an operator, or from the CLI)."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # day | night
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued|running|succeeded|failed
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | admin | cli
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str | None] = mapped_column(String(128))  # host:pid@start of the process running it
    log: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class Problem(Base):
    """One problem worked on by the fix loop: a client request, a koan, or a generated example."""

    __tablename__ = "problems"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    origin: Mapped[str] = mapped_column(String(16), index=True)  # client | koan | generated
    problem_ref: Mapped[str] = mapped_column(String(128), index=True)  # koan id or request id
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    family: Mapped[str | None] = mapped_column(String(64), index=True)
    mode: Mapped[str] = mapped_column(String(8), default="bin")
    edition: Mapped[str] = mapped_column(String(8), default="2021")
    source: Mapped[str] = mapped_column(Text)
    final_code: Mapped[str] = mapped_column(Text, default="")
    fixed: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=True)
    steps_to_green: Mapped[int | None] = mapped_column(Integer)
    final_status: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str] = mapped_column(String(64))
    error_codes: Mapped[list[str]] = mapped_column(default=list)
    route_task: Mapped[str | None] = mapped_column(String(64), index=True)
    route_version: Mapped[int | None] = mapped_column(Integer)
    wall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="problem", order_by="Attempt.attempt", cascade="all, delete-orphan"
    )


class Attempt(Base):
    """One attempt (suggestion pass or model reply), always verified by the sandbox."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("problem_id", "attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(32))
    route_task: Mapped[str | None] = mapped_column(String(64))
    route_version: Mapped[int | None] = mapped_column(Integer)
    prompt_hash: Mapped[str | None] = mapped_column(String(64))
    model_id: Mapped[str | None] = mapped_column(String(256))
    error_codes_before: Mapped[list[str]] = mapped_column(default=list)
    error_codes_after: Mapped[list[str]] = mapped_column(default=list)
    diff: Mapped[str] = mapped_column(Text, default="")
    verdict: Mapped[str] = mapped_column(String(32))
    fixed: Mapped[bool] = mapped_column(Boolean, default=False)
    candidate: Mapped[str] = mapped_column(Text, default="")
    reply: Mapped[str] = mapped_column(Text, default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    generate_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    check_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    problem: Mapped[Problem] = relationship(back_populates="attempts")


class AdapterVersion(Base):
    """One version of one task's Share coefficients, with its gate verdict."""

    __tablename__ = "adapter_versions"
    __table_args__ = (
        UniqueConstraint("task", "version"),
        Index("ix_adapter_versions_task_status", "task", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # candidate | active | rejected | retired
    path: Mapped[str] = mapped_column(Text)  # coefficient artifact (safetensors) of the host that wrote it
    #: The artifact's bytes and their sha256, so any replica can load it (the path is a local cache only);
    #: NULL for rows written before 0003, which load from ``path``.
    #: (``builtins.bytes``: the class's own ``bytes`` column shadows the type in here.)
    artifact: Mapped[builtins.bytes | None] = mapped_column(LargeBinary, deferred=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    basis_id: Mapped[str] = mapped_column(String(64))
    base_model_id: Mapped[str] = mapped_column(String(256))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    gate: Mapped[dict[str, Any]] = mapped_column(default=dict)  # gate metrics and decision
    reason: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Basis(Base):
    """A Share basis (per-layer β, α): Phase 1 creates the first, each Phase 3 merge a new one."""

    __tablename__ = "bases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    artifact: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)  # as AdapterVersion's
    sha256: Mapped[str | None] = mapped_column(String(64))
    base_model_id: Mapped[str] = mapped_column(String(256))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RouteState(Base):
    """A single row whose ``epoch`` bumps on every promotion/rollback: replicas poll it to hot-swap."""

    __tablename__ = "route_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    basis_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Lease(Base):
    """A named lease: the night lock on SQLite (PostgreSQL uses an advisory lock for it), and on every
    database the scheduler leader's lease (``service.leader``, row ``scheduler``)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MetricPoint(Base):
    """Metrics history: pass rates per run, gate numbers, queue depth samples."""

    __tablename__ = "metric_points"

    id: Mapped[int] = mapped_column(primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    value: Mapped[float] = mapped_column(Float)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))


class ExperimentRun(Base):
    """One ``dreamfix experiment`` run (continual-learning studies): its config, partial then final result,
    so a long study survives a crash and its numbers can be re-plotted without re-running it."""

    __tablename__ = "experiment_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # strategies|heatmap|sequential|subspace|sweep
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # running | succeeded | failed | interrupted
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    wall_seconds: Mapped[float | None] = mapped_column(Float)
