"""Admin audit API: filtered, cursor-paginated reads and chain verification."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import Query

from roost.audit import service
from roost.audit.schemas import AuditRecordOut, ChainReportOut
from roost.http.auth import AdminPrincipal
from roost.http.deps import Cursor, DbSession
from roost.http.reads import ReadSession, replica_fallback
from roost.http.routing import RoostRouter
from roost.inputs import IsoDatetime
from roost.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page

router = RoostRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("/logs", response_model=Page[AuditRecordOut], summary="Query the audit log")
@replica_fallback
async def list_audit_logs(
    session: ReadSession,
    _admin: AdminPrincipal,
    user_id: uuid.UUID | None = None,
    persona_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=128)] = None,
    category: Literal["action", "access", "error", "system"] | None = None,
    resource_type: Annotated[str | None, Query(max_length=64)] = None,
    resource_id: Annotated[str | None, Query(max_length=128)] = None,
    correlation_id: Annotated[str | None, Query(max_length=64)] = None,
    trace_id: Annotated[str | None, Query(max_length=255)] = None,
    success: bool | None = None,
    since: Annotated[IsoDatetime | None, Query(description="inclusive, ISO 8601")] = None,
    until: Annotated[IsoDatetime | None, Query(description="exclusive, ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[AuditRecordOut]:
    filters = service.AuditFilter(
        user_id=user_id, persona_id=persona_id, run_id=run_id, action=action, category=category,
        resource_type=resource_type, resource_id=resource_id, correlation_id=correlation_id,
        trace_id=trace_id, success=success, since=since, until=until,
    )
    rows, next_cursor = await service.query(session, filters, limit=limit, cursor=cursor)
    return Page[AuditRecordOut](
        items=[AuditRecordOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get("/verify", response_model=ChainReportOut, summary="Verify the hash chain")
async def verify_audit_chain(session: DbSession, _admin: AdminPrincipal) -> ChainReportOut:
    return ChainReportOut(**asdict(await service.verify_chain(session)))
