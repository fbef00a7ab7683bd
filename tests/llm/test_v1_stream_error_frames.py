"""The error frame that ends a /v1 stream broken off after its first chunk names what
every other /v1 error names (docs/chat.md): the HTTP request (`error.request_id`, as
`X-Request-ID`) and the recorded LLM request (`error.roost.request_id`)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from tests.llm.sse import v1_frames
from tests.support.identity import make_user
from tests.support.openai_stub import Drop, StubServer

Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=1.5, llm_local_model=False,
                    chat_max_message_chars=1000, max_request_bytes=256 * 1024)


@pytest.fixture
async def ready(client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
                database: Database) -> Headers:
    body = {"name": "stub", "type": "openai", "base_url": stub.base_url, "model": "stub-model"}
    resp = await client.post("/api/v1/llm/providers", json=body, headers=admin_headers)
    assert resp.status_code == 201, resp.text
    _, headers = await make_user(database)
    return headers


async def _broken_stream(client: httpx.AsyncClient, headers: Headers,
                         stub: StubServer) -> httpx.Response:
    stub.script(Drop(text="one two three four", after=2))
    body = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}],
            "stream": True, "stream_options": {"include_usage": True}}
    resp = await client.post("/v1/chat/completions", content=json.dumps(body),
                             headers={**headers, "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    return resp


async def test_stream_broken_off_error_frame_names_request(
    client: httpx.AsyncClient, ready: Headers, stub: StubServer, database: Database,
) -> None:
    """The request is recorded failed; the frame was only {message, type, param, code},
    so the caller could not find it (GET /api/v1/llm/requests/{id})."""
    resp = await _broken_stream(client, ready, stub)
    last = v1_frames(resp.text)[-1]
    assert isinstance(last, dict) and "error" in last, last
    async with database.transaction() as s:
        rows = (await s.execute(text("SELECT id, status FROM llm_requests"))).all()
    assert [r.status for r in rows] == ["failed"]
    assert last["error"].get("roost", {}).get("request_id") == str(rows[0].id), last


async def test_stream_error_frame_carries_request_id(
    client: httpx.AsyncClient, ready: Headers, stub: StubServer,
) -> None:
    """Every non-streamed /v1 error has it; the stream's error frame had none."""
    resp = await _broken_stream(client, ready, stub)
    last = v1_frames(resp.text)[-1]
    assert last["error"].get("request_id") == resp.headers.get("x-request-id"), last
