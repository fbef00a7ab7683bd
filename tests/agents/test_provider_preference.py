"""An agent's ``preferred_provider`` and its persona's ``default_provider`` and
``fallback_providers``: checked when written (a registered provider's name, whatever its
case), and preferred, in that order, by the run's model calls (docs/agents.md,
"Providers")."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.api import Headers, create_agent, create_persona
from tests.agents.conftest import make_agent, wait_for_run
from tests.agents.test_runs import start
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Fail, Reply
from tests.support.sql import fetch


@pytest.mark.parametrize(("field", "value", "named"), [
    ("default_provider", "   ", None), ("fallback_providers", ["alpha", " "], None),
    ("default_provider", "no-such-provider", "no-such-provider"),
    ("fallback_providers", ["ALPHA", "no-such-provider"], "no-such-provider")])
async def test_a_persona_s_provider_naming_no_provider_is_a_422_naming_it(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], field: str, value: Any, named: str | None,
) -> None:
    """Blank, or no registered provider's name: 422 naming the field (and the unknown
    name), on create and on change; nothing stored."""
    _, h = user
    await add_provider(client, admin_headers, stub, name="alpha")
    created = await client.post("/api/v1/personas", headers=h, json={"name": "x", field: value})
    persona = await create_persona(client, h)
    changed = await client.patch(f"/api/v1/personas/{persona['id']}", headers=h,
                                 json={field: value})
    for resp in (created, changed):
        assert resp.status_code == 422 and field in resp.text, resp.text
        assert named is None or named in resp.text, resp.text
    listed = (await client.get("/api/v1/personas", headers=h)).json()["items"]
    assert listed == [persona]


@pytest.mark.parametrize(("value", "named"), [("  ", None), ("no-such-provider", "no-such")])
async def test_an_agent_s_preferred_provider_naming_no_provider_is_a_422_naming_it(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], value: str, named: str | None,
) -> None:
    _, h = user
    await add_provider(client, admin_headers, stub, name="alpha")
    created = await client.post("/api/v1/agents", headers=h, json={
        "name": "A", "slug": "a-1", "preferred_provider": value})
    agent = await create_agent(client, h)
    changed = await client.patch(f"/api/v1/agents/{agent['id']}", headers=h,
                                 json={"preferred_provider": value})
    for resp in (created, changed):
        assert resp.status_code == 422 and "preferred_provider" in resp.text, resp.text
        assert named is None or named in resp.text, resp.text
    assert (await client.get(f"/api/v1/agents/{agent['id']}", headers=h)).json() == agent


async def test_registered_provider_names_are_stored_whatever_their_case(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    _, h = user
    await add_provider(client, admin_headers, stub, name="alpha")
    await add_provider(client, admin_headers, stub, name="Beta")
    persona = await create_persona(client, h, default_provider="ALPHA",
                                   fallback_providers=["beta", "Alpha"])
    assert (persona["default_provider"], persona["fallback_providers"]) == (
        "ALPHA", ["beta", "Alpha"])
    agent = await create_agent(client, h, persona_id=persona["id"], preferred_provider="BETA")
    assert agent["preferred_provider"] == "BETA"
    changed = await client.patch(f"/api/v1/personas/{persona['id']}", headers=h,
                                 json={"default_provider": None, "fallback_providers": []})
    assert changed.status_code == 200, changed.text


async def _attempts(database: Database, run_id: str) -> list[tuple[str, str]]:
    """(provider, outcome) of each attempt of the run's model calls, in order."""
    rows = await fetch(database, "SELECT r.provider_name, r.outcome FROM llm_responses r "
                       "JOIN run_steps s ON s.llm_request_id = r.request_id "
                       "WHERE s.run_id = :r ORDER BY r.created_at, r.id", r=run_id)
    return [(row[0], row[1]) for row in rows]


async def test_a_run_s_model_call_goes_to_its_persona_s_provider_first(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    stub_b: StubServer, database: Database, user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """Two providers serve the model; the persona prefers the second by priority (its
    default provider, deleted since, is skipped): the call goes to it alone."""
    user_id, h = user
    await add_provider(client, admin_headers, stub, name="alpha", priority=1)
    await add_provider(client, admin_headers, stub_b, name="beta", priority=2)
    gone = await add_provider(client, admin_headers, stub, name="delta", priority=3)
    persona = await create_persona(client, h, default_provider="delta",
                                   fallback_providers=["BETA"])
    deleted = await client.delete(f"/api/v1/llm/providers/{gone['id']}", headers=admin_headers)
    assert deleted.status_code == 204, deleted.text
    agent = await make_agent(database, user_id, persona_id=uuid.UUID(persona["id"]))
    stub_b.script(Reply("from beta"))
    done = await wait_for_run(client, h, (await start(client, h, agent.id))["id"])
    assert (done["status"], done["output"]) == ("completed", "from beta"), done
    assert await _attempts(database, done["id"]) == [("beta", "success")]
    assert stub.requests(path="/v1/chat/completions") == []


async def test_a_run_falls_back_from_its_agent_s_provider_to_its_persona_s(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    stub_b: StubServer, database: Database, user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """The agent's provider first, then the persona's fallback, then the others: the
    agent's failing (503), the persona's answers; the highest priority is never asked."""
    user_id, h = user
    await add_provider(client, admin_headers, stub, name="alpha", priority=1)
    await add_provider(client, admin_headers, stub_b, name="beta", priority=2)
    await add_provider(client, admin_headers, stub, name="gamma", priority=3)
    persona = await create_persona(client, h, fallback_providers=["Gamma"])
    agent = await make_agent(database, user_id, persona_id=uuid.UUID(persona["id"]),
                             preferred_provider="beta")
    stub_b.script(Fail(503))
    stub.script(Reply("from gamma"))
    done = await wait_for_run(client, h, (await start(client, h, agent.id))["id"])
    assert (done["status"], done["output"]) == ("completed", "from gamma"), done
    assert await _attempts(database, done["id"]) == [("beta", "error"), ("gamma", "success")]
    assert len(stub.requests(path="/v1/chat/completions")) == 1
