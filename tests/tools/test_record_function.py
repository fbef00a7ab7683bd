"""``roost_record_tool_call`` (migration 1010): a warm tool call's record in one round
trip.  It writes every column the record has, exactly as given; row-level security
checks its rows under the scope it sets (another user's row is refused and nothing is
written); it sets nothing but the scope; its transaction ends with it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from roost.db.base import utcnow
from roost.db.engine import Database
from roost.errors import Unprocessable
from roost.identity.tenancy import scope_settings
from roost.principal import Principal
from roost.tools import calls
from roost.tools.config import ToolsConfig
from roost.tools.models import ToolRun
from tests.support.identity import make_user
from tests.support.sql import function_inserts

pytestmark = pytest.mark.asyncio(loop_scope="session")

CURRENT_TIME = uuid.UUID("019ad9a0-0000-7000-8000-000000000001")  # a built-in (0500)


def _record(actor: Principal, *, failed: bool = False, **ids: Any) -> calls.CallRecord:
    prepared = calls.PreparedCall(tool_id=CURRENT_TIME, name="current_time", kind="builtin",
                                  spec=None)
    result = calls.CallResult(
        output=None if failed else {"utc": "2026-12-04T15:00:00Z", "nested": {"n": [1, 2.5]}},
        failure=Unprocessable("the tool said no") if failed else None,
        started_at=utcnow(), duration_ms=7)
    return calls.CallRecord(actor, prepared, {"tz": "Europe/Paris", "quote": "it's \"x\""},
                         result, **ids)


async def _row(database: Database, table: str, row_id: uuid.UUID) -> dict[str, Any] | None:
    async with database.transaction() as session:
        found = (await session.execute(
            text(f"SELECT * FROM {table} WHERE id = :id"), {"id": row_id})).mappings().first()
    return dict(found) if found is not None else None


async def test_the_function_inserts_exactly_the_columns_the_record_has(
        database: Database) -> None:
    inserted = await function_inserts(database, "roost_record_tool_call")
    record = _record(Principal(user_id=uuid.uuid4(), is_admin=False, kind="api_key"))
    run, event, audit = (json.loads(row) for row in record.rows_json())
    assert inserted == {"tool_runs": set(run), "clickhouse_analytics": set(event),
                        "audit_logs": set(audit)}


async def test_a_record_is_written_as_given_under_its_callers_scope(
        database: Database, test_settings: Any) -> None:
    alice, _ = await make_user(database)
    actor = Principal(user_id=alice, is_admin=False, kind="api_key")
    cfg = ToolsConfig.from_settings(test_settings)
    prepared = calls.PreparedCall(tool_id=CURRENT_TIME, name="current_time", kind="builtin",
                                  spec=None)
    arguments = {"tz": "Europe/Paris", "quote": "it's \"x\"", "none": None}
    for failed in (False, True):
        ids = {"trace_id": f"trace-{uuid.uuid4()}", "session_id": uuid.uuid4(),
               "message_id": uuid.uuid4(), "run_id": None, "run_step_id": None}
        result = calls.CallResult(
            output=None if failed else {"utc": "2026-12-04T15:00:00Z", "n": [1, 2.5, None]},
            failure=Unprocessable("the tool said no") if failed else None,
            started_at=utcnow(), duration_ms=7)
        run = await calls._record_alone(database, actor, cfg, prepared, arguments, result, **ids)
        # Every column as the returned run has it (times to the microsecond, JSON as sent).
        written = await _row(database, "tool_runs", run.id)
        assert written == {column.name: getattr(run, key)
                           for key, column in ToolRun.__mapper__.columns.items()}
        assert run.user_id == alice and run.status == ("error" if failed else "success")
        async with database.transaction() as session:
            audit = (await session.execute(text(
                "SELECT user_id, action, resource_id, metadata, success, error_message, seq "
                "FROM audit_logs WHERE trace_id = :t"), {"t": ids["trace_id"]})).one()
            event = (await session.execute(text(
                "SELECT user_id, event_type, event_data, session_id, exported, export_attempts "
                "FROM clickhouse_analytics WHERE event_data->>'tool_run_id' = :r"),
                {"r": str(run.id)})).one()
        assert audit.user_id == alice and audit.action == "tool.call"
        assert audit.resource_id == str(CURRENT_TIME) and audit.seq is not None  # its default
        assert audit.metadata["tool_run_id"] == str(run.id)
        assert audit.success is not failed
        assert audit.error_message == ("the tool said no" if failed else None)
        assert event.user_id == alice and event.event_type == "tool.call"
        assert event.event_data["status"] == run.status
        assert event.session_id == ids["session_id"] and event.exported is False
        assert event.export_attempts == 0


async def test_the_rows_are_checked_by_row_level_security_and_nothing_is_half_written(
        database: Database) -> None:
    alice, _ = await make_user(database)
    bob, _ = await make_user(database)
    # A record claiming to be Alice's, sent in Bob's scope: the policy refuses the run.
    forged = _record(Principal(user_id=alice, is_admin=False, kind="api_key"))
    bob_scope = json.dumps(scope_settings(Principal(user_id=bob, is_admin=False, kind="api_key")))
    async with database.autocommit() as driver:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await driver.execute(calls._RECORD_CALL, bob_scope, *forged.rows_json())
        # Only the scope's names may be set: not the search path, not the session's user.
        for name in ("search_path", "session_authorization"):
            with pytest.raises(asyncpg.InvalidParameterValueError, match=name):
                await driver.execute(calls._RECORD_CALL, json.dumps({name: "x"}),
                                     *_record(Principal(user_id=bob, is_admin=False,
                                                        kind="api_key")).rows_json())
        # The scope ended with the statement: the connection is the owner's again.
        assert await driver.fetchval("SELECT current_user") != "roost_app"
        assert not await driver.fetchval("SELECT current_setting('roost.user_id', true)")
    for table, row_id in (("tool_runs", forged.values["id"]), ("audit_logs", forged.audit["id"]),
                          ("clickhouse_analytics", forged.event["id"])):
        assert await _row(database, table, row_id) is None, table
