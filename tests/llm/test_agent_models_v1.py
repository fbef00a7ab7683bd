"""Model "agent:<slug>" of /v1/chat/completions (docs/agents.md): errors and stream
frames as for any other model of the gateway."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from tests.agents.conftest import make_agent, running_worker
from tests.chat.conftest import add_provider
from tests.llm.agent_models import agent_models  # noqa: F401 (a fixture)
from tests.llm.sse import v1_frames
from tests.support.identity import make_user
from tests.support.openai_stub import Fail, Reply, StubServer

Headers = dict[str, str]
MSG = [{"role": "user", "content": "hello"}]
pytestmark = pytest.mark.usefixtures("agent_models")


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=5.0, llm_local_model=False,
                    knowledge_embedding_provider="hash")


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


async def _post(client: httpx.AsyncClient, headers: Headers, **body: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", headers=headers,
                             json={"messages": MSG, **body})


async def test_an_agent_model_one_may_not_see_is_model_not_found(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """An unknown agent, or another tenant's private one, is /v1's 404 model_not_found with
    param "model", the same for both; no run is started."""
    await add_provider(client, admin_headers, stub)
    other_id, _ = await make_user(database)
    await make_agent(database, other_id, slug="secret-bot")
    for model in ("agent:secret-bot", "agent:never-was"):
        resp = await _post(client, user[1], model=model)
        assert resp.status_code == 404, resp.text
        error = resp.json()["error"]
        assert (error["code"], error["param"]) == ("model_not_found", "model"), error
    async with database.transaction() as s:
        assert (await s.execute(text("SELECT count(*) FROM runs"))).scalar_one() == 0


@pytest.mark.parametrize(("change", "param"), [
    ({"tool_choice": "a\u0000"}, "tool_choice"), ({"stop": ["\u0000"]}, "stop"),
    ({"stream": "yes"}, "stream"), ({"max_tokens": "8"}, "max_tokens"),
    ({"messages": [{"role": "user", "content": None}]}, "messages.0.content"),
], ids=["nul-tool-choice", "nul-stop", "stream-string", "max-tokens-string", "null-content"])
async def test_an_agent_model_request_is_checked_as_any_models(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
    change: dict[str, Any], param: str,
) -> None:
    """The body of an agent model's request is checked as any model's (400 invalid_value
    naming the field) before a run starts: a NUL in tool_choice started a run (and, with
    no worker, a 504 later), as the handler skipped the gateway's checks."""
    await make_agent(database, user[0], slug="mine")
    resp = await _post(client, user[1], model="agent:mine", **change)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_value", param), error
    async with database.transaction() as s:
        assert (await s.execute(text("SELECT count(*) FROM runs"))).scalar_one() == 0


async def test_an_agent_stream_with_include_usage_ends_with_the_usage_chunk(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database, test_settings: Settings,
) -> None:
    """stream_options.include_usage adds the usage chunk (choices []) after the stop chunk,
    before [DONE], as for any model of /v1/chat/completions; the chunks have its shape."""
    await add_provider(client, admin_headers, stub)
    other_id, _ = await make_user(database)
    await make_agent(database, other_id, slug="pub", is_public=True)  # another's public agent
    stub.script(Reply("streamed answer"))
    async with running_worker(app, database, test_settings):
        resp = await _post(client, user[1], model="agent:pub", stream=True,
                           stream_options={"include_usage": True})
    frames = v1_frames(resp.text)
    assert frames[-1] == "[DONE]", frames
    assert frames[-3]["choices"][0]["finish_reason"] == "stop", frames
    assert frames[-2]["choices"] == [] and frames[-2]["usage"]["total_tokens"] > 0, frames
    # each choice has the keys the gateway's own chunks have ("logprobs": null too)
    assert all(set(c) == {"index", "delta", "logprobs", "finish_reason"}
               for f in frames[:-1] for c in f["choices"]), frames


async def test_a_failed_agent_stream_ends_with_an_error_frame_with_a_code(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database, test_settings: Settings,
) -> None:
    """A failed agent run streamed ends with an error frame carrying the code of the whole
    answer's 502 (the gateway's own mapping), not code null."""
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user[0], slug="failing")
    stub.script(Fail(400, "rejected", times=None))
    async with running_worker(app, database, test_settings):
        whole = await _post(client, user[1], model="agent:failing")
        streamed = await _post(client, user[1], model="agent:failing", stream=True)
    assert whole.status_code == 502, whole.text
    code = whole.json()["error"]["code"]
    assert code
    error = v1_frames(streamed.text)[-1]["error"]
    assert error["code"] == code, error


@pytest.mark.parametrize("messages", [
    [{"role": "assistant", "content": "only me"}],
    [{"role": "system", "content": "be brief"}, {"role": "tool", "tool_call_id": "c1",
                                                 "content": "a result"}],
], ids=["assistant-only", "tool-only"])
async def test_messages_without_a_user_turn_start_no_run(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
    messages: list[dict[str, Any]],
) -> None:
    """Nothing was asked of the agent: 400, no run (an assistant's lone turn was the run's
    input, as if the user had said it)."""
    await make_agent(database, user[0], slug="mine")
    resp = await client.post("/v1/chat/completions", headers=user[1],
                             json={"model": "agent:mine", "messages": messages})
    assert resp.status_code == 400, resp.text
    assert "no user message" in resp.json()["error"]["message"]
    async with database.transaction() as s:
        assert (await s.execute(text("SELECT count(*) FROM runs"))).scalar_one() == 0


async def test_a_transcript_keeps_the_tool_calls_its_tool_answers_follow(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database, test_settings: Settings,
) -> None:
    """A client's tool loop sends the assistant's call (content null) then the tool's
    answer: the run's input names the call before its answer (it was left out).  The
    client's system and developer messages are not in it: the agent keeps its own prompt
    (a developer message was written into the transcript as if said in the exchange)."""
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user[0], slug="mine")
    stub.script(Reply("done"))
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "developer", "content": "answer in French"},
        {"role": "user", "content": "what time is it?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "clock", "arguments": '{"tz": "UTC"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
        {"role": "user", "content": "and in words?"}]
    async with running_worker(app, database, test_settings):
        resp = await client.post("/v1/chat/completions", headers=user[1],
                                 json={"model": "agent:mine", "messages": messages})
    assert resp.status_code == 200, resp.text
    async with database.transaction() as s:
        run_input = (await s.execute(text("SELECT input FROM runs"))).scalar_one()
    assert run_input == ('user: what time is it?\n\nassistant: [called clock({"tz": "UTC"})]'
                         "\n\ntool: 12:00\n\nuser: and in words?"), run_input


async def test_models_retrieve_finds_an_agent_model_one_may_call(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """``GET /v1/models/agent:<slug>`` (the SDK's ``models.retrieve``) of an agent the
    caller may run describes it, as a client checking a model before using it expects;
    another tenant's private agent stays the 404 model_not_found of any unknown model."""
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user[0], slug="mine")
    other_id, _ = await make_user(database)
    await make_agent(database, other_id, slug="theirs")
    found = await client.get("/v1/models/agent:mine", headers=user[1])
    assert found.status_code == 200, found.text
    assert (found.json()["id"], found.json()["object"]) == ("agent:mine", "model")
    for model in ("agent:theirs", "agent:never-was"):
        missing = await client.get(f"/v1/models/{model}", headers=user[1])
        assert missing.status_code == 404, missing.text
        error = missing.json()["error"]
        assert (error["code"], error["param"]) == ("model_not_found", "model"), error
