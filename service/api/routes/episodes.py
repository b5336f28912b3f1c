"""Admin: the stored episodes (one per problem, every attempt), searchable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from service.api.deps import DB_INT_MAX, AdminServices, DbId, DbOffset, TextQuery
from service.api.enums import ProblemOrigin
from service.api.errors import error_responses
from service.api.schemas import EpisodeDetail, EpisodeOut, EpisodePage
from service.db.repositories import EpisodeRepository

router = APIRouter(prefix="/admin/episodes", tags=["admin: episodes"])


@router.get("", response_model=EpisodePage, responses=error_responses(422))
def list_episodes(
    services: AdminServices,
    origin: ProblemOrigin | None = None,
    family: TextQuery = None,
    fixed: bool | None = None,
    task: TextQuery = None,
    run_id: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: DbOffset = 0,
) -> EpisodePage:
    with services.db.session() as s:
        total, rows = EpisodeRepository(s).search(
            origin=origin, family=family, fixed=fixed, task=task, run_id=run_id, limit=limit, offset=offset
        )
        items = [EpisodeOut.model_validate(r, from_attributes=True) for r in rows]
    return EpisodePage(total=total, limit=limit, offset=offset, items=items)


@router.get("/{episode_id}", response_model=EpisodeDetail, responses=error_responses(404, 422))
def get_episode(episode_id: DbId, services: AdminServices) -> EpisodeDetail:
    with services.db.session() as s:
        row = EpisodeRepository(s).get(episode_id)
        if row is None:
            raise HTTPException(404, f"no episode {episode_id}")
        return EpisodeDetail.model_validate(row, from_attributes=True)
