"""A persona member watching a run's events loses their rights while the model writes
(docs/agents.md, "Events"): the stream ends with the error a new request would get and
sends none of the text written after (it sent the text that woke it before checking)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.api import Headers, add_member, create_agent, create_persona, named_user
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.support.server import in_process

SECRET_TEXT = "confidential-answer-written-after-the-viewer-was-removed"


async def _read_events(lines: Any, until: str | None) -> list[tuple[str, Any]]:
    """SSE events (name, data) read from ``lines`` until one named ``until`` (or the end)."""
    found: list[tuple[str, Any]] = []
    name = "message"
    async for line in lines:
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            found.append((name, json.loads(line.split(":", 1)[1])))
            if until is not None and name == until:
                return found
            name = "message"
    return found


@pytest.mark.parametrize(("change", "status"), [("removed", 404), ("suspended", 401)])
async def test_a_watcher_s_event_stream_sends_no_text_written_after_their_rights_ended(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, worker: Worker, change: str, status: int,
) -> None:
    """A viewer watches the owner's run of the persona's agent and is removed from the
    persona (or suspended) before the model answers: the stream's error event (404, or
    401), none of the model's text."""
    _, owner = await make_user(database)
    viewer_id, viewer_name, viewer = await named_user(database, "viewer")
    await add_provider(client, admin_headers, stub)
    persona = await create_persona(client, owner)
    member = await add_member(client, owner, persona["id"], viewer_name, "viewer", viewer)
    agent = await create_agent(client, owner, persona_id=persona["id"])
    stub.script(Reply(" ".join([SECRET_TEXT] * 5), delay_ms=3000, chunk_delay_ms=50))
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as http:
        run = (await http.post(f"/api/v1/agents/{agent['id']}/runs", headers=owner,
                               json={"input": "tell me"})).json()
        async with http.stream("GET", f"/api/v1/runs/{run['id']}/events",
                               headers=viewer) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            started = await asyncio.wait_for(_read_events(lines, "step"), 30)
            assert started[-1][1]["phase"] == "started", started
            if change == "removed":
                done = await http.delete(
                    f"/api/v1/personas/{persona['id']}/members/{member['user_id']}",
                    headers=owner)
            else:
                done = await http.patch(f"/api/v1/users/{viewer_id}", headers=admin_headers,
                                        json={"status": "suspended"})
            assert done.status_code in (200, 204), done.text
            after = await asyncio.wait_for(_read_events(lines, None), 30)
    leaked = [data for name, data in after if name == "delta"]
    assert leaked == [], after
    assert after[-1][0] == "error" and after[-1][1]["status"] == status, after
