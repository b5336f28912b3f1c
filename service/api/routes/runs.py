"""Admin: day and night runs (trigger, list, one with its log) and the metric history they record."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from service.api.deps import AdminServices, DbId, DbOffset, TextQuery
from service.api.enums import RunKind, RunStatus
from service.api.errors import body_errors, error_responses
from service.api.schemas import (
    MetricHistory,
    MetricPointOut,
    RunCreate,
    RunCreated,
    RunDetail,
    RunOut,
    RunPage,
)
from service.db.repositories import MetricRepository, RunRepository

router = APIRouter(prefix="/admin", tags=["admin: runs"])


def _run_out(run: Any) -> RunOut:
    return RunOut.model_validate(run, from_attributes=True)


@router.post("/runs", status_code=202, response_model=RunCreated, responses=body_errors(409))
def trigger_run(body: RunCreate, services: AdminServices) -> RunCreated:
    run_id = services.jobs.trigger(body.kind, "admin")
    return RunCreated(run_id=run_id, status=RunStatus.QUEUED, kind=body.kind)


@router.get("/runs", response_model=RunPage, responses=error_responses(422))
def list_runs(
    services: AdminServices,
    kind: RunKind | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: DbOffset = 0,
) -> RunPage:
    with services.db.session() as s:
        rows = RunRepository(s).recent(kind, limit, offset)
        return RunPage(items=[_run_out(r) for r in rows], limit=limit, offset=offset)


@router.get("/runs/{run_id}", response_model=RunDetail, responses=error_responses(404, 422))
def get_run(run_id: DbId, services: AdminServices) -> RunDetail:
    with services.db.session() as s:
        run = RunRepository(s).get(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        return RunDetail(**_run_out(run).model_dump(), log=run.log or "")


@router.get("/metrics/history", response_model=MetricHistory, responses=error_responses(422))
def metrics_history(
    services: AdminServices,
    name: TextQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> MetricHistory:
    with services.db.session() as s:
        rows = MetricRepository(s).history(name, limit)
        return MetricHistory(items=[MetricPointOut.model_validate(r, from_attributes=True) for r in rows])
