"""/mcp's agent tools: a slug names the caller's own agent even while it is inactive."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from roost.agents import mcpserving as agents_mcpserving
from roost.agents.models import Run
from roost.db.engine import Database
from tests.agents.api import create_agent
from tests.support.identity import make_user
from tests.support.mcp_client import mcp_session
from tests.support.server import in_process


async def test_deactivating_my_agent_does_not_hand_its_tool_name_to_a_strangers_public_agent(
    app: FastAPI, client: httpx.AsyncClient, database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user who deactivates their own agent ``helper`` finds ``agent__helper`` stopped
    (as ``agent:helper`` on /v1: the slug still names their own, inactive agent).  /mcp
    dropped inactive agents before resolving slugs, so a stranger's public agent of the
    same slug took the name over and received the user's input."""
    monkeypatch.setattr(agents_mcpserving, "WAIT_S", 0.0)  # no worker: answer at once
    alice_id, alice = await make_user(database, username="alice")
    _, bob = await make_user(database, username="bob")
    mine = await create_agent(client, alice, name="Mine", slug="helper")
    await create_agent(client, bob, name="Squatter", slug="helper", is_public=True)
    off = await client.patch(f"/api/v1/agents/{mine['id']}", headers=alice,
                             json={"is_active": False})
    assert off.status_code == 200, off.text
    async with in_process(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            by_slug = await http.post("/v1/chat/completions", headers=alice, json={
                "model": "agent:helper", "messages": [{"role": "user", "content": "hi"}]})
        async with mcp_session(f"{base}/mcp", alice) as session:
            listed = {t.name: t.title for t in (await session.list_tools()).tools}
            result = await session.call_tool("agent__helper", {"input": "my private notes"})
    assert by_slug.status_code >= 400, by_slug.text  # /v1: the slug is still alice's own
    async with database.transaction() as s:
        runs = int(await s.scalar(select(func.count()).select_from(Run)
                                  .where(Run.user_id == alice_id)) or 0)
    assert result.is_error and runs == 0, (result, runs)
    assert listed.get("agent__helper") != "Squatter", listed
