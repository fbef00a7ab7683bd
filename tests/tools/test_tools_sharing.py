"""Who may call a tool, as it changes: a global tool taken back through one ``roost serve``
process (no longer offered by its server, or its server deleted) is refused by another
process that had it in its cache (``calls.KNOWN_TOOLS``) once the change's notification
arrives; another user's private tool is an unknown id everywhere a user sees or calls
tools (servers, tools, analytics, calls by id and by name, lists, /mcp)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.support.identity import make_user
from tests.support.mcp_client import mcp_session
from tests.support.pg import PgTestServer
from tests.support.server import in_process, roost_server, serve_env
from tests.tools.test_tools_api import register_and_sync, stdio_body, tool_id


async def _refused_within(call: Callable[[], Awaitable[httpx.Response]], status: int,
                          seconds: float = 10) -> httpx.Response:
    """``call`` repeated until it answers ``status``: a change made through another
    process applies when its NOTIFY arrives (milliseconds; a generous deadline for a
    loaded machine)."""
    deadline = time.monotonic() + seconds
    while (answer := await call()).status_code == 200:
        assert time.monotonic() < deadline, "still called after the change"
        await asyncio.sleep(0.05)
    assert answer.status_code == status, answer.text
    return answer


async def test_a_global_tool_taken_back_through_one_process_is_refused_by_another(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
    test_keys: KeyMaterial,
) -> None:
    admin = {"Authorization": f"Bearer {test_keys.admin_token}"}
    _, alice = await make_user(database)
    bonus = tmp_path / "bonus"
    bonus.write_text("on")  # the echo server offers `bonus` while this file exists
    with roost_server(serve_env(pg_server, db_name, tmp_path / "a", test_keys)) as a, \
            roost_server(serve_env(pg_server, db_name, tmp_path / "b", test_keys)) as b:
        async with httpx.AsyncClient(base_url=a.base_url, timeout=60) as through_a, \
                httpx.AsyncClient(base_url=b.base_url, timeout=60) as through_b:
            server, _ = await register_and_sync(through_a, admin, stdio_body(
                "shared", bonus, is_global=True))
            sid = server["id"]
            bonus_id = await tool_id(through_a, admin, sid, "bonus")
            echo_id = await tool_id(through_a, admin, sid, "echo")

            async def call(tid: str) -> httpx.Response:
                return await through_b.post(f"/api/v1/tools/{tid}/call", headers=alice,
                                            json={"arguments": {"text": "x"}})

            for tid in (bonus_id, bonus_id, echo_id, echo_id):  # in B's cache
                warm = await call(tid)
                assert warm.status_code == 200, warm.text
            # The server no longer offers `bonus`: a sync through A marks it unavailable.
            bonus.unlink()
            synced = await through_a.post(f"/api/v1/mcp-servers/{sid}/sync", headers=admin)
            assert synced.json()["unavailable"] == ["bonus"], synced.text
            await _refused_within(lambda: call(bonus_id), 409)
            # The server deleted through A: its tools are unknown in B.
            deleted = await through_a.delete(f"/api/v1/mcp-servers/{sid}", headers=admin)
            assert deleted.status_code == 204, deleted.text
            await _refused_within(lambda: call(echo_id), 404)
    for process in (a, b):
        assert "Traceback" not in process.output, process.output[-4000:]


async def test_another_users_private_tool_is_an_unknown_id_everywhere(
    app: FastAPI, client: httpx.AsyncClient, database: Database, http_mcp_url: str,
) -> None:
    _, alice = await make_user(database)
    _, bob = await make_user(database)
    server, _ = await register_and_sync(client, alice, {
        "name": f"alices-{uuid.uuid4().hex[:6]}", "transport": "streamable_http",
        "url": http_mcp_url})
    sid = server["id"]
    echo = await tool_id(client, alice, sid, "echo")
    assert (await client.post(f"/api/v1/tools/{echo}/call", headers=alice,
                              json={"arguments": {"text": "hi"}})).status_code == 200
    answers: dict[str, int] = {}
    call: dict[str, Any] = {"arguments": {"text": "x"}}
    for method, url, body in (
        ("GET", f"/api/v1/mcp-servers/{sid}", None),
        ("POST", f"/api/v1/mcp-servers/{sid}/sync", None),
        ("POST", f"/api/v1/mcp-servers/{sid}/check", None),
        ("DELETE", f"/api/v1/mcp-servers/{sid}", None),
        ("GET", f"/api/v1/tools/{echo}", None),
        ("GET", f"/api/v1/tools/{echo}/analytics", None),
        ("GET", f"/api/v1/tools/{echo}/dependencies", None),
        ("POST", f"/api/v1/tools/{echo}/call", call),
        ("POST", "/api/v1/tools/by-name/echo/call", call),
    ):
        answers[f"{method} {url}"] = (await client.request(method, url, headers=bob,
                                                            json=body)).status_code
    assert set(answers.values()) == {404}, answers
    tools = (await client.get("/api/v1/tools", headers=bob, params={"limit": 200})).json()
    assert echo not in {t["id"] for t in tools["items"]}
    servers = (await client.get("/api/v1/mcp-servers", headers=bob)).json()
    assert sid not in {s["id"] for s in servers["items"]}
    async with in_process(app) as base, mcp_session(f"{base}/mcp", bob) as session:
        names = {t.name for t in (await session.list_tools()).tools}
    assert not any(n.endswith("__echo") for n in names), names
