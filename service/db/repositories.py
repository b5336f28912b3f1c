"""Repositories: the only place that writes SQL for the service. Functions take a Session so callers choose
the unit of work."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, selectinload

from agent.episodes import ProblemRecord
from agent.sandbox import own_start_ticks, pid_alive, process_start_ticks
from service.db.artifacts import artifact_fields
from service.db.models import (
    AdapterVersion,
    Attempt,
    Basis,
    ExperimentRun,
    Lease,
    MetricPoint,
    Problem,
    RouteState,
    Run,
)


def process_identity(pid: int | None = None) -> str:
    """``host:pid@start`` of this process (or of ``pid`` on this host): the start time (clock ticks since boot,
    ``agent.sandbox.process_start_ticks``) tells a holder apart from a later process that got the same pid
    (a restarted container's daemon is pid 1 again). ``host:pid`` where the start time cannot be read."""
    pid = os.getpid() if pid is None else pid
    start = own_start_ticks() if pid == os.getpid() else process_start_ticks(pid)
    ident = f"{socket.gethostname()}:{pid}"
    return ident if start is None else f"{ident}@{start}"


def parse_identity(identity: str) -> tuple[str, int | None, int | None]:
    """(host, pid, start ticks) of a ``process_identity``; an older ``host:pid`` has no start (None), and
    a string that names no pid gives (host, None, None)."""
    host, _, rest = identity.rpartition(":")
    pid, _, start = rest.partition("@")
    if not pid.isdigit():
        return host, None, None
    return host, int(pid), int(start) if start.isdigit() else None


def _gone_from_this_host(identity: str) -> bool | None:
    """For a process of this host: whether it is gone (its pid no longer exists, or belongs to a process
    that started at another time). None for another host's process, or an identity without a pid."""
    host, pid, start = parse_identity(identity)
    if host != socket.gethostname() or pid is None:
        return None
    return not pid_alive(pid, start)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(ts: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


# ---------------------------------------------------------------- runs
class RunRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def create(self, kind: str, trigger: str, status: str = "queued") -> Run:
        # Owned from the start: a queued run of a live process is never swept, one of a dead process is.
        now = _now()
        run = Run(
            kind=kind,
            trigger=trigger,
            status=status,
            log="",
            summary={},
            owner=process_identity(),
            heartbeat_at=now,
        )
        self.s.add(run)
        self.s.flush()
        return run

    def get(self, run_id: int) -> Run | None:
        return self.s.get(Run, run_id)

    def start(self, run_id: int) -> None:
        now = _now()
        self.s.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status="running", started_at=now, heartbeat_at=now, owner=process_identity())
        )

    def append_log(self, run_id: int, line: str) -> None:
        run = self.s.get(Run, run_id)
        if run is not None:
            run.log = (run.log or "") + f"{_now().isoformat(timespec='seconds')} {line}\n"
            run.heartbeat_at = _now()

    def set_summary(self, run_id: int, summary: dict[str, Any]) -> None:
        """A running run's summary so far (the night's progress); a heartbeat too."""
        self.s.execute(update(Run).where(Run.id == run_id).values(summary=summary, heartbeat_at=_now()))

    def finish(self, run_id: int, status: str, summary: dict[str, Any], error: str | None = None) -> None:
        self.s.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status=status, finished_at=_now(), summary=summary, error=error)
        )

    def recent(self, kind: str | None = None, limit: int = 50, offset: int = 0) -> Sequence[Run]:
        q = select(Run).order_by(Run.id.desc()).limit(limit).offset(offset)
        if kind:
            q = q.where(Run.kind == kind)
        return self.s.scalars(q).all()

    def last_succeeded(self, kind: str) -> Run | None:
        """The most recently finished successful run of ``kind`` (any replica's)."""
        stmt = (
            select(Run)
            .where(Run.kind == kind, Run.status == "succeeded", Run.finished_at.is_not(None))
            .order_by(Run.finished_at.desc())
            .limit(1)
        )
        return self.s.scalars(stmt).first()

    def running(self, kind: str | None = None) -> Sequence[Run]:
        q = select(Run).where(Run.status.in_(("queued", "running")))
        if kind:
            q = q.where(Run.kind == kind)
        return self.s.scalars(q).all()

    def touch_queued(self, run_ids: list[int]) -> None:
        """Heartbeat for runs this process has queued (they wait behind its running one)."""
        if run_ids:
            self.s.execute(
                update(Run).where(Run.id.in_(run_ids), Run.status == "queued").values(heartbeat_at=_now())
            )

    def fail_abandoned(self, stale_after: timedelta) -> list[int]:
        """Mark runs left queued/running by a process that is gone as failed; returns their ids.

        On this host a run is abandoned when its owning process no longer exists (a crash or a kill -9) or its
        pid now belongs to a process that started at another time (a restart that got the same pid); a run
        owned by another host (a replica) is abandoned when its heartbeat is older than ``stale_after``.
        """
        failed: list[int] = []
        for run in self.running():
            gone = _gone_from_this_host(run.owner or "")
            if gone is not None:
                abandoned = gone
            else:
                beat = _aware(run.heartbeat_at or run.started_at or run.created_at)
                abandoned = _now() - beat > stale_after
            if abandoned:
                run.status = "failed"
                run.finished_at = _now()
                run.error = (run.error or "") + "abandoned: the process running it stopped (crash or restart)"
                failed.append(run.id)
        return failed


def _holder_gone(holder: str) -> bool:
    """A lease holder (``process_identity``) on this host whose process no longer exists (killed, crashed)
    or whose pid now belongs to a process that started at another time."""
    return _gone_from_this_host(holder) is True


# ---------------------------------------------------------------- episodes
class EpisodeRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def save(
        self,
        record: ProblemRecord,
        *,
        origin: str,
        problem_ref: str,
        mode: str,
        edition: str,
        run_id: int | None = None,
    ) -> Problem:
        problem = Problem(
            run_id=run_id,
            origin=origin,
            problem_ref=problem_ref,
            content_hash=record.content_hash,
            family=record.family,
            mode=mode,
            edition=edition,
            source=record.source,
            final_code=record.final_code,
            fixed=record.fixed,
            verified=record.verified,
            steps_to_green=record.steps_to_green,
            final_status=record.final_status,
            strategy=record.strategy,
            error_codes=list(record.error_codes),
            route_task=record.route_task,
            route_version=record.route_version,
            wall_seconds=record.wall_seconds,
        )
        for a in record.attempts:
            fields = asdict(a)
            for drop in ("problem_id", "content_hash"):
                fields.pop(drop)
            problem.attempts.append(Attempt(**fields))
        self.s.add(problem)
        self.s.flush()
        return problem

    def get(self, problem_id: int) -> Problem | None:
        return self.s.scalars(
            select(Problem).where(Problem.id == problem_id).options(selectinload(Problem.attempts))
        ).first()

    def search(
        self,
        *,
        origin: str | None = None,
        family: str | None = None,
        fixed: bool | None = None,
        run_id: int | None = None,
        task: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[int, Sequence[Problem]]:
        q = select(Problem)
        if origin:
            q = q.where(Problem.origin == origin)
        if family:
            q = q.where(Problem.family == family)
        if fixed is not None:
            q = q.where(Problem.fixed == fixed)
        if run_id is not None:
            q = q.where(Problem.run_id == run_id)
        if task:
            q = q.where(Problem.route_task == task)
        total = self.s.scalar(select(func.count()).select_from(q.subquery())) or 0
        rows = self.s.scalars(q.order_by(Problem.id.desc()).limit(limit).offset(offset)).all()
        return total, rows

    def verified_fixes(self, since_id: int = 0, limit: int = 5000) -> Sequence[Problem]:
        """Problems fixed and verified by the sandbox: the night's raw training material."""
        return self.s.scalars(
            select(Problem)
            .where(Problem.fixed.is_(True), Problem.verified.is_(True), Problem.id > since_id)
            .order_by(Problem.id)
            .limit(limit)
        ).all()

    def recent_client_failures(self, limit: int = 50) -> Sequence[Problem]:
        return self.s.scalars(
            select(Problem)
            .where(Problem.origin == "client", Problem.fixed.is_(False), Problem.verified.is_(True))
            .order_by(Problem.id.desc())
            .limit(limit)
        ).all()


# ---------------------------------------------------------------- adapters
class AdapterRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def next_version(self, task: str) -> int:
        current = self.s.scalar(select(func.max(AdapterVersion.version)).where(AdapterVersion.task == task))
        return (current or 0) + 1

    def add(self, **fields: Any) -> AdapterVersion:
        """A version row; its artifact file's bytes and sha256 go into the row, for every replica."""
        if "artifact" not in fields:
            fields.update(artifact_fields(fields.get("path")))
        row = AdapterVersion(**fields)
        self.s.add(row)
        self.s.flush()
        return row

    def get(self, task: str, version: int) -> AdapterVersion | None:
        return self.s.scalars(
            select(AdapterVersion).where(AdapterVersion.task == task, AdapterVersion.version == version)
        ).first()

    def active(self) -> Sequence[AdapterVersion]:
        return self.s.scalars(
            select(AdapterVersion).where(AdapterVersion.status == "active").order_by(AdapterVersion.task)
        ).all()

    def active_for(self, task: str) -> AdapterVersion | None:
        return self.s.scalars(
            select(AdapterVersion).where(AdapterVersion.task == task, AdapterVersion.status == "active")
        ).first()

    def versions(self, task: str | None = None) -> Sequence[AdapterVersion]:
        q = select(AdapterVersion).order_by(AdapterVersion.task, AdapterVersion.version.desc())
        if task:
            q = q.where(AdapterVersion.task == task)
        return self.s.scalars(q).all()

    def promote(self, row: AdapterVersion) -> None:
        """Make ``row`` the task's only active version and bump the route epoch, in the caller's transaction."""
        self.s.execute(
            update(AdapterVersion)
            .where(AdapterVersion.task == row.task, AdapterVersion.status == "active")
            .values(status="retired")
        )
        if (
            row.sha256 is None
        ):  # a row added without its bytes: store them now, or no other replica can load it
            for key, value in artifact_fields(row.path).items():
                setattr(row, key, value)
        row.status = "active"
        row.promoted_at = _now()
        RouteStateRepository(self.s).bump()

    def rollback(self, task: str, to_version: int | None = None) -> AdapterVersion | None:
        """Reactivate ``to_version`` (default: the previously promoted one); with none left, the task goes
        back to the base model. Returns the now-active version or None. A task with no versions at all is a
        LookupError (most likely a typo), not a silent no-op."""
        if not self.versions(task):
            raise LookupError(f"no adapter versions for task {task!r} (see `dreamfix adapters list`)")
        current = self.active_for(task)
        if to_version is None:
            candidates = [
                v
                for v in self.versions(task)
                if v.promoted_at is not None
                and v.status == "retired"
                and (current is None or v.id != current.id)
            ]
            candidates.sort(key=lambda v: _aware(v.promoted_at or _now()), reverse=True)
            target = candidates[0] if candidates else None
        else:
            target = self.get(task, to_version)
            if target is None:
                raise LookupError(f"task {task!r} has no version {to_version}")
            if target.status == "rejected":
                raise ValueError(f"{task}@v{to_version} was rejected by the gate; it cannot be activated")
        if current is not None:
            current.status = "retired"
        if target is not None:
            target.status = "active"
            target.promoted_at = _now()
        RouteStateRepository(self.s).bump()
        return target


class BasisRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, basis_id: str, path: str, base_model_id: str, meta: dict[str, Any]) -> Basis:
        row = Basis(id=basis_id, path=path, base_model_id=base_model_id, meta=meta, **artifact_fields(path))
        self.s.add(row)
        self.s.flush()
        return row

    def get(self, basis_id: str) -> Basis | None:
        return self.s.get(Basis, basis_id)

    def latest(self) -> Basis | None:
        return self.s.scalars(select(Basis).order_by(Basis.created_at.desc()).limit(1)).first()


class RouteStateRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get(self) -> RouteState:
        row = self.s.get(RouteState, 1)
        if row is None:
            row = RouteState(id=1, epoch=0)
            self.s.add(row)
            self.s.flush()
        return row

    def bump(self, basis_id: str | None = None) -> int:
        row = self.get()
        row.epoch += 1
        if basis_id is not None:
            row.basis_id = basis_id
        row.updated_at = _now()
        return row.epoch


class MetricRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def record(
        self, name: str, value: float, labels: dict[str, Any] | None = None, run_id: int | None = None
    ):
        self.s.add(MetricPoint(name=name, value=float(value), labels=labels or {}, run_id=run_id))

    def history(self, name: str | None = None, limit: int = 200) -> Sequence[MetricPoint]:
        q = select(MetricPoint).order_by(MetricPoint.id.desc()).limit(limit)
        if name:
            q = q.where(MetricPoint.name == name)
        return self.s.scalars(q).all()


# ---------------------------------------------------------------- experiments
class ExperimentRepository:
    """``dreamfix experiment`` runs. A run is written when it starts and updated as results come in, so a
    crashed or interrupted study still leaves its partial numbers behind."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def _row(self, run_id: int) -> ExperimentRun:
        row = self.s.get(ExperimentRun, run_id)
        if row is None:
            raise LookupError(f"no experiment run {run_id}")
        return row

    def start(self, kind: str, name: str, config: dict[str, Any]) -> ExperimentRun:
        row = ExperimentRun(kind=kind, name=name, status="running", config=dict(config), started_at=_now())
        self.s.add(row)
        self.s.flush()
        return row

    def update(self, run_id: int, result: dict[str, Any]) -> None:
        """Replace the (partial) result of a running experiment; a new dict so the JSON column is saved."""
        self._row(run_id).result = dict(result)

    def finish(self, run_id: int, result: dict[str, Any], wall_seconds: float) -> None:
        row = self._row(run_id)
        row.status, row.result, row.wall_seconds = "succeeded", dict(result), float(wall_seconds)
        row.finished_at = _now()

    def fail(self, run_id: int, error: str, status: str = "failed") -> None:
        """Mark a run failed (or ``interrupted``), keeping whatever partial result it had."""
        if status not in ("failed", "interrupted"):
            raise ValueError(f"status must be failed or interrupted, not {status!r}")
        row = self._row(run_id)
        row.status, row.error, row.finished_at = status, error, _now()
        row.wall_seconds = (row.finished_at - _aware(row.started_at)).total_seconds()

    def get(self, run_id: int) -> ExperimentRun | None:
        return self.s.get(ExperimentRun, run_id)

    def latest(self, kind: str, name: str | None = None) -> ExperimentRun | None:
        q = select(ExperimentRun).where(ExperimentRun.kind == kind)
        if name is not None:
            q = q.where(ExperimentRun.name == name)
        return self.s.scalars(q.order_by(ExperimentRun.id.desc()).limit(1)).first()

    def list(self, kind: str | None = None, limit: int = 50) -> Sequence[ExperimentRun]:
        """Newest first."""
        q = select(ExperimentRun).order_by(ExperimentRun.id.desc()).limit(limit)
        if kind:
            q = q.where(ExperimentRun.kind == kind)
        return self.s.scalars(q).all()


# ---------------------------------------------------------------- the night lock
class NightLock:
    """One night at a time, across threads, processes and replicas.

    PostgreSQL: a session-level advisory lock on a dedicated connection — released by the server if the holder
    dies. SQLite (single host): a lease row with an expiry, renewed by the holder's heartbeat.
    """

    KEY = 0x6472_6D66  # "drmf"

    def __init__(self, database: Any, name: str = "night", ttl: timedelta = timedelta(minutes=30)) -> None:
        self.db = database
        self.name = name
        self.ttl = ttl
        self._conn: Any = None

    def acquire(self) -> bool:
        if self.db.dialect == "postgresql":
            conn = self.db.engine.connect()
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.KEY}).scalar())
            if got:
                conn.commit()
                self._conn = conn
            else:
                conn.close()
            return got
        me = process_identity()
        with self.db.session() as s:
            lease = s.get(Lease, self.name, with_for_update=True)
            now = _now()
            if (
                lease is not None
                and lease.holder != me
                and _aware(lease.expires_at) > now
                and not _holder_gone(lease.holder)
            ):
                return False
            if lease is None:
                s.add(Lease(name=self.name, holder=me, expires_at=now + self.ttl))
            else:
                lease.holder, lease.expires_at = me, now + self.ttl
        return True

    def renew(self) -> None:
        if self.db.dialect != "postgresql":
            with self.db.session() as s:
                lease = s.get(Lease, self.name)
                if lease is not None and lease.holder == process_identity():
                    lease.expires_at = _now() + self.ttl

    def release(self) -> None:
        if self.db.dialect == "postgresql":
            if self._conn is not None:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.KEY})
                self._conn.commit()
                self._conn.close()
                self._conn = None
            return
        with self.db.session() as s:
            lease = s.get(Lease, self.name)
            if lease is not None and lease.holder == process_identity():
                s.delete(lease)
