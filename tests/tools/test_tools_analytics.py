"""Tool analytics: per tool calls, outcomes, error rate and p50/p95 duration over a
window, from real calls and from runs of known durations; each user sees their own runs,
administrators everyone's; bad windows and foreign tools are clear 4xx problems."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.principal import Principal
from roost.tools import analytics
from roost.tools.builtins import CURRENT_TIME_ID, KNOWLEDGE_SEARCH_ID
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

LIST = "/api/v1/tools/analytics"


def detail_url(tool_id: uuid.UUID | str) -> str:
    return f"/api/v1/tools/{tool_id}/analytics"


async def call_current_time(client: httpx.AsyncClient, headers: dict[str, str], zone: str) -> int:
    resp = await client.post(f"/api/v1/tools/{CURRENT_TIME_ID}/call", headers=headers,
                             json={"arguments": {"timezone": zone}})
    return resp.status_code


async def add_runs(database: Database, user_id: uuid.UUID | None, tool_id: uuid.UUID | None,
                   name: str, runs: list[tuple[str, int, timedelta, str | None]]) -> None:
    """Runs of known status, duration and age (as the owner role, as a worker writes)."""
    now = datetime.now(UTC)
    async with database.transaction() as session:
        for status, ms, age, error in runs:
            started = now - age
            await session.execute(text(
                "INSERT INTO tool_runs (id, tool_id, user_id, trace_id, tool_name, status, "
                "error, started_at, finished_at, duration_ms) VALUES (:id, :tid, :uid, 't', "
                ":name, :status, :error, :started, :finished, :ms)"
            ), {"id": uuid.uuid4(), "tid": tool_id, "uid": user_id, "name": name,
                "status": status, "error": error, "started": started,
                "finished": started + timedelta(milliseconds=ms), "ms": ms})


async def foreign_tool(database: Database, owner: uuid.UUID) -> uuid.UUID:
    """A tool on a server of ``owner``'s own."""
    server_id, tool_id = uuid.uuid4(), uuid.uuid4()
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO mcp_servers (id, user_id, name, transport, url) VALUES "
            "(:id, :uid, 'private', 'streamable_http', 'https://mcp.example.com/mcp')"
        ), {"id": server_id, "uid": owner})
        await session.execute(text(
            "INSERT INTO tools (id, user_id, mcp_server_id, kind, name) "
            "VALUES (:id, :uid, :sid, 'mcp', 'private_tool')"
        ), {"id": tool_id, "uid": owner, "sid": server_id})
    return tool_id


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["tool_name"]: item for item in body["items"]}


async def get(client: httpx.AsyncClient, url: str, headers: dict[str, str], **params: Any) -> Any:
    resp = await client.get(url, params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_statistics_per_tool_scoped_to_the_caller(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    alice_id, alice = await make_user(database)
    bob_id, bob = await make_user(database)

    # Real calls: five that succeed and one that fails in the tool (a run with an error).
    for _ in range(5):
        assert await call_current_time(client, alice, "Asia/Tokyo") == 200
    assert await call_current_time(client, alice, "Mars/Olympus_Mons") == 422
    assert await call_current_time(client, bob, "UTC") == 200
    # Known durations: 10, 20, 30, 40, 100 ms in the last day, 1000 ms three days ago.
    hour, days3 = timedelta(hours=1), timedelta(days=3)
    await add_runs(database, alice_id, KNOWLEDGE_SEARCH_ID, "knowledge_search", [
        ("success", 10, hour, None), ("success", 20, hour, None), ("success", 30, hour, None),
        ("error", 40, hour, "index offline"), ("timeout", 100, hour, "too slow"),
        ("success", 1000, days3, None),
    ])

    # Alice, last 24 hours (the default): her runs only, exact numbers.
    body = await get(client, LIST, alice)
    assert body["user_id"] == str(alice_id) and body["sort"] == "calls"
    stats = by_name(body)
    assert set(stats) == {"current_time", "knowledge_search"}
    clock = stats["current_time"]
    assert clock["tool_id"] == str(CURRENT_TIME_ID)
    assert (clock["calls"], clock["successes"], clock["errors"], clock["timeouts"]) == (6, 5, 1, 0)
    assert clock["error_rate"] == pytest.approx(1 / 6)
    search = stats["knowledge_search"]
    assert (search["calls"], search["successes"], search["errors"], search["timeouts"]) == (5, 3, 1, 1)
    assert search["error_rate"] == pytest.approx(0.4)
    # percentile_cont: p50 of 10..100 is the middle one; p95 lies at 3.8 of 0..4.
    assert search["p50_ms"] == pytest.approx(30.0)
    assert search["p95_ms"] == pytest.approx(40 + 0.8 * (100 - 40))
    assert datetime.fromisoformat(search["last_called_at"]) > datetime.now(UTC) - 2 * hour

    # Sorting: by calls (current_time first), by error rate or p95 (knowledge_search first).
    assert [i["tool_name"] for i in body["items"]] == ["current_time", "knowledge_search"]
    for sort in ("error_rate", "p95"):
        sorted_body = await get(client, LIST, alice, sort=sort)
        assert [i["tool_name"] for i in sorted_body["items"]] == ["knowledge_search", "current_time"]
    # Filters: by name and by tool id.
    assert set(by_name(await get(client, LIST, alice, name="current_time"))) == {"current_time"}
    only = await get(client, LIST, alice, tool_id=str(KNOWLEDGE_SEARCH_ID))
    assert set(by_name(only)) == {"knowledge_search"}

    # A wider window takes the older run in: six durations, new percentiles.
    week = by_name(await get(client, LIST, alice, window="7d"))["knowledge_search"]
    assert week["calls"] == 6
    assert week["p50_ms"] == pytest.approx(35.0)
    assert week["p95_ms"] == pytest.approx(100 + 0.75 * (1000 - 100))
    since = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    assert by_name(await get(client, LIST, alice, since=since))["knowledge_search"]["calls"] == 5

    # Bob sees his one call and nothing of alice's; he may not ask for hers.
    bobs = by_name(await get(client, LIST, bob))
    assert set(bobs) == {"current_time"} and bobs["current_time"]["calls"] == 1
    denied = await client.get(LIST, params={"user_id": str(alice_id)}, headers=bob)
    assert denied.status_code == 403, denied.text
    assert (await client.get(LIST, params={"user_id": str(bob_id)}, headers=bob)).status_code == 200

    # An administrator sees everyone's, or one user's; an unknown user is 404.
    everyone = await get(client, LIST, admin_headers)
    assert everyone["user_id"] is None
    assert by_name(everyone)["current_time"]["calls"] == 7
    one = await get(client, LIST, admin_headers, user_id=str(alice_id))
    assert by_name(one)["current_time"]["calls"] == 6 and one["user_id"] == str(alice_id)
    nobody = await client.get(LIST, params={"user_id": str(uuid.uuid4())}, headers=admin_headers)
    assert nobody.status_code == 404, nobody.text

    # Runs of a deleted tool are still counted, under their name.
    await add_runs(database, bob_id, None, "gone_tool", [("success", 5, hour, None)])
    gone = by_name(await get(client, LIST, admin_headers))["gone_tool"]
    assert gone["tool_id"] is None and gone["calls"] == 1


async def test_one_tool_detail(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    alice_id, alice = await make_user(database)
    bob_id, bob = await make_user(database)
    hour = timedelta(hours=1)
    await add_runs(database, alice_id, KNOWLEDGE_SEARCH_ID, "knowledge_search", [
        ("success", 10, hour, None), ("success", 20, hour, None), ("success", 30, hour, None),
        ("error", 40, 3 * hour, "index offline"), ("timeout", 100, 3 * hour, "too slow"),
        ("error", 40, 5 * hour, "index offline"),
    ])
    await add_runs(database, bob_id, KNOWLEDGE_SEARCH_ID, "knowledge_search",
                   [("success", 5000, hour, None)])

    body = await get(client, detail_url(KNOWLEDGE_SEARCH_ID), alice)
    assert body["user_id"] == str(alice_id)
    stats = body["stats"]
    assert (stats["calls"], stats["errors"], stats["timeouts"]) == (6, 2, 1)
    assert stats["p50_ms"] == pytest.approx(35.0)
    # 0.99 of the way through 10, 20, 30, 40, 40, 100: 4.95 -> 40 + 0.95 * 60.
    assert body["p99_ms"] == pytest.approx(40 + 0.95 * 60)
    assert body["mean_ms"] == pytest.approx(40.0) and body["max_ms"] == 100
    assert body["bucket"] == "hour"
    assert sum(b["calls"] for b in body["series"]) == 6
    assert sum(b["failures"] for b in body["series"]) == 3
    starts = [b["start"] for b in body["series"]]
    assert starts == sorted(starts) and len(starts) == 3
    assert body["top_errors"] == [{"message": "index offline", "count": 2},
                                  {"message": "too slow", "count": 1}]
    assert (await get(client, detail_url(KNOWLEDGE_SEARCH_ID), alice, window="7d"))["bucket"] == "day"

    # A tool never called in the window: zeros, not an error.
    idle = await get(client, detail_url(CURRENT_TIME_ID), alice)
    assert idle["stats"]["calls"] == 0 and idle["stats"]["error_rate"] is None
    assert idle["series"] == [] and idle["p99_ms"] is None

    # The administrator: both users' runs, or one user's.
    both = await get(client, detail_url(KNOWLEDGE_SEARCH_ID), admin_headers)
    assert both["stats"]["calls"] == 7 and both["max_ms"] == 5000
    bobs = await get(client, detail_url(KNOWLEDGE_SEARCH_ID), admin_headers, user_id=str(bob_id))
    assert bobs["stats"]["calls"] == 1

    # Another tenant's tool, or no tool at all: 404, in the detail and as a list filter.
    private = await foreign_tool(database, bob_id)
    for url, params in ((detail_url(private), {}), (detail_url(uuid.uuid4()), {}),
                        (LIST, {"tool_id": str(private)})):
        resp = await client.get(url, params=params, headers=alice)
        assert resp.status_code == 404, (url, resp.text)
        assert str(bob_id) not in resp.text
    assert (await client.get(detail_url(private), headers=bob)).status_code == 200


async def test_bad_windows_and_parameters_are_clear_problems(
    client: httpx.AsyncClient, database: Database
) -> None:
    _, alice = await make_user(database)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"window": "32d"}, "at most 31 days"),
        ({"window": "5w"}, "at most 31 days"),
        ({"window": "yesterday"}, "whole number and a unit"),
        ({"window": "0h"}, "whole number and a unit"),
        ({"window": "24h", "since": "2026-01-01T00:00:00Z"}, "not both"),
        ({"since": "1700000000"}, "ISO 8601"),
        ({"since": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, "in the past"),
        ({"since": (datetime.now(UTC) - timedelta(days=40)).isoformat()}, "at most 31 days"),
    ]
    for params, words in cases:
        for url in (LIST, detail_url(CURRENT_TIME_ID)):
            resp = await client.get(url, params=params, headers=alice)
            assert resp.status_code == 422, (params, resp.text)
            problem = resp.json()
            assert words in problem["detail"], (params, problem)
    # A bound without an offset is UTC, as on every route's filters.
    naive = (datetime.now(UTC) - timedelta(hours=2)).replace(tzinfo=None).isoformat()
    for since in (naive, naive + "Z"):
        resp = await client.get(LIST, params={"since": since}, headers=alice)
        assert resp.status_code == 200, resp.text
        assert resp.json()["since"].startswith(naive[:16]), resp.json()
    for params in ({"sort": "name"}, {"limit": 0}, {"limit": 501}, {"tool_id": "nope"}):
        resp = await client.get(LIST, params=params, headers=alice)
        assert resp.status_code == 422, (params, resp.text)


async def test_row_level_security_is_the_second_wall(database: Database) -> None:
    """Even a principal object that claims to be an administrator sees only alice's runs
    inside a transaction scoped to alice: the service's filter is not the only wall."""
    alice_id, _ = await make_user(database)
    bob_id, _ = await make_user(database)
    hour = timedelta(hours=1)
    await add_runs(database, alice_id, CURRENT_TIME_ID, "current_time", [("success", 1, hour, None)])
    await add_runs(database, bob_id, CURRENT_TIME_ID, "current_time", [("success", 1, hour, None)] * 2)
    window = analytics.resolve_window("24h", None)
    async with database.transaction() as session:
        await apply_principal(session, Principal(user_id=alice_id, is_admin=False, kind="api_key"))
        report = await analytics.tool_report(
            session, Principal(user_id=None, is_admin=True, kind="system"), window)
    assert [(i.tool_name, i.calls) for i in report.items] == [("current_time", 1)]


async def test_roost_tools_stats(pg_server: PgTestServer, db_name: str, tmp_path: Path) -> None:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d")}
    for zone in ("UTC", "Europe/Paris"):
        assert run_roost("tools", "call", "current_time", "--args", f'{{"timezone": "{zone}"}}',
                         env=env).returncode == 0
    assert run_roost("tools", "call", "current_time", "--args", '{"timezone": "Nowhere"}',
                     env=env).returncode == 1
    shown = run_roost("tools", "stats", "--window", "7d", "--sort", "error_rate", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "all users" in shown.stdout
    line = next(row for row in shown.stdout.splitlines() if "current_time" in row)
    cells = [c.strip() for c in line.split("│") if c.strip()]
    assert cells[:7] == ["current_time", str(CURRENT_TIME_ID), "3", "2", "1", "0", "33.3%"]
    too_wide = run_roost("tools", "stats", "--window", "60d", env=env)
    assert too_wide.returncode == 1 and "at most 31 days" in too_wide.stderr
    bad_sort = run_roost("tools", "stats", "--sort", "name", env=env)
    assert bad_sort.returncode == 1 and "error_rate" in bad_sort.stderr
    empty = run_roost("tools", "stats", "--tool", "nothing_like_it", env=env)
    assert empty.returncode == 0 and "No tool runs" in empty.stdout


# Windows that reach before year 1 or after year 9999 once turned into UTC bounds.
OUTSIDE_THE_CALENDAR: list[dict[str, str]] = [
    {"window": "999999d"}, {"window": "999999w"},
    {"since": "0001-01-01T00:00:00+23:59"}, {"since": "9999-12-31T23:59:59-23:59"},
]


async def test_windows_reaching_outside_the_calendar_are_a_422(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """999999d, or a since whose UTC moment is in year 0 or 10000, overflowed into a 500."""
    _, alice = await make_user(database)
    for params in OUTSIDE_THE_CALENDAR:
        for url in (LIST, detail_url(CURRENT_TIME_ID)):
            resp = await client.get(url, params=params, headers=alice)
            assert resp.status_code == 422, (params, resp.text)
            assert "31 days" in resp.json()["detail"] or "years 1 and 9999" in resp.json()["detail"]


async def test_roost_tools_stats_with_a_window_outside_the_calendar(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d")}
    for option, value in (("--window", "999999d"), ("--since", "0001-01-01T00:00:00+23:59")):
        got = run_roost("tools", "stats", option, value, env=env)
        assert got.returncode == 1, got.stderr
        assert "Traceback" not in got.stderr + got.stdout and "─╯" not in got.stderr, got.stderr
