"""An agent participant is checked again when its debate runs, in its owner's scope: an
agent made private, deactivated, or of a persona the owner has left since the debate was
started fails the debate with the reason, its instructions never sent to a model."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from roost.agents.models import Persona, PersonaMember
from roost.config import Settings
from roost.db.engine import Database
from tests.agents.conftest import make_agent, running_worker
from tests.chat.conftest import add_provider
from tests.debates.conftest import Headers, start, wait_for_debate
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply

SECRET = "SECRET INSTRUCTIONS 12345"


def body(agent_id: uuid.UUID) -> dict[str, Any]:
    return {"topic": "t", "positions": ["a", "b"], "total_rounds": 1,
            "participants": [{"id": "x", "agent_id": str(agent_id)},
                             {"id": "y", "model": "stub-model"}]}


async def run_after(app: FastAPI, client: httpx.AsyncClient, database: Database,
                    settings: Settings, stub: StubServer, headers: Headers,
                    debate_id: str, change: str, **params: Any) -> dict[str, Any]:
    """Apply ``change`` (SQL, as the system) to the waiting debate's world, then run it."""
    async with database.transaction() as session:
        await session.execute(text(change), params)
    stub.script(Reply("for a.\nConfidence: 0.5"), Reply("for b.\nConfidence: 0.5"),
                *[Reply(json={"ranking": ["a", "b"], "confidence": 0.5})] * 2)
    async with running_worker(app, database, settings):
        return await wait_for_debate(client, headers, debate_id)


def assert_failed_unused(done: dict[str, Any], stub: StubServer) -> None:
    assert done["status"] == "failed", done["status"]
    assert "the agent of participant 'x' is no longer available" in done["error_message"]
    assert done["turns"] == []
    seen = stub.requests(path="/v1/chat/completions")
    assert not any(SECRET in json.dumps(s.body) for s in seen)


async def test_another_users_agent_made_private_before_the_debate_runs_fails_it(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, test_settings: Settings, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    """A public agent its owner makes private is no longer one the debate's owner can see:
    its instructions must not reach another tenant's debate."""
    _, headers = user
    other_id, _ = other_user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, other_id, is_public=True, preferred_model="stub-model",
                             system_prompt=SECRET)
    created = await start(client, headers, **body(agent.id))
    done = await run_after(app, client, database, test_settings, stub, headers, created["id"],
                           "UPDATE agents SET is_public = false WHERE id = :a", a=agent.id)
    assert_failed_unused(done, stub)
    assert "does not exist" in done["error_message"]  # as invisible as at creation


async def test_an_agent_deactivated_before_the_debate_runs_fails_it(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    """Creation refuses an inactive agent (409); one deactivated while the debate waits
    is not run either."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, preferred_model="stub-model",
                             system_prompt=SECRET)
    created = await start(client, headers, **body(agent.id))
    done = await run_after(app, client, database, test_settings, stub, headers, created["id"],
                           "UPDATE agents SET is_active = false WHERE id = :a", a=agent.id)
    assert_failed_unused(done, stub)
    assert "inactive" in done["error_message"]


async def test_a_persona_agent_whose_member_left_before_the_debate_runs_fails_it(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, test_settings: Settings, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    """A persona's (private) agent is run by the persona's members only: a member removed
    while their debate waits no longer has it run."""
    user_id, headers = user
    other_id, _ = other_user
    await add_provider(client, admin_headers, stub)
    async with database.transaction() as session:
        persona = Persona(owner_id=other_id, name="Team")
        session.add(persona)
        await session.flush()
        session.add(PersonaMember(persona_id=persona.id, user_id=user_id, role="editor"))
    agent = await make_agent(database, other_id, persona_id=persona.id,
                             preferred_model="stub-model", system_prompt=SECRET)
    created = await start(client, headers, **body(agent.id))
    done = await run_after(app, client, database, test_settings, stub, headers, created["id"],
                           "DELETE FROM persona_members WHERE user_id = :u", u=user_id)
    assert_failed_unused(done, stub)


def _two_models() -> dict[str, Any]:
    return {"topic": "t", "positions": ["a", "b"], "total_rounds": 1,
            "participants": [{"id": "x", "model": "stub-model"},
                             {"id": "y", "model": "stub-model"}]}


async def test_a_debate_queued_before_its_owner_was_suspended_does_not_start(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, test_settings: Settings,
) -> None:
    """A debate queued before its owner was suspended (or deactivated) fails saying why,
    and no model is asked on the account's behalf, as for agent runs and workflow nodes."""
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("Should not be asked.\nConfidence: 0.5", times=None))
    debates = []
    for change in ({"status": "suspended"}, {"is_active": False}):
        uid, headers = await make_user(database)
        created = await start(client, headers, **_two_models())
        changed = await client.patch(f"/api/v1/users/{uid}", headers=admin_headers,
                                     json=change)
        assert changed.status_code == 200, changed.text
        debates.append(created["id"])
    async with running_worker(app, database, test_settings):
        done = [await wait_for_debate(client, admin_headers, d) for d in debates]
    asked = stub.requests(path="/v1/chat/completions")
    assert asked == [], f"{len(asked)} model calls for a suspended/deactivated owner"
    assert [(d["status"], "suspended or deactivated" in (d["error_message"] or ""))
            for d in done] == [("failed", True)] * 2, done


async def test_an_administrator_s_debate_may_not_seat_another_user_s_private_agent(
    client: httpx.AsyncClient, database: Database,
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    """A debate acts for its owner, never as an administrator (its job runs in the owner's
    own scope): an administrator seating another user's private agent is refused at once
    (403 naming the agent), where the debate was accepted and then failed by the worker
    as "no longer available" though nothing had changed."""
    other_id, _ = other_user
    _, admin_user = await make_user(database, admin=True)
    agent = await make_agent(database, other_id, preferred_model="stub-model")
    resp = await client.post("/api/v1/debates", headers=admin_user, json={
        "topic": "t", "positions": ["a", "b"], "total_rounds": 1, "participants": [
            {"id": "x", "agent_id": str(agent.id)}, {"id": "y", "model": "stub-model"}]})
    assert resp.status_code == 403, resp.text
    assert resp.json()["agent_id"] == str(agent.id)
    own = await make_agent(database, other_id, preferred_model="stub-model", is_public=True)
    created = await start(client, admin_user, topic="t", positions=["a", "b"], total_rounds=1,
                          participants=[{"id": "x", "agent_id": str(own.id)},
                                        {"id": "y", "model": "stub-model"}])
    assert created["status"] == "pending"


async def test_a_blank_or_multiline_participant_model_or_provider_is_a_422(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """A participant's model or provider of spaces, a zero-width space or with a line
    break is a 422 at once, as an agent's preferred model and provider are (it was
    accepted, then failed as unknown after the earlier participants' calls were paid)."""
    _, headers = user
    bad = [{"model": "   "}, {"model": "\u200b"}, {"model": "stub-model\n"},
           {"model": "stub-model", "provider": "   "},
           {"model": "stub-model", "provider": "\u200b"},
           {"model": "stub-model", "provider": "stub\r\n"}]
    accepted = []
    for fields in bad:
        resp = await client.post("/api/v1/debates", headers=headers, json={
            "topic": "t", "positions": ["a", "b"],
            "participants": [{"id": "x", "model": "stub-model"}, {"id": "y", **fields}]})
        if resp.status_code != 422:
            accepted.append((fields, resp.status_code))
    assert accepted == []
