"""/v1 and the openai SDK's own retries (408, 409, 429 and 5xx, twice by default, unless
the answer says ``x-should-retry: false``): an answer a retry cannot change tells it not
to, and an agent model's failed or still running run is never started again
(docs/chat.md, docs/agents.md)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from roost.agents import run_routes
from roost.config import Settings
from roost.db.engine import Database
from roost.llm import routing
from tests.agents.conftest import make_agent, running_worker
from tests.chat.conftest import add_provider
from tests.llm.agent_models import agent_models  # noqa: F401 (a fixture)
from tests.support.identity import make_user
from tests.support.openai_stub import Fail, StubServer

Headers = dict[str, str]
MSG: Any = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=3.0, llm_local_model=False)


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


@pytest.fixture
async def counted_sdk(
    app: FastAPI, user: tuple[uuid.UUID, Headers],
) -> AsyncIterator[tuple[openai.AsyncOpenAI, list[str]]]:
    """The SDK with its default retries (2), and the paths of the requests it sent."""
    sent: list[str] = []

    async def count(request: httpx.Request) -> None:
        sent.append(request.url.path)

    key = user[1]["Authorization"].removeprefix("Bearer ")
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test",
                                 event_hooks={"request": [count]}) as http:
        yield openai.AsyncOpenAI(base_url="http://roost.test/v1", api_key=key,
                                 http_client=http, max_retries=2), sent


async def _runs(database: Database) -> int:
    async with database.transaction() as s:
        return int((await s.execute(text("SELECT count(*) FROM runs"))).scalar_one())


@pytest.mark.usefixtures("agent_models")
async def test_a_failed_agent_run_is_not_started_again_by_the_sdks_retries(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database, test_settings: Settings,
    counted_sdk: tuple[openai.AsyncOpenAI, list[str]],
) -> None:
    """model "agent:<slug>" whose run fails (502) starts one run for one SDK call, not
    three: each retry would start a new run, its tools' side effects again."""
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user[0], slug="failing")
    stub.script(Fail(400, "rejected", times=None))
    sdk, sent = counted_sdk
    async with running_worker(app, database, test_settings):
        with pytest.raises(openai.APIStatusError) as err:
            await sdk.chat.completions.create(model="agent:failing", messages=MSG)
    assert err.value.status_code == 502
    assert err.value.response.headers["x-should-retry"] == "false"
    assert len(sent) == 1, f"the SDK sent {len(sent)} requests"
    assert await _runs(database) == 1


@pytest.mark.usefixtures("agent_models")
async def test_an_agent_run_still_going_at_the_deadline_is_not_started_again(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database, monkeypatch: pytest.MonkeyPatch,
    counted_sdk: tuple[openai.AsyncOpenAI, list[str]],
) -> None:
    """The 504 of a run still queued at the deadline (it goes on) is not retried by the
    SDK: a retry would start a duplicate of the live run."""
    await add_provider(client, admin_headers, stub)
    monkeypatch.setattr(run_routes, "WAIT_GRACE_S", 0.5)
    # No worker: the run stays pending; the wait gives up after timeout_s + WAIT_GRACE_S.
    await make_agent(database, user[0], slug="queued-bot", config={"timeout_s": 0.1})
    sdk, sent = counted_sdk
    with pytest.raises(openai.APIStatusError) as err:
        await sdk.chat.completions.create(model="agent:queued-bot", messages=MSG)
    assert err.value.status_code == 504
    assert len(sent) == 1, f"the SDK sent {len(sent)} requests"
    assert await _runs(database) == 1


async def test_no_provider_is_not_retried_by_the_sdk(
    counted_sdk: tuple[openai.AsyncOpenAI, list[str]],
) -> None:
    """With no LLM provider configured, the SDK gets its 409 no_provider after one request,
    not three (409 is a status it retries; nothing changes in the second it waits)."""
    sdk, sent = counted_sdk
    with pytest.raises(openai.ConflictError) as err:
        await sdk.chat.completions.create(model="stub-model", messages=MSG)
    assert err.value.code == "no_provider"
    assert err.value.response.headers["x-should-retry"] == "false"
    assert len(sent) == 1, f"the SDK sent {len(sent)} requests"


async def test_a_provider_failure_stays_retryable(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    counted_sdk: tuple[openai.AsyncOpenAI, list[str]],
) -> None:
    """A provider's 5xx (502 provider_error: no run, nothing but a model call) carries no
    "do not retry": the SDK's retry may reach a provider that recovered, and here does."""
    await add_provider(client, admin_headers, stub)
    stub.script(Fail(500, "down", times=1))
    sdk, sent = counted_sdk
    answer = await sdk.chat.completions.create(model="stub-model", messages=MSG)
    assert answer.choices[0].message.content
    assert len(sent) == 2, sent


async def test_an_invalid_request_tells_the_sdk_not_to_retry(
    user: tuple[uuid.UUID, Headers], client: httpx.AsyncClient,
) -> None:
    """A 400 (the request must change) says so too, as every 4xx but 408 and 429."""
    resp = await client.post("/v1/chat/completions", headers=user[1],
                             json={"model": "m", "messages": []})
    assert resp.status_code == 400, resp.text
    assert resp.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(("error", "status", "no_retry"), [
    (IntegrityError("INSERT", {}, Exception("duplicate key")), 409, True),
    (OperationalError("SELECT", {}, ConnectionRefusedError("down")), 503, False),
])
async def test_an_error_answered_outside_the_route_says_whether_a_retry_can_help(
    user: tuple[uuid.UUID, Headers], client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch, error: Exception, status: int, no_retry: bool,
) -> None:
    """A conflict with stored data (409, a status the SDKs retry) answered by the app's
    problem handlers, not the /v1 route's, tells the SDK not to retry; a database outage
    (503) stays retryable."""
    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(routing, "available_models", failing)
    resp = await client.get("/v1/models", headers=user[1])
    assert resp.status_code == status, resp.text
    assert "error" in resp.json()
    assert (resp.headers.get("x-should-retry") == "false") is no_retry
