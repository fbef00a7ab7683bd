"""Agents and the calendar: a user imports their .ics file, an agent (a real run against
the OpenAI-compatible stub) finds a free slot and books it; and the four calendar tools'
rules (bounded ranges, busy time, who may move what, another user's ids)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.calendar import agenttools
from roost.config import Settings
from roost.db.engine import Database
from roost.errors import NotFound, Unprocessable
from roost.principal import Principal
from roost.tasks.worker import Worker
from tests.agents.conftest import make_agent, wait_for_run, worker  # noqa: F401 - fixture
from tests.calendar.conftest import Headers, make_calendar, make_event
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls

TOOLS = ["calendar_list_events", "calendar_find_free_slot", "calendar_create_event",
         "calendar_move_event"]

# Monday 2027-03-01 in Berlin (CET, UTC+1): busy 09:00-12:00 and 13:00-17:30 local, so the
# only free working hour is 12:00-13:00 local = 11:00-12:00Z.
ICS = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//test//EN\r
BEGIN:VEVENT\r
UID:standup@example.test\r
DTSTAMP:20270101T000000Z\r
DTSTART;TZID=Europe/Berlin:20270301T090000\r
DTEND;TZID=Europe/Berlin:20270301T120000\r
SUMMARY:Planning\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:review@example.test\r
DTSTAMP:20270101T000000Z\r
DTSTART;TZID=Europe/Berlin:20270301T130000\r
DTEND;TZID=Europe/Berlin:20270301T173000\r
SUMMARY:Reviews\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:weekly@example.test\r
DTSTAMP:20270101T000000Z\r
DTSTART;TZID=Europe/Berlin:20270302T080000\r
DTEND;TZID=Europe/Berlin:20270302T083000\r
RRULE:FREQ=WEEKLY;BYDAY=TU;COUNT=4\r
SUMMARY:Weekly\r
END:VEVENT\r
END:VCALENDAR\r
"""
HOURS = {"start": "09:00", "end": "17:00", "timezone": "Europe/Berlin"}


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    """The agents tests' settings (stub provider, tools timeouts)."""
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_timeout_s=5.0,
                    llm_local_model=False, knowledge_embedding_provider="hash",
                    tools_allowed_hosts="127.0.0.1", tools_call_timeout_s=5.0)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


async def _run(client: httpx.AsyncClient, headers: Headers, agent_id: uuid.UUID,
               text_: str) -> dict[str, Any]:
    created = await client.post(f"/api/v1/agents/{agent_id}/runs", headers=headers,
                                json={"input": text_})
    assert created.status_code in (201, 202), created.text
    return await wait_for_run(client, headers, created.json()["id"])


async def _busy(client: httpx.AsyncClient, headers: Headers, start: str,
                end: str) -> list[dict[str, str]]:
    resp = await client.get("/api/v1/calendars/freebusy", headers=headers,
                            params={"start": start, "end": end})
    assert resp.status_code == 200, resp.text
    busy: list[dict[str, str]] = resp.json()["busy"]
    return busy


async def test_an_agent_finds_a_free_slot_in_the_imported_calendar_and_books_it(
    admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, client: httpx.AsyncClient,  # noqa: F811
) -> None:
    user_id, headers = user
    cal = await make_calendar(client, headers, "Work", "Europe/Berlin")
    imported = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                                 files={"file": ("mine.ics", ICS, "text/calendar")})
    assert imported.status_code == 200, imported.text
    assert imported.json()["created"] == 3
    day = ("2027-03-01T00:00:00Z", "2027-03-02T00:00:00Z")
    assert await _busy(client, headers, "2027-03-01T11:00:00Z", "2027-03-01T12:00:00Z") == []

    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=TOOLS)
    stub.script(
        ToolCalls(Call("calendar_find_free_slot", {
            "start": day[0], "end": day[1], "duration_minutes": 60, "working_hours": HOURS})),
        ToolCalls(Call("calendar_create_event", {
            "summary": "Call with Ada", "start": "2027-03-01T11:00:00Z",
            "duration_minutes": 60})),
        Reply("Booked: Monday 12:00-13:00."))
    run = await _run(client, headers, agent.id, "Find an hour for a call with Ada on Monday.")
    assert run["status"] == "completed", run

    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    calls = [s for s in steps if s["step_type"] == "tool_call"]
    assert [c["status"] for c in calls] == ["completed", "completed"], calls
    assert "2027-03-01T11:00:00Z" in str(calls[0]["output"])  # the one free working hour
    agenda = (await client.get("/api/v1/calendars/agenda", headers=headers,
                               params={"start": day[0], "end": day[1]})).json()["occurrences"]
    assert [(o["summary"], o["start"], o["end"]) for o in agenda] == [
        ("Planning", "2027-03-01T08:00:00Z", "2027-03-01T11:00:00Z"),
        ("Call with Ada", "2027-03-01T11:00:00Z", "2027-03-01T12:00:00Z"),
        ("Reviews", "2027-03-01T12:00:00Z", "2027-03-01T16:30:00Z"),
    ]
    assert agenda[1]["calendar_id"] == cal["id"]  # the user's only calendar

    # Booking over busy time is the tool's error (the run goes on), nothing is created.
    stub.script(ToolCalls(Call("calendar_create_event", {
        "summary": "Clash", "start": "2027-03-01T09:00:00Z", "duration_minutes": 30})),
        Reply("That time is taken."))
    run = await _run(client, headers, agent.id, "Book 10:00 Monday.")
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    failed = next(s for s in steps if s["step_type"] == "tool_call")
    assert failed["status"] == "failed" and "not free" in failed["error"], failed
    assert len((await client.get("/api/v1/calendars/agenda", headers=headers, params={
        "start": day[0], "end": day[1]})).json()["occurrences"]) == 3


async def _tools(database: Database, settings: Settings, user_id: uuid.UUID) -> Any:
    tools = agenttools.builtin_tools(settings.db_app_role)
    actor = Principal(user_id=user_id, is_admin=False, kind="job")

    async def call(tool_id: uuid.UUID, **arguments: Any) -> dict[str, Any]:
        return await tools[tool_id](database, actor, arguments, None)

    return call


async def test_calendar_tools_rules(
    database: Database, client: httpx.AsyncClient, test_settings: Settings,
    user: tuple[uuid.UUID, Headers], other_user: tuple[uuid.UUID, Headers],
) -> None:
    user_id, headers = user
    call = await _tools(database, test_settings, user_id)

    # No calendar yet: create_event makes the "Default Calendar".
    made = await call(agenttools.CREATE_EVENT_ID, summary="Dentist",
                      start="2027-05-03T08:00:00Z", end="2027-05-03T09:00:00Z")
    cal_id = made["event"]["calendar_id"]
    cals = (await client.get("/api/v1/calendars", headers=headers)).json()
    assert [c["name"] for c in cals] == ["Default Calendar"] and cals[0]["id"] == cal_id
    fixed = await make_event(client, headers, cal_id, summary="Board meeting",
                             start_time="2027-05-03T10:00:00Z", end_time="2027-05-03T11:00:00Z",
                             movability_score=0.0)
    series = await make_event(client, headers, cal_id, summary="Gym",
                              start_time="2027-05-03T17:00:00Z", end_time="2027-05-03T18:00:00Z",
                              recurrence_rule="FREQ=DAILY;COUNT=5")
    not_movable = await make_event(client, headers, cal_id, summary="Flight",
                                   start_time="2027-05-04T06:00:00Z",
                                   end_time="2027-05-04T08:00:00Z", is_movable=False)

    listed = await call(agenttools.LIST_EVENTS_ID, start="2027-05-03T00:00:00Z",
                        end="2027-05-05T00:00:00Z", limit=3)
    assert [o["summary"] for o in listed["occurrences"]] == ["Dentist", "Board meeting", "Gym"]
    assert listed["truncated"] is True

    # Free slots: around the busy hours, inside working hours, on quarter hours.
    slots = await call(agenttools.FIND_FREE_SLOT_ID, start="2027-05-03T07:50:00Z",
                       end="2027-05-04T00:00:00Z", duration_minutes=90, count=3,
                       working_hours={"start": "09:00", "end": "18:00", "timezone": "UTC"})
    assert slots["slots"] == [{"start": "2027-05-03T11:00:00Z", "end": "2027-05-03T12:30:00Z"},
                              {"start": "2027-05-03T12:30:00Z", "end": "2027-05-03T14:00:00Z"},
                              {"start": "2027-05-03T14:00:00Z", "end": "2027-05-03T15:30:00Z"}]

    # Moving: only movable single events, never onto busy time.
    for ev, why in ((fixed, "fixed for agents"), (series, "recurring series"),
                    (not_movable, "is_movable false")):
        with pytest.raises(Unprocessable, match=why):
            await call(agenttools.MOVE_EVENT_ID, event_id=ev["id"], next_free_slot=True)
    with pytest.raises(Unprocessable, match="not free"):
        await call(agenttools.MOVE_EVENT_ID, event_id=made["event"]["event_id"],
                   new_start="2027-05-03T10:30:00Z")
    moved = await call(agenttools.MOVE_EVENT_ID, event_id=made["event"]["event_id"],
                       new_start="2027-05-03T10:30:00Z", allow_conflict=True)
    assert moved["event"]["start"] == "2027-05-03T10:30:00Z"
    assert moved["from"] == {"start": "2027-05-03T08:00:00Z", "end": "2027-05-03T09:00:00Z"}
    # To its next free slot: after its current end, inside the working hours given (its
    # own busy time does not count).
    moved = await call(agenttools.MOVE_EVENT_ID, event_id=made["event"]["event_id"],
                       next_free_slot=True,
                       working_hours={"start": "12:00", "end": "16:00", "timezone": "UTC"})
    assert (moved["event"]["start"], moved["event"]["end"]) == ("2027-05-03T12:00:00Z",
                                                                "2027-05-03T13:00:00Z")
    with pytest.raises(Unprocessable, match="not free"):
        await call(agenttools.CREATE_EVENT_ID, summary="Overlap", start="2027-05-03T12:30:00Z",
                   duration_minutes=15)

    # Bad arguments: clear messages.
    bad: list[tuple[uuid.UUID, dict[str, Any], str]] = [
        (agenttools.LIST_EVENTS_ID, {"start": "2027-01-01T00:00:00Z",
                                     "end": "2027-06-01T00:00:00Z"}, "longer than 62 days"),
        (agenttools.LIST_EVENTS_ID, {"start": "2027-01-02T00:00:00Z",
                                     "end": "2027-01-01T00:00:00Z"}, "end must be after start"),
        (agenttools.LIST_EVENTS_ID, {"start": "2027-01-01T00:00:00",
                                     "end": "2027-01-02T00:00:00Z"}, "timezone"),
        (agenttools.FIND_FREE_SLOT_ID, {"start": "2027-01-01T00:00:00Z",
                                        "end": "2027-01-02T00:00:00Z"}, "duration_minutes"),
        (agenttools.FIND_FREE_SLOT_ID, {"start": "2027-01-01T00:00:00Z",
                                        "end": "2027-01-02T00:00:00Z", "duration_minutes": 30,
                                        "working_hours": {"timezone": "Mars/Olympus"}},
         "unknown time zone"),
        (agenttools.CREATE_EVENT_ID, {"summary": "x", "start": "2027-01-01T00:00:00Z"},
         "either end or duration_minutes"),
        (agenttools.CREATE_EVENT_ID, {"summary": "x", "start": "2027-01-01T00:00:00Z",
                                      "duration_minutes": 10, "colour": "red"}, "colour"),
        (agenttools.MOVE_EVENT_ID, {"event_id": made["event"]["event_id"]},
         "either new_start or next_free_slot"),
    ]
    for tool_id, arguments, message in bad:
        with pytest.raises(Unprocessable, match=message):
            await call(tool_id, **arguments)

    # Another user's ids are unknown; their agent sees none of this calendar.
    other_id, _ = other_user
    theirs = await _tools(database, test_settings, other_id)
    with pytest.raises(NotFound):
        await theirs(agenttools.MOVE_EVENT_ID, event_id=made["event"]["event_id"],
                     next_free_slot=True)
    with pytest.raises(NotFound):
        await theirs(agenttools.CREATE_EVENT_ID, summary="x", calendar_id=cal_id,
                     start="2027-05-03T08:00:00Z", duration_minutes=10)
    with pytest.raises(NotFound):
        await theirs(agenttools.LIST_EVENTS_ID, calendar_id=cal_id,
                     start="2027-05-03T00:00:00Z", end="2027-05-04T00:00:00Z")
    nothing = await theirs(agenttools.LIST_EVENTS_ID, start="2027-05-03T00:00:00Z",
                           end="2027-05-04T00:00:00Z")
    assert nothing["occurrences"] == []
    after = (await client.get(f"/api/v1/calendars/{cal_id}/events/{made['event']['event_id']}",
                              headers=headers)).json()
    assert after["start_time"].startswith("2027-05-03T12:00:00")


async def test_create_event_ending_after_9999_is_a_tool_error(
        database: Database, test_settings: Settings, user: tuple[uuid.UUID, Headers]) -> None:
    """calendar_create_event whose end would be after the year 9999 is the tool's 422, not
    an OverflowError out of the tool."""
    call = await _tools(database, test_settings, user[0])
    with pytest.raises(Unprocessable):
        await call(agenttools.CREATE_EVENT_ID, summary="late", start="9999-12-31T23:50:00Z",
                   duration_minutes=20)


@pytest.mark.parametrize("allow_conflict", [False, True])
async def test_move_event_ending_after_9999_is_a_tool_error(
        database: Database, test_settings: Settings, client: httpx.AsyncClient,
        user: tuple[uuid.UUID, Headers], allow_conflict: bool) -> None:
    """calendar_move_event to a start whose end would be after the year 9999 is a clear
    4xx for the model, not an OverflowError out of the tool."""
    user_id, headers = user
    cal = await make_calendar(client, headers)
    ev = await make_event(client, headers, cal["id"], summary="x", start_time="2027-01-01T09:00:00Z",
                            end_time="2027-01-01T10:00:00Z")
    call = await _tools(database, test_settings, user_id)
    with pytest.raises(Unprocessable):
        await call(agenttools.MOVE_EVENT_ID, event_id=ev["id"],
                   new_start="9999-12-31T23:30:00Z", allow_conflict=allow_conflict)


@pytest.mark.parametrize("tool", ["find_free_slot", "move_event"])
async def test_an_unknown_working_hours_zone_is_not_quoted_in_the_tool_error(
        database: Database, test_settings: Settings, user: tuple[uuid.UUID, Headers],
        tool: str) -> None:
    """A ``working_hours.timezone`` that is no zone is the tool's 422 without the value
    (the model may have copied it from the conversation: a tool's errors never quote
    arguments), as ``current_time``'s unknown zone."""
    call = await _tools(database, test_settings, user[0])
    secret = "sk-live-Zx9QeT4u7AbCdEf0123456789"
    extra: dict[str, Any] = (
        {"start": "2027-01-01T00:00:00Z", "end": "2027-01-02T00:00:00Z",
         "duration_minutes": 30} if tool == "find_free_slot"
        else {"event_id": str(uuid.uuid4()), "next_free_slot": True})
    tool_id = agenttools.FIND_FREE_SLOT_ID if tool == "find_free_slot" \
        else agenttools.MOVE_EVENT_ID
    with pytest.raises(Unprocessable, match="unknown time zone") as refused:
        await call(tool_id, working_hours={"timezone": secret}, **extra)
    assert "sk-live" not in str(refused.value)


async def test_parallel_creates_without_a_calendar_share_one_default_calendar(
        database: Database, test_settings: Settings, user: tuple[uuid.UUID, Headers]) -> None:
    """Two calendar_create_event calls at once for a user without a calendar (an agent's
    parallel tool calls) both land in the one "Default Calendar", never a raw
    IntegrityError out of the tool."""
    call = await _tools(database, test_settings, user[0])
    results = await asyncio.gather(
        call(agenttools.CREATE_EVENT_ID, summary="a", start="2027-05-03T08:00:00Z",
             duration_minutes=30, allow_conflict=True),
        call(agenttools.CREATE_EVENT_ID, summary="b", start="2027-05-04T08:00:00Z",
             duration_minutes=30, allow_conflict=True), return_exceptions=True)
    assert not any(isinstance(r, BaseException) for r in results), results
    assert len({r["event"]["calendar_id"] for r in results  # type: ignore[index]
                }) == 1


@pytest.mark.parametrize("field", ["summary", "location", "description"])
async def test_create_event_with_a_nul_is_a_tool_error(
        database: Database, test_settings: Settings, user: tuple[uuid.UUID, Headers],
        field: str) -> None:
    """A NUL in calendar_create_event's texts is the tool's 422 the model sees (the
    event's own checks), not a ValidationError escaping the tool call."""
    call = await _tools(database, test_settings, user[0])
    args: dict[str, Any] = {"summary": "Dentist", "start": "2027-05-03T08:00:00Z",
                            "duration_minutes": 30, field: "a\x00b"}
    with pytest.raises(Unprocessable, match=field):
        await call(agenttools.CREATE_EVENT_ID, **args)


@pytest.mark.parametrize("extra", [{}, {"working_hours": {"start": "09:00", "end": "17:00"}},
                                   {"working_hours": {"timezone": "Pacific/Kiritimati"}}])
async def test_move_event_to_the_next_free_slot_searches_up_to_the_calendars_end(
        database: Database, test_settings: Settings, client: httpx.AsyncClient,
        user: tuple[uuid.UUID, Headers], extra: dict[str, Any]) -> None:
    """calendar_move_event's next_free_slot near the year 9999 searches up to 9999-12-30
    (recurrence.LATEST): a slot there, or the tool's 422, never an OverflowError."""
    user_id, headers = user
    cal = await make_calendar(client, headers)
    ev = await make_event(client, headers, cal["id"], summary="late",
                          start_time="9999-12-20T09:00:00Z", end_time="9999-12-20T10:00:00Z")
    call = await _tools(database, test_settings, user_id)
    moved = await call(agenttools.MOVE_EVENT_ID, event_id=ev["id"], next_free_slot=True,
                       search_days=62, **extra)
    assert "9999-12-20" <= moved["event"]["start"] < "9999-12-30"
    long = await make_event(client, headers, cal["id"], summary="long",
                            start_time="9000-01-01T00:00:00Z", end_time="9999-12-20T00:00:00Z")
    with pytest.raises(Unprocessable, match="9999-12-30"):
        await call(agenttools.MOVE_EVENT_ID, event_id=long["id"], next_free_slot=True, **extra)


async def test_an_agent_moves_an_event_longer_than_a_range_query_checking_all_of_it(
        database: Database, client: httpx.AsyncClient, test_settings: Settings,
        user: tuple[uuid.UUID, Headers]) -> None:
    """calendar_move_event with new_start checks an event lasting over a year for conflicts
    over all of its length (a range query's 366 days at a time), never answering 'the range
    is longer than 366 days' to an agent that gave no range."""
    user_id, headers = user
    cal = await make_calendar(client, headers)
    ev = await make_event(client, headers, cal["id"], summary="Sabbatical",
                          start_time="2027-03-01T09:00:00Z", end_time="2028-06-01T09:00:00Z")
    await make_event(client, headers, cal["id"], summary="late", is_movable=False,
                     start_time="2031-02-01T09:00:00Z", end_time="2031-02-01T10:00:00Z")
    call = await _tools(database, test_settings, user_id)
    with pytest.raises(Unprocessable, match="2031-02-01T09:00:00Z"):  # in its second year
        await call(agenttools.MOVE_EVENT_ID, event_id=ev["id"],
                   new_start="2030-01-01T09:00:00Z")
    moved = await call(agenttools.MOVE_EVENT_ID, event_id=ev["id"],
                       new_start="2032-01-01T09:00:00Z")
    assert (moved["event"]["start"], moved["event"]["end"]) == (
        "2032-01-01T09:00:00Z", "2033-04-03T09:00:00Z")  # 458 days
