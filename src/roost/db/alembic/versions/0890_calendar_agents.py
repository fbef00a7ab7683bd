"""calendar_agents: the calendar built-in tools for agents (``calendar_list_events``,
``calendar_find_free_slot``, ``calendar_create_event``, ``calendar_move_event``), run by
roost.calendar.agenttools inside agent runs.

Revision ID: 0890
Revises: 0880
Create Date: 2026-12-02
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0890"
down_revision: str | Sequence[str] | None = "0880"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIST_EVENTS_ID = uuid.UUID("019ad9a0-0000-7000-8000-000000000801")
FIND_FREE_SLOT_ID = uuid.UUID("019ad9a0-0000-7000-8000-000000000802")
CREATE_EVENT_ID = uuid.UUID("019ad9a0-0000-7000-8000-000000000803")
MOVE_EVENT_ID = uuid.UUID("019ad9a0-0000-7000-8000-000000000804")

_TIME = {"type": "string", "format": "date-time",
         "description": "ISO 8601 with a UTC offset, e.g. 2027-03-01T09:00:00Z"}
_HOURS = {
    "type": "object", "additionalProperties": False,
    "description": "Only inside these hours (wall-clock times in timezone)",
    "properties": {
        "start": {"type": "string", "default": "09:00", "description": "HH:MM"},
        "end": {"type": "string", "default": "17:00", "description": "HH:MM"},
        "timezone": {"type": "string", "default": "UTC", "description": "IANA zone"},
        "weekdays": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 7},
                     "default": [1, 2, 3, 4, 5], "description": "1 = Monday ... 7 = Sunday"},
    },
}


def _tool(id_: uuid.UUID, name: str, title: str, description: str, schema: dict[str, Any], *,
          read_only: bool, idempotent: bool) -> dict[str, Any]:
    return {"id": id_, "kind": "builtin", "name": name, "title": title,
            "description": description, "category": "calendar", "code_type": "builtin",
            "is_builtin": True,
            "input_schema": {"type": "object", "additionalProperties": False, **schema},
            "annotations": {"readOnlyHint": read_only, "destructiveHint": False,
                            "idempotentHint": idempotent, "openWorldHint": False}}


TOOLS = [
    _tool(LIST_EVENTS_ID, "calendar_list_events", "List calendar events",
          "The user's calendar occurrences (recurring events expanded) between start and end "
          "(at most 62 days), earliest first.",
          {"required": ["start", "end"], "properties": {
              "start": _TIME, "end": _TIME,
              "calendar_id": {"type": "string", "format": "uuid",
                              "description": "One calendar; default: all of the user's"},
              "limit": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}}},
          read_only=True, idempotent=True),
    _tool(FIND_FREE_SLOT_ID, "calendar_find_free_slot", "Find a free slot",
          "Free slots of duration_minutes in the user's calendars between start and end (at "
          "most 62 days), earliest first, on quarter hours, optionally inside working hours.",
          {"required": ["start", "end", "duration_minutes"], "properties": {
              "start": _TIME, "end": _TIME,
              "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 1440},
              "working_hours": _HOURS,
              "count": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3}}},
          read_only=True, idempotent=True),
    _tool(CREATE_EVENT_ID, "calendar_create_event", "Create a calendar event",
          "Book an event in the user's calendar (calendar_id, else their default one). "
          "Refused when the time is busy unless allow_conflict is true.",
          {"required": ["summary", "start"], "properties": {
              "summary": {"type": "string", "minLength": 1, "maxLength": 1000},
              "start": _TIME, "end": _TIME,
              "duration_minutes": {"type": "integer", "minimum": 1, "maximum": 20160,
                                   "description": "Instead of end"},
              "calendar_id": {"type": "string", "format": "uuid"},
              "description": {"type": "string", "maxLength": 10000},
              "location": {"type": "string", "maxLength": 1000},
              "category": {"type": "string", "maxLength": 50},
              "movability_score": {"type": "number", "minimum": 0, "maximum": 1,
                                   "description": "0 = fixed; 0.5 or more: agents may move it"},
              "allow_conflict": {"type": "boolean", "default": False}}},
          read_only=False, idempotent=False),
    _tool(MOVE_EVENT_ID, "calendar_move_event", "Move a calendar event",
          "Move one (non-recurring) event to new_start, or to its next free slot "
          "(next_free_slot: true), keeping its length. Only events marked movable with a "
          "movability_score of 0.5 or more; never onto busy time unless allow_conflict.",
          {"required": ["event_id"], "properties": {
              "event_id": {"type": "string", "format": "uuid"},
              "new_start": _TIME,
              "next_free_slot": {"type": "boolean", "default": False},
              "search_days": {"type": "integer", "minimum": 1, "maximum": 62, "default": 14},
              "working_hours": _HOURS,
              "allow_conflict": {"type": "boolean", "default": False}}},
          read_only=False, idempotent=False),
]


def upgrade() -> None:
    tools = sa.table(
        "tools", sa.column("id", sa.UUID()), sa.column("kind", sa.String()),
        sa.column("name", sa.String()), sa.column("title", sa.String()),
        sa.column("description", sa.Text()), sa.column("category", sa.String()),
        sa.column("input_schema", postgresql.JSONB()), sa.column("annotations", postgresql.JSONB()),
        sa.column("code_type", sa.String()), sa.column("is_builtin", sa.Boolean()),
    )
    op.bulk_insert(tools, TOOLS)


def downgrade() -> None:
    tools = sa.table("tools", sa.column("id", sa.UUID()))
    op.execute(tools.delete().where(tools.c.id.in_(
        [LIST_EVENTS_ID, FIND_FREE_SLOT_ID, CREATE_EVENT_ID, MOVE_EVENT_ID])))
