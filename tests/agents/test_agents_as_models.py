"""Agents as models of /v1/chat/completions (``model: "agent:<slug>"``): which agent a
slug names, and how a streamed answer ends when the run outlives the wait (docs/agents.md,
"Agents as models")."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text

from roost.agents import run_routes
from roost.db.engine import Database
from roost.errors import GatewayTimeout
from roost.llm.openai_routes import error_code
from roost.tasks.worker import Worker
from tests.agents.api import create_agent, create_persona
from tests.agents.conftest import Headers, make_agent
from tests.chat.conftest import add_provider, sse_events
from tests.llm.agent_models import agent_models  # noqa: F401 (a fixture)
from tests.support.identity import join_persona, make_user
from tests.support.openai_stub import Reply, StubServer


@pytest.mark.usefixtures("agent_models")
async def test_agent_slug_resolves_to_the_persona_s_agent_before_a_stranger_s_public_one(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """model "agent:<slug>" resolves your own agent, then your personas', then a public
    one: a persona's agent that is public too still comes before a stranger's public one."""
    _, owner = user
    stranger, _ = await make_user(database)
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("ok"))
    # A stranger's public agent, older, with the slug the persona's agent will have.
    squatter = await make_agent(database, stranger, slug="team-bot", is_public=True)
    persona = await create_persona(client, owner)
    ours = await create_agent(client, owner, slug="team-bot", persona_id=persona["id"],
                              is_public=True)
    member_id, member = await make_user(database)
    await join_persona(client, owner, persona["id"], str(member_id), member, role="viewer")
    resp = await client.post("/v1/chat/completions", headers=member, json={
        "model": "agent:team-bot", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30)
    assert resp.status_code == 200, resp.text
    async with database.transaction() as session:
        ran = (await session.execute(text("SELECT agent_id FROM runs WHERE user_id = :u"),
                                     {"u": member_id})).scalar_one()
    assert str(ran) == ours["id"], f"ran the stranger's agent: {str(ran) == str(squatter.id)}"


@pytest.mark.usefixtures("agent_models")
async def test_a_streamed_agent_model_still_queued_at_its_deadline_ends_with_gateway_timeout(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A streamed agent:<slug> answer whose run is still queued at the deadline ends with
    the 504 (gateway_timeout) the whole answer gives, naming the run to follow, not "ended
    pending" (bad_gateway)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    monkeypatch.setattr(run_routes, "WAIT_GRACE_S", 1.0)
    # No worker: the run stays pending; the wait gives up after timeout_s + WAIT_GRACE_S.
    await make_agent(database, user_id, slug="queued-bot", config={"timeout_s": 0.1})
    body = {"model": "agent:queued-bot", "messages": [{"role": "user", "content": "hi"}]}
    whole = await client.post("/v1/chat/completions", headers=headers, json=body, timeout=60)
    assert whole.status_code == 504, whole.text
    resp = await client.post("/v1/chat/completions", headers=headers,
                             json={**body, "stream": True}, timeout=60)
    assert resp.status_code == 200
    last = sse_events(resp.text)[-1][1]
    assert isinstance(last, dict) and "error" in last, resp.text
    assert last["error"]["code"] == error_code(GatewayTimeout("x")), last
    message = last["error"]["message"]
    assert "still pending" in message and "/api/v1/runs/" in message, last
