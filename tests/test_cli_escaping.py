"""Stored text holding terminal control sequences (ESC, C1 CSI, bidi overrides), printed by
``roost`` list and show commands, reaches stdout escaped (roost.db.cliio.printable): these
commands printed it raw (a name could clear the screen or retitle the terminal)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from roost.db.engine import Database
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer
from tests.workflows.graphs import ten_node_graph

EVIL = "Evil\x1b]0;pwned\x07\x1b[2J\x9b31m\u202efdp.exe"


def _env(pg_server: PgTestServer, db_name: str, tmp_path: Path) -> dict[str, str]:
    return {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
            "ROOST_DATA_DIR": str(tmp_path / "cli-data")}


def _assert_escaped(stdout: str) -> None:
    assert "\x1b" not in stdout, stdout
    assert "\x9b" not in stdout, stdout
    assert "\u202e" not in stdout, stdout


async def test_calendar_agenda_escapes_stored_summary_location_and_calendar_name(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
        client: httpx.AsyncClient) -> None:
    """`roost calendar agenda`: an event's summary, location and calendar name."""
    _, headers = await make_user(database, username="calesc")
    cal = await client.post("/api/v1/calendars", json={"name": EVIL, "timezone": "UTC"},
                            headers=headers)
    assert cal.status_code == 201, cal.text
    start = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    ev = await client.post(f"/api/v1/calendars/{cal.json()['id']}/events", headers=headers,
                           json={"summary": EVIL, "location": EVIL,
                                 "start_time": start.isoformat(),
                                 "end_time": (start + timedelta(hours=1)).isoformat()})
    assert ev.status_code == 201, ev.text
    out = await asyncio.to_thread(run_roost, "calendar", "agenda", "--user", "calesc",
                                  env=_env(pg_server, db_name, tmp_path))
    assert out.returncode == 0, out.stderr
    _assert_escaped(out.stdout)


async def test_memory_ls_and_search_escape_stored_content(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
        client: httpx.AsyncClient) -> None:
    """`roost memory ls` and `memory search`: a memory's content."""
    _, headers = await make_user(database, username="memesc")
    made = await client.post("/api/v1/memories", headers=headers, json={"content": EVIL})
    assert made.status_code in (200, 201), made.text
    env = _env(pg_server, db_name, tmp_path)
    listed = await asyncio.to_thread(run_roost, "memory", "ls", "--user", "memesc", env=env)
    assert listed.returncode == 0, listed.stderr
    searched = await asyncio.to_thread(run_roost, "memory", "search", "Evil", "--user",
                                       "memesc", env=env)
    assert searched.returncode == 0, searched.stderr
    assert "Evil" in listed.stdout and "Evil" in searched.stdout
    _assert_escaped(listed.stdout)
    _assert_escaped(searched.stdout)


async def test_workflows_ls_escapes_stored_name(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
        client: httpx.AsyncClient) -> None:
    """`roost workflows ls`: a workflow's name."""
    _, headers = await make_user(database, username="wfesc")
    created = await client.post("/api/v1/workflows", headers=headers,
                                json={"name": EVIL, **ten_node_graph()})
    assert created.status_code == 201, created.text
    out = await asyncio.to_thread(run_roost, "workflows", "ls", "--user", "wfesc",
                                  env=_env(pg_server, db_name, tmp_path))
    assert out.returncode == 0, out.stderr
    _assert_escaped(out.stdout)


async def test_memory_graph_escapes_stored_entity_and_relation_names(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
        client: httpx.AsyncClient) -> None:
    """`roost memory graph ENTITY`: entity and relation names a memory (or a model's
    extraction) stored with ESC and C1 CSI."""
    _, headers = await make_user(database, username="graphesc")
    evil = "Mallory\x1b[2J\x9b31m"
    made = await client.post("/api/v1/memories", headers=headers, json={
        "content": "Alice knows Mallory",
        "entities": [{"name": "Alice"}, {"name": evil}],
        "relationships": [{"source": "Alice", "relation": "knows\x1b]0;t\x07",
                           "target": evil}]})
    assert made.status_code in (200, 201), made.text
    out = await asyncio.to_thread(run_roost, "memory", "graph", "Alice", "--depth", "1",
                                  "--user", "graphesc", env=_env(pg_server, db_name, tmp_path))
    assert out.returncode == 0, out.stderr
    assert "Mallory" in out.stdout
    assert "\x1b" not in out.stdout and "\x9b" not in out.stdout, out.stdout
