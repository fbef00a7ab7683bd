"""A plan's ``models_allowed`` holds for a call that names no model: such a call is
answered by a provider's default model, so only the providers whose default the plan
includes are asked (403 when there is none), nothing billed for a model it excludes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from tests.billing.metered import Headers, metered_settings, subscribe
from tests.chat.conftest import add_provider, new_session, post_message
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.sql import fetch


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return metered_settings(tmp_path, llm_credits_per_1k_tokens=1000.0)  # a credit a token


async def test_a_call_naming_no_model_cannot_use_a_model_the_plan_excludes(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """Plan allows only cheap-model; a chat turn that names no model must not be answered
    (and billed) by dear-model, the only provider's default."""
    await add_provider(client, admin_headers, stub, name="dear", model="dear-model")
    user_id, headers = await make_user(database)
    await subscribe(client, admin_headers, user_id, 100_000, models_allowed=["cheap-model"])
    named = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "dear-model", "messages": [{"role": "user", "content": "hi"}]})
    assert named.status_code == 403, named.text
    sid = (await new_session(client, headers))["id"]
    resp = await post_message(client, headers, sid, content="hello")
    billed = await fetch(database, "SELECT model, credits_used FROM usage_records "
                         "WHERE user_id = :u AND credits_used > 0", u=user_id)
    assert resp.status_code == 403 and billed == [], (resp.status_code, resp.text, billed)
    assert "models_allowed" in resp.text or "name a model" in resp.text, resp.text
    [state] = await fetch(database, "SELECT credits_reserved FROM subscriptions "
                          "WHERE user_id = :u", u=user_id)
    assert state.credits_reserved == 0


async def test_a_call_naming_no_model_skips_the_providers_whose_default_the_plan_excludes(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """Two providers, the first in routing order with a default the plan excludes: a call
    naming no model is answered by the other, the plan's; an unmetered user still gets the
    first."""
    await add_provider(client, admin_headers, stub, name="a-dear", model="dear-model")
    await add_provider(client, admin_headers, stub, name="b-cheap", model="cheap-model")
    user_id, headers = await make_user(database)
    await subscribe(client, admin_headers, user_id, 100_000, models_allowed=["cheap-*"])
    sid = (await new_session(client, headers))["id"]
    resp = await post_message(client, headers, sid, content="hello")
    assert resp.status_code == 201, resp.text
    rows = await fetch(database, "SELECT model FROM usage_records WHERE user_id = :u",
                       u=user_id)
    assert [r.model for r in rows] == ["cheap-model"], rows
    asked = await fetch(database, "SELECT r.provider_name FROM llm_responses r "
                        "JOIN llm_requests q ON q.id = r.request_id WHERE q.user_id = :u",
                        u=user_id)
    assert [a.provider_name for a in asked] == ["b-cheap"], asked

    free_id, free_headers = await make_user(database)  # no subscription: no plan to hold
    sid = (await new_session(client, free_headers))["id"]
    resp = await post_message(client, free_headers, sid, content="hello")
    rows = await fetch(database, "SELECT model FROM usage_records WHERE user_id = :u",
                       u=free_id)
    assert resp.status_code == 201 and [r.model for r in rows] == ["dear-model"], rows
