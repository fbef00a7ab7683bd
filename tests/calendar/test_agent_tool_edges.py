"""The calendar agent tools agree with what is stored (docs/calendar.md, "Agent tools"): a
cancelled occurrence is not moved, and times are checked for conflicts in whole seconds."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from roost.calendar import agenttools
from roost.config import Settings
from roost.db.engine import Database
from roost.errors import Unprocessable
from roost.principal import Principal
from tests.calendar.conftest import Headers, make_calendar, make_event


async def _tools(database: Database, user_id: uuid.UUID, settings: Settings) -> Any:
    tools = agenttools.builtin_tools(settings.db_app_role)
    actor = Principal(user_id=user_id, is_admin=False, kind="job")

    async def call(tool_id: uuid.UUID, **arguments: Any) -> dict[str, Any]:
        return await asyncio.wait_for(tools[tool_id](database, actor, arguments, None), 60)

    return call


async def test_moving_a_cancelled_occurrence_is_refused(
        database: Database, client: httpx.AsyncClient, test_settings: Settings,
        user: tuple[uuid.UUID, Headers]) -> None:
    """An occurrence the user removed (PUT .../occurrences/{rid} status cancelled) is listed
    as cancelled; an agent asked to move it is told it is cancelled (a 422; it was answered
    "moved": true for an event still removed, shown nowhere)."""
    user_id, headers = user
    call = await _tools(database, user_id, test_settings)
    cal = await make_calendar(client, headers)
    series = await make_event(client, headers, cal["id"], summary="Weekly",
                              start_time="2027-05-03T08:00:00Z",
                              end_time="2027-05-03T09:00:00Z",
                              recurrence_rule="FREQ=WEEKLY;COUNT=3")
    resp = await client.put(f"/api/v1/calendars/{cal['id']}/events/{series['id']}/"
                            "occurrences/2027-05-10T08:00:00Z", headers=headers,
                            json={"status": "cancelled"})
    assert resp.status_code in (200, 201), resp.text
    with pytest.raises(Unprocessable, match="is cancelled"):
        await call(agenttools.MOVE_EVENT_ID, event_id=resp.json()["id"],
                   new_start="2027-05-11T08:00:00Z")


async def test_a_fraction_of_a_second_is_no_conflict(
        database: Database, client: httpx.AsyncClient, test_settings: Settings,
        user: tuple[uuid.UUID, Headers]) -> None:
    """An event is stored in whole seconds (12:00:00.5 is kept as 12:00:00): an agent
    booking the hour 12:00:00.5 before a 13:00 meeting gets 12:00-13:00, which is free
    (it was "not free": busy for the half second its unstored fraction overlapped)."""
    user_id, headers = user
    call = await _tools(database, user_id, test_settings)
    cal = await make_calendar(client, headers)
    await make_event(client, headers, cal["id"], summary="Meeting",
                     start_time="2027-05-03T13:00:00Z", end_time="2027-05-03T14:00:00Z")
    made = await call(agenttools.CREATE_EVENT_ID, summary="Lunch",
                      start="2027-05-03T12:00:00.500Z", duration_minutes=60)
    assert made["event"]["end"] == "2027-05-03T13:00:00Z"
