"""Writing to the analytics outbox: :func:`emit` adds one ``clickhouse_analytics`` row to
the caller's transaction, so the event exists exactly when the action it describes was
committed.  The export job (roost.analytics.export) ships it later."""

from __future__ import annotations

import uuid
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from roost.analytics.models import AnalyticsEvent
from roost.db.base import utcnow, uuid7

# The event types Roost writes (event_data keys in docs/analytics.md).
EVENT_TYPES: Final = ("llm.call", "agent.run", "tool.call", "auth.login")


def emit(
    session: AsyncSession, event_type: str, data: dict[str, Any], *,
    user_id: uuid.UUID | None = None, session_id: uuid.UUID | None = None,
) -> AnalyticsEvent:
    """Add the event to ``session`` (no flush: it goes with the caller's next one).
    ``data`` must be JSON (ids and decimals as strings) and hold no secrets or content."""
    row = AnalyticsEvent(**event_values(event_type, data, user_id=user_id,
                                        session_id=session_id))
    session.add(row)
    return row


def event_values(event_type: str, data: dict[str, Any], *, user_id: uuid.UUID | None = None,
                 session_id: uuid.UUID | None = None) -> dict[str, Any]:
    """The event's columns, for :func:`emit` or a caller that inserts it within another
    statement (``insert(AnalyticsEvent).values(**event_values(...))``)."""
    return {"id": uuid7(), "event_type": event_type, "event_data": data, "user_id": user_id,
            "session_id": session_id, "timestamp": utcnow(), "exported": False,
            "exported_at": None, "export_attempts": 0}
