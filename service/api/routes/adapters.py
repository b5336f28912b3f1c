"""Admin: the coefficient versions per task, and rolling a task back."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from service.api.deps import AdminServices, TextPath, TextQuery
from service.api.errors import body_errors, error_responses
from service.api.schemas import AdapterList, AdapterOut, RollbackOut, RollbackRequest
from service.db.repositories import AdapterRepository

router = APIRouter(prefix="/admin/adapters", tags=["admin: adapters"])


def _adapter_out(row: Any) -> AdapterOut:
    return AdapterOut(
        task=row.task,
        version=row.version,
        name=f"{row.task}@v{row.version}",
        status=row.status,
        basis_id=row.basis_id,
        base_model_id=row.base_model_id,
        gate=row.gate or {},
        reason=row.reason or "",
        params=row.params,
        bytes=row.bytes,
        created_at=row.created_at,
        promoted_at=row.promoted_at,
    )


@router.get("", response_model=AdapterList, responses=error_responses(422))
def list_adapters(services: AdminServices, task: TextQuery = None) -> AdapterList:
    with services.db.session() as s:
        rows = AdapterRepository(s).versions(task)
        return AdapterList(
            items=[_adapter_out(r) for r in rows],
            active={r.task: r.version for r in rows if r.status == "active"},
            served_epoch=services.serving.epoch,
        )


@router.post("/{task}/rollback", response_model=RollbackOut, responses=body_errors(404, 409))
def rollback(task: TextPath, services: AdminServices, body: RollbackRequest | None = None) -> RollbackOut:
    version = body.version if body else None
    try:
        active = services.rollback(task, version)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return RollbackOut(task=task, active_version=active, served_epoch=services.serving.epoch)
