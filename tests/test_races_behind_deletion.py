"""A change or deletion that waits on another transaction's deletion of the same row
answers a clean 404 problem, never a 500 (an UPDATE of nothing) nor a second success (a
DELETE of nothing, audited as if it had happened)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from tests.support.identity import make_user
from tests.support.races import answer_behind, race_settings
from tests.support.sql import scalar


@pytest.fixture
def test_settings(test_settings: Settings) -> Settings:
    return race_settings(test_settings, tools_allowed_hosts="127.0.0.1")


async def _behind_deletion(database: Database, table: str, row_id: str,
                           request: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
    """``request``'s answer when it runs while another transaction deletes the row
    ``row_id`` of ``table``: started inside that transaction, answered after it commits."""
    return await answer_behind(database, f"DELETE FROM {table} WHERE id = :i",
                               {"i": row_id}, table, request)


async def test_agent_rename_waiting_on_its_deletion_is_a_404(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """An agent renamed while another request deletes it: 404 (was a 500)."""
    _, h = await make_user(database)
    r = await client.post("/api/v1/agents", json={"name": "A", "slug": "renamed-midway"},
                          headers=h)
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    resp = await _behind_deletion(database, "agents", aid, client.patch(
        f"/api/v1/agents/{aid}", json={"name": "B"}, headers=h))
    assert resp.status_code == 404, resp.text


async def test_group_rename_waiting_on_its_deletion_is_a_404(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A group renamed while another request deletes it: 404 (was a 500)."""
    _, h = await make_user(database)
    r = await client.post("/api/v1/groups", json={"name": "grp-w"}, headers=h)
    assert r.status_code == 201, r.text
    gid = r.json()["id"]
    resp = await _behind_deletion(database, "groups", gid, client.patch(
        f"/api/v1/groups/{gid}", json={"name": "grp-v"}, headers=h))
    assert resp.status_code == 404, resp.text


async def test_mcp_server_deletion_waiting_on_another_is_a_404_and_one_record(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A deletion of an MCP server waiting on another: 404 and no audit record (it answered
    204 and recorded a deletion it did not make), as agents, groups and personas do."""
    _, h = await make_user(database)
    r = await client.post("/api/v1/mcp-servers", json={
        "name": "srv", "url": "http://127.0.0.1:9/mcp", "transport": "streamable_http"},
        headers=h)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    resp = await _behind_deletion(database, "mcp_servers", sid,
                                  client.delete(f"/api/v1/mcp-servers/{sid}", headers=h))
    assert resp.status_code == 404, resp.text
    assert await scalar(database, "SELECT count(*) FROM audit_logs WHERE "
                        "action = 'mcp_server.delete' AND resource_id = :s", s=sid) == 0


async def test_lsp_server_deletion_waiting_on_another_is_a_404_and_one_record(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """The same for a language server (administrators register them)."""
    _, h = await make_user(database, admin=True)
    r = await client.post("/api/v1/lsp-servers", headers=h, json={
        "name": "lsp", "language": "python", "command": "pylsp", "file_patterns": ["*.py"]})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    resp = await _behind_deletion(database, "lsp_servers", sid,
                                  client.delete(f"/api/v1/lsp-servers/{sid}", headers=h))
    assert resp.status_code == 404, resp.text
    assert await scalar(database, "SELECT count(*) FROM audit_logs WHERE "
                        "action = 'lsp_server.delete' AND resource_id = :s", s=sid) == 0
