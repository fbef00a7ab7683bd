"""``GET /v1/models`` shows what the caller's plan (``models_allowed``) lets them call."""

from __future__ import annotations

import uuid

import httpx
import pytest

from roost.db.engine import Database
from tests.billing.metered import subscribe
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer

Headers = dict[str, str]


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


async def test_v1_models_lists_only_the_models_the_callers_plan_allows(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A plan allowing only ``other*``: ``GET /v1/models`` and ``models.retrieve`` show
    what the user may call, as OpenAI's list shows what a key can use.  Both showed every
    enabled provider's model (``stub-model`` listed, retrieved, then a 403 to call)."""
    await add_provider(client, admin_headers, stub)
    await add_provider(client, admin_headers, stub, name="stub2", model="other-model")
    await subscribe(client, admin_headers, user[0], 100_000, models_allowed=["other*"])
    resp = await client.post("/v1/embeddings", headers=user[1],
                             json={"model": "stub-model", "input": "a"})
    assert resp.status_code == 403, resp.text  # the plan refuses the model...
    resp = await client.post("/v1/embeddings", headers=user[1],
                             json={"model": "other-model", "input": "a"})
    assert resp.status_code == 200, resp.text
    resp = await client.get("/v1/models", headers=user[1])
    assert resp.status_code == 200, resp.text
    # ...so it should not be offered.
    assert [m["id"] for m in resp.json()["data"]] == ["other-model"], resp.text
    resp = await client.get("/v1/models/stub-model", headers=user[1])
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["code"] == "model_not_found", resp.text
