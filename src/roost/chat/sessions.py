"""Chat sessions and their state: create, list, read, update, delete.

Access: a session is visible to its owner and to administrators; anyone else gets a 404
(never a 403 that would confirm the id exists).  Row-level security repeats the check in
PostgreSQL for every transaction that acts for a principal.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Final

import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit import service as audit
from roost.chat.models import (
    ChatSession,
    SessionState,
)
from roost.chat.schemas import (
    SessionCreate,
    SessionOut,
    SessionUpdate,
    StateOut,
    StatePut,
)
from roost.db.base import utcnow, uuid7
from roost.errors import Conflict, NotFound, PayloadTooLarge, RoostError, Unprocessable
from roost.identity.models import User
from roost.pagination import (
    DEFAULT_LIMIT,
    newest_first,
)
from roost.principal import Principal
from roost.workspace.service import require_project

log = structlog.get_logger(__name__)

SESSION = "chat_session"
_MAX_STATE_BYTES = 256 * 1024
# A session's model "agent:<slug>" names an agent (roost.agents answers the session's
# posts: the routes' chat_model_handlers), not a model an LLM provider serves.
AGENT_MODEL_PREFIX: Final = "agent:"


def provider_model(model: str | None) -> str | None:
    """A session's ``model`` as a provider's model: None (the default model) when it
    names an agent."""
    return None if model is None or model.startswith(AGENT_MODEL_PREFIX) else model


def session_out(row: ChatSession) -> SessionOut:
    return SessionOut.model_validate(row)


async def get_session(
    session: AsyncSession, actor: Principal, session_id: uuid.UUID, *, lock: bool = False
) -> ChatSession:
    stmt = select(ChatSession).where(ChatSession.id == session_id)
    if lock:
        stmt = stmt.with_for_update()
    row = (await session.scalars(stmt)).one_or_none()
    if row is None or not (actor.is_admin or row.user_id == actor.user_id):
        raise NotFound(f"no chat session with id {session_id}")
    return row


async def create_session(session: AsyncSession, actor: Principal, data: SessionCreate) -> ChatSession:
    owner = data.owner_id or actor.user_id
    if data.owner_id is not None and data.owner_id != actor.user_id and not actor.is_admin:
        raise NotFound("owner_id: only administrators may create sessions for someone else")
    if owner is None:
        raise Unprocessable("the operator token has no user: pass owner_id to name the "
                            "session's owner", extra={"field": "owner_id"})
    await _require_owner_project(session, actor, owner, data.project_id)
    row = ChatSession(
        id=uuid7(), user_id=owner, title=data.title, model=data.model, project_id=data.project_id,
        enable_tools=data.enable_tools, external_id=data.external_id, expires_at=data.expires_at,
        status="active", message_count=0, request_count=0,
    )
    session.add(row)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise _session_conflict(exc, data.external_id) from None
    await audit.record(
        session, "chat.session.create", user_id=actor.user_id, resource_type=SESSION,
        resource_id=row.id,
        changes={"owner_id": str(owner), "title": data.title, "model": data.model,
                 "enable_tools": data.enable_tools, "external_id": data.external_id},
    )
    return row


async def _require_owner_project(session: AsyncSession, actor: Principal, owner_id: uuid.UUID,
                                 project_id: uuid.UUID | None) -> None:
    """The session's project must be one its owner sees (another user's: 404 naming
    project_id): an administrator who sees every project must not file a user's session
    in a project the user cannot open."""
    if project_id is None or owner_id == actor.user_id:
        await require_project(session, actor, project_id)
        return
    if await session.get(User, owner_id) is None:
        raise NotFound("owner_id names no user")
    await require_project(session, actor, project_id, owner_id=owner_id)


def _session_conflict(exc: IntegrityError, external_id: str | None) -> RoostError:
    text = str(exc.orig)
    if "uq_chat_sessions_user_id_external_id" in text:
        return Conflict(f"you already have a session with external_id {external_id!r}")
    if "fk_chat_sessions_user_id_users" in text:
        return NotFound("owner_id names no user")
    if "fk_chat_sessions_project_id_projects" in text:  # deleted since it was checked
        return NotFound("project_id names no project (it was deleted meanwhile)",
                        extra={"field": "project_id"})
    return Conflict("the session conflicts with data already stored")


async def list_sessions(
    session: AsyncSession, actor: Principal, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
    external_id: str | None = None, user_id: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
) -> tuple[list[ChatSession], str | None]:
    """Newest first (created_at, id); the caller's own unless an admin asks for a user's."""
    stmt = select(ChatSession)
    if user_id is not None:
        if user_id != actor.user_id and not actor.is_admin:
            return [], None
        stmt = stmt.where(ChatSession.user_id == user_id)
    elif actor.user_id is not None:
        stmt = stmt.where(ChatSession.user_id == actor.user_id)
    if external_id is not None:
        stmt = stmt.where(ChatSession.external_id == external_id)
    if project_id is not None:
        stmt = stmt.where(ChatSession.project_id == project_id)
    return await newest_first(session, stmt, ChatSession.created_at, ChatSession.id,
                              limit=limit, cursor=cursor)


async def update_session(
    session: AsyncSession, actor: Principal, session_id: uuid.UUID, data: SessionUpdate
) -> ChatSession:
    row = await get_session(session, actor, session_id, lock=True)
    if "project_id" in data.model_fields_set and data.project_id != row.project_id:
        await _require_owner_project(session, actor, row.user_id, data.project_id)
    changes: dict[str, Any] = {}
    for name, value in data.model_dump(exclude_unset=True).items():
        if value is None and name in ("enable_tools", "status"):
            continue  # not nullable: an explicit null means "leave it"
        if getattr(row, name) != value:
            changes[name] = [getattr(row, name), value]  # as JSON: audit.record
            setattr(row, name, value)
    if changes:
        row.updated_at = utcnow()
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as exc:
            raise _session_conflict(exc, data.external_id) from None
        await audit.record(session, "chat.session.update", user_id=actor.user_id,
                           resource_type=SESSION, resource_id=row.id, changes=changes)
    return row


async def delete_session(session: AsyncSession, actor: Principal, session_id: uuid.UUID) -> None:
    row = await get_session(session, actor, session_id, lock=True)
    await session.execute(delete(ChatSession).where(ChatSession.id == row.id))
    await audit.record(
        session, "chat.session.delete", user_id=actor.user_id, resource_type=SESSION,
        resource_id=row.id, changes={"owner_id": str(row.user_id), "messages": row.message_count},
    )


# --- session state ----------------------------------------------------------------------


async def get_state(session: AsyncSession, actor: Principal, session_id: uuid.UUID) -> StateOut:
    await get_session(session, actor, session_id)
    row = await session.get(SessionState, session_id)
    if row is None:
        return StateOut(session_id=session_id, state={}, version=0, updated_at=None)
    return StateOut(session_id=session_id, state=row.state, version=row.version,
                    updated_at=row.updated_at)


async def put_state(
    session: AsyncSession, actor: Principal, session_id: uuid.UUID, data: StatePut
) -> StateOut:
    chat_session = await get_session(session, actor, session_id, lock=True)
    # Bytes of its compact UTF-8 JSON, as the 413 says (not ASCII escapes: six per kana).
    if len(json.dumps(data.state, ensure_ascii=False, separators=(",", ":")).encode()) \
            > _MAX_STATE_BYTES:
        raise PayloadTooLarge(f"session state is larger than {_MAX_STATE_BYTES} bytes")
    row = await session.get(SessionState, session_id, with_for_update=True)
    current = row.version if row is not None else 0
    if data.expected_version is not None and data.expected_version != current:
        raise Conflict(
            f"session state is at version {current}, not {data.expected_version}: "
            "read it again and retry", extra={"version": current},
        )
    if row is None:
        row = SessionState(session_id=session_id, user_id=chat_session.user_id, state=data.state,
                           version=1, updated_at=utcnow())
        session.add(row)
    else:
        row.state, row.version, row.updated_at = data.state, row.version + 1, utcnow()
    await session.flush()
    await audit.record(session, "chat.state.put", user_id=actor.user_id, resource_type=SESSION,
                       resource_id=session_id, metadata={"version": row.version,
                                                         "keys": sorted(data.state)[:50]})
    return StateOut(session_id=session_id, state=row.state, version=row.version,
                    updated_at=row.updated_at)
