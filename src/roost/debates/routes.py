"""HTTP routes: /api/v1/debates (start, list, read with turns and ballots, cancel)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, status

from roost.debates import service
from roost.debates.schemas import DebateCreate, DebateDetail, DebateOut, DebateStatus
from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit
from roost.http.routing import RoostRouter
from roost.pagination import DEFAULT_LIMIT, Page

router = RoostRouter(prefix="/api/v1", tags=["debates"])


@router.post("/debates", status_code=status.HTTP_202_ACCEPTED, response_model=DebateOut,
             summary="Start a debate (queued: a worker runs its rounds, then the vote)")
async def start_debate(body: DebateCreate, principal: CurrentPrincipal,
                       db: DbSession) -> DebateOut:
    return service.debate_out(await service.create_debate(db, principal, body))


@router.get("/debates", response_model=Page[DebateOut], summary="Your debates, newest first")
async def list_debates(
    principal: CurrentPrincipal, db: DbSession,
    status_: Annotated[DebateStatus | None, Query(alias="status")] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[DebateOut]:
    rows, next_cursor = await service.list_debates(db, principal, status=status_, limit=limit,
                                                   cursor=cursor)
    return Page[DebateOut](items=[service.debate_out(d) for d in rows], next_cursor=next_cursor)


@router.get("/debates/{debate_id}", response_model=DebateDetail,
            summary="A debate with its turns, every ballot and the result")
async def get_debate(debate_id: uuid.UUID, principal: CurrentPrincipal,
                     db: DbSession) -> DebateDetail:
    return service.detail_out(await service.read_debate(db, principal, debate_id))


@router.post("/debates/{debate_id}/cancel", response_model=DebateOut,
             summary="Cancel an unfinished debate (409 when it is finished)")
async def cancel_debate(debate_id: uuid.UUID, principal: CurrentPrincipal,
                        db: DbSession) -> DebateOut:
    return service.debate_out(await service.cancel_debate(db, principal, debate_id))
