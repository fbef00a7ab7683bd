"""The event log of a chat session (``chat_history``): what a client streamed or did,
replayed oldest first; the event JSON is stored encrypted.
"""

from __future__ import annotations

import json
import uuid

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit import service as audit
from roost.chat.keys import decrypt
from roost.chat.models import (
    ChatHistoryEvent,
)
from roost.chat.schemas import (
    HistoryEventCreate,
    HistoryEventOut,
)
from roost.chat.sessions import SESSION, get_session
from roost.db.base import utcnow, uuid7
from roost.errors import NotFound, PayloadTooLarge
from roost.llm.gateway import LLMGateway
from roost.pagination import (
    DEFAULT_LIMIT,
    after_time_id,
    page_of,
    time_id_cursor,
)
from roost.principal import Principal
from roost.security.crypto import MessageCipher

log = structlog.get_logger(__name__)

_MAX_EVENT_BYTES = 256 * 1024


def event_out(cipher: MessageCipher, row: ChatHistoryEvent) -> HistoryEventOut:
    try:
        message = json.loads(decrypt(cipher, row.message))
    except ValueError:
        message = {}
    return HistoryEventOut(id=row.id, session_id=row.session_id, event_type=row.event_type,
                           message=message, created_at=row.created_at)


async def add_event(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, session_id: uuid.UUID,
    data: HistoryEventCreate,
) -> HistoryEventOut:
    chat_session = await get_session(session, actor, session_id)
    raw = json.dumps(data.message, separators=(",", ":"), ensure_ascii=False)
    if len(raw.encode()) > _MAX_EVENT_BYTES:  # bytes, as the 413 says (not characters)
        raise PayloadTooLarge(f"history event is larger than {_MAX_EVENT_BYTES} bytes")
    row = ChatHistoryEvent(id=uuid7(), session_id=session_id, user_id=chat_session.user_id,
                           event_type=data.event_type, message=gateway.cipher.encrypt(raw),
                           created_at=utcnow())
    session.add(row)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        # The session was deleted since it was read (no lock: events are many and
        # cheap): as gone as if it had been before.
        if "fk_chat_history_session_id_chat_sessions" in str(exc.orig):
            raise NotFound(f"no chat session with id {session_id}") from None
        raise
    await audit.record(session, "chat.history.create", user_id=actor.user_id,
                       resource_type=SESSION, resource_id=session_id,
                       metadata={"event_id": str(row.id), "event_type": data.event_type})
    return event_out(gateway.cipher, row)


async def list_events(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, session_id: uuid.UUID, *,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None, event_type: str | None = None,
) -> tuple[list[HistoryEventOut], str | None]:
    """Oldest first (the log replays a conversation); keyset on (created_at, id)."""
    await get_session(session, actor, session_id)
    stmt = select(ChatHistoryEvent).where(ChatHistoryEvent.session_id == session_id)
    if event_type is not None:
        stmt = stmt.where(ChatHistoryEvent.event_type == event_type)
    if cursor is not None:
        stmt = stmt.where(after_time_id(cursor, ChatHistoryEvent.created_at, ChatHistoryEvent.id))
    stmt = stmt.order_by(ChatHistoryEvent.created_at, ChatHistoryEvent.id).limit(limit + 1)
    rows, next_cursor = page_of((await session.scalars(stmt)).all(), limit,
                                lambda r: time_id_cursor(r.created_at, r.id))
    return [event_out(gateway.cipher, r) for r in rows], next_cursor
