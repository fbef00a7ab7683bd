"""The tools domain's tools at Roost's own MCP endpoint ``/mcp`` (its ``ToolProvider``):
the official SDK's client against ``roost serve``.  Alice registers her own
streamable-HTTP MCP server (loopback, allowlisted); her client lists and calls its tool
through the REST call path (a ``tool_runs`` row and a ``tool.call`` audit record); Bob
neither sees nor calls it; both see the built-in ``current_time``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
from sqlalchemy import select

from roost.audit.models import AuditLog
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.tools.mcpserving import mcp_name
from roost.tools.models import ToolRun
from tests.support.identity import make_user
from tests.support.mcp_client import mcp_session
from tests.support.pg import PgTestServer
from tests.support.server import roost_server


def test_mcp_names_are_valid_and_distinct() -> None:
    taken = {"whoami"}
    assert mcp_name("whoami", taken) == "whoami_2"
    assert mcp_name("files__read file/now", set()) == "files__read_file_now"
    long = mcp_name("x" * 300, {"x" * 128})
    assert len(long) == 128 and long.endswith("_2")


async def test_users_tools_at_mcp(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
    test_keys: KeyMaterial, http_mcp_url: str,
) -> None:
    alice_id, alice = await make_user(database, username="alice")
    bob_id, bob = await make_user(database, username="bob")
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "data"), "ROOST_ADMIN_TOKEN": test_keys.admin_token,
           "ROOST_SECRET_KEY": test_keys.secret_key,
           "ROOST_MESSAGE_KEYS": ",".join(test_keys.message_keys),
           "ROOST_LLM_LOCAL_MODEL": "false", "ROOST_LOG_LEVEL": "warning",
           "ROOST_TOOLS_ALLOWED_HOSTS": "127.0.0.1", "ROOST_TOOLS_CALL_TIMEOUT_S": "20"}
    with roost_server(env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            created = await http.post("/api/v1/mcp-servers", headers=alice, json={
                "name": "echoes", "transport": "streamable_http", "url": http_mcp_url})
            assert created.status_code == 201, created.text
            synced = await http.post(f"/api/v1/mcp-servers/{created.json()['id']}/sync",
                                     headers=alice)
            assert synced.status_code == 200, synced.text
        url = f"{server.base_url}/mcp"

        async with mcp_session(url, alice) as session:
            listed = {t.name: t for t in (await session.list_tools()).tools}
            assert {"whoami", "knowledge_search", "current_time", "echoes__echo",
                    "echoes__add"} <= set(listed)
            assert len(listed) == len((await session.list_tools()).tools)  # names unique
            assert listed["echoes__echo"].input_schema["required"] == ["text"]
            echoed = await session.call_tool("echoes__echo", {"text": "hello heron"})
            assert not echoed.is_error, echoed.content
            assert "hello heron" in echoed.content[0].text
            # The REST path's validation: nothing recorded, an error result.
            bad = await session.call_tool("echoes__add", {"a": "one"})
            assert bad.is_error and "input schema" in bad.content[0].text
            now = await session.call_tool("current_time", {"timezone": "Asia/Tokyo"})
            assert not now.is_error and json.loads(now.content[0].text)["timezone"] == "Asia/Tokyo"
            # The tool's own failure: an error result naming the recorded run.
            failed = await session.call_tool("echoes__fail", {})
            assert failed.is_error and "tool run" in failed.content[0].text

        async with mcp_session(url, bob) as session:
            names = {t.name for t in (await session.list_tools()).tools}
            assert "current_time" in names
            assert not any(n.startswith("echoes__") for n in names)
            refused = await session.call_tool("echoes__echo", {"text": "hi"})
            assert refused.is_error and "unknown tool" in refused.content[0].text
    assert "Traceback" not in server.output, server.output[-4000:]

    async with database.transaction() as s:
        runs = (await s.scalars(select(ToolRun).order_by(ToolRun.created_at))).all()
        audited = (await s.scalars(select(AuditLog).where(AuditLog.action == "tool.call"))).all()
    by_user: dict[uuid.UUID | None, list[tuple[str, str]]] = {}
    for run in runs:
        by_user.setdefault(run.user_id, []).append((run.tool_name, run.status))
    assert by_user == {alice_id: [("echo", "success"), ("current_time", "success"),
                                  ("fail", "error")]}
    assert bob_id not in by_user
    assert len(audited) == 3 and {a.user_id for a in audited} == {alice_id}
    echo_run = runs[0]
    assert echo_run.input == {"text": "hello heron"} and echo_run.status == "success"
