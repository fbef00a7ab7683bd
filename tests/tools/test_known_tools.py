"""The process's cache of the tools it calls (roost.tools.calls.KNOWN_TOOLS): a warm call
sends no statement before the tool runs; the cache answers per caller (another tenant's
tool stays 404 after its owner called it); a change made through this process is refused
at once, one made elsewhere as soon as its NOTIFY arrives; a server's health check does
not drop it."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.principal import Principal
from roost.security.crypto import SecretBox
from roost.tools import calls
from roost.tools.config import ToolsConfig
from roost.tools.servers import scoped
from tests.support.identity import make_user
from tests.support.listening import Statements
from tests.support.listening import statements as sent_statements
from tests.tools.test_tools_api import register_and_sync, stdio_body, tool_id

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _call(client: httpx.AsyncClient, headers: dict[str, str], tid: str,
                **arguments: Any) -> httpx.Response:
    return await client.post(f"/api/v1/tools/{tid}/call", headers=headers,
                             json={"arguments": arguments})


async def test_warm_calls_send_nothing_before_the_tool_and_changes_apply_at_once(
        caches_deaf: None, client: httpx.AsyncClient, admin_headers: dict[str, str],
        database: Database, test_settings: Settings, test_keys: KeyMaterial,
        tmp_path: Path) -> None:
    bonus = tmp_path / "bonus"
    bonus.write_text("on")
    server, _ = await register_and_sync(client, admin_headers,
                                        stdio_body("echo", bonus, is_global=True))
    echo = await tool_id(client, admin_headers, server["id"], "echo")
    bonus_tool = await tool_id(client, admin_headers, server["id"], "bonus")
    alice_id, alice = await make_user(database)
    assert (await _call(client, alice, echo, text="first")).status_code == 200
    assert (await _call(client, alice, bonus_tool)).status_code == 200

    # Warm: finding, checking and validating the call sends no statement at all.
    actor = Principal(user_id=alice_id, is_admin=False, kind="api_key")
    cfg = ToolsConfig.from_settings(test_settings)
    box = SecretBox.from_keys(test_keys.secrets_key)
    statements = Statements(database)
    statements.counting = True
    async with scoped(database, actor, cfg) as session:
        prepared = await calls.prepare_call(session, actor, cfg, box, tool_id=uuid.UUID(echo),
                                            name=None, server=None, arguments={"text": "x"})
    statements.counting = False
    assert prepared.name == "echo" and statements.sent == []
    # A whole warm call that holds no credits: the tool, then its record in one round
    # trip (roost_record_tool_call scopes its own implicit transaction and writes the
    # rows), without an ORM session; the row is Alice's, under her scope.
    async with sent_statements(database) as sent:
        run = await calls.call_tool(database, actor, cfg, box, tool_id=uuid.UUID(echo),
                                    arguments={"text": "warm"})
    assert run.status == "success" and run.user_id == alice_id
    assert sent == ["SELECT roost_record_tool_call($1, $2, $3, $4)"], sent
    async with database.transaction() as session:
        owner = await session.scalar(text("SELECT user_id FROM tool_runs WHERE id = :id"),
                                     {"id": run.id})
    assert owner == alice_id
    # The arguments are still checked on every call.
    bad = await _call(client, alice, echo, text=5)
    assert bad.status_code == 422, bad.text

    # The tool leaves its server (a sync through this process): refused on the next call.
    bonus.unlink()
    resynced = await client.post(f"/api/v1/mcp-servers/{server['id']}/sync",
                                 headers=admin_headers)
    assert resynced.json()["unavailable"] == ["bonus"]
    gone = await _call(client, alice, bonus_tool)
    assert gone.status_code == 409, gone.text

    # The server is deleted: its tools are not found any more, at once.
    deleted = await client.delete(f"/api/v1/mcp-servers/{server['id']}", headers=admin_headers)
    assert deleted.status_code == 204
    assert (await _call(client, alice, echo, text="after")).status_code == 404


async def test_the_cache_answers_per_caller(
        caches_deaf: None, client: httpx.AsyncClient, database: Database, http_mcp_url: str) -> None:
    _, alice = await make_user(database)
    _, bob = await make_user(database)
    server, _ = await register_and_sync(client, alice, {
        "name": "remote", "transport": "streamable_http", "url": http_mcp_url})
    echo = await tool_id(client, alice, server["id"], "echo")
    for _ in range(2):  # warm for Alice
        assert (await _call(client, alice, echo, text="mine")).status_code == 200
    assert len(calls.KNOWN_TOOLS) >= 1
    refused = await _call(client, bob, echo, text="theirs")
    assert refused.status_code == 404, refused.text


async def test_a_change_made_elsewhere_applies_on_its_notification(
        caches_listening: None, client: httpx.AsyncClient, admin_headers: dict[str, str],
        database: Database) -> None:
    assert calls.KNOWN_TOOLS.listening  # the fixture's connection is up
    server, _ = await register_and_sync(client, admin_headers,
                                        stdio_body("echo", is_global=True))
    echo = await tool_id(client, admin_headers, server["id"], "echo")
    _, alice = await make_user(database)
    assert (await _call(client, alice, echo, text="warm")).status_code == 200
    generation = calls.KNOWN_TOOLS.generation

    # A health check's columns do not concern a call: the cache stays.
    async with database.transaction() as s:
        await s.execute(text("UPDATE mcp_servers SET health_status = 'unhealthy', "
                             "latency_ms = 99, last_seen = now()"))
    await asyncio.sleep(0.5)  # a notification, had one been sent, has arrived
    assert calls.KNOWN_TOOLS.generation == generation

    # Another process (here raw SQL, not this process's sessions) disables the tool.
    async with database.transaction() as s:
        await s.execute(text("UPDATE tools SET enabled = false WHERE id = :id"), {"id": echo})
    deadline = time.monotonic() + 10
    while (answer := await _call(client, alice, echo, text="now?")).status_code == 200:
        assert time.monotonic() < deadline, "the disabled tool is still called"
        await asyncio.sleep(0.05)
    assert answer.status_code == 409 and "disabled" in answer.json()["detail"]
