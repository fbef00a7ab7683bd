"""Chat fixtures: users with API keys, stub LLM providers (real processes), helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.workers import in_process_worker


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    # A short provider timeout so the "hanging provider" tests take a second, not minutes.
    return Settings(data_dir=tmp_path / "data", log_json=True, max_request_bytes=256 * 1024,
                    llm_timeout_s=1.0, chat_max_message_chars=2000, llm_local_model=False)


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, dict[str, str]]:
    return await make_user(database)


@pytest.fixture
async def other_user(database: Database) -> tuple[uuid.UUID, dict[str, str]]:
    return await make_user(database)


async def add_provider(
    client: httpx.AsyncClient, admin_headers: dict[str, str], stub: StubServer, *,
    name: str = "stub", model: str = "stub-model", **fields: Any,
) -> dict[str, Any]:
    body = {"name": name, "type": "openai", "base_url": stub.base_url, "model": model, **fields}
    resp = await client.post("/api/v1/llm/providers", json=body, headers=admin_headers)
    assert resp.status_code == 201, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def new_session(
    client: httpx.AsyncClient, headers: dict[str, str], **fields: Any
) -> dict[str, Any]:
    resp = await client.post("/api/v1/chat/sessions", json={"title": "t", **fields}, headers=headers)
    assert resp.status_code == 201, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def post_message(client: httpx.AsyncClient, headers: dict[str, str], session_id: str,
                       **body: Any) -> httpx.Response:
    """``POST`` a message to a session; the answer as it came."""
    return await client.post(f"/api/v1/chat/sessions/{session_id}/messages", json=body,
                             headers=headers)


@pytest.fixture
async def sid(client: httpx.AsyncClient, admin_headers: dict[str, str], stub: StubServer,
              user: tuple[uuid.UUID, dict[str, str]]) -> str:
    """A session of ``user``'s, answered by the stub provider."""
    await add_provider(client, admin_headers, stub)
    return str((await new_session(client, user[1]))["id"])


@pytest.fixture
async def worker(database: Database) -> AsyncIterator[Worker]:
    """A queue worker running this test's jobs (summaries and the like)."""
    async with in_process_worker(database) as running:
        yield running


def sse_events(text: str) -> list[tuple[str, Any]]:
    import json

    events: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            payload = "\n".join(data)
            events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return events
