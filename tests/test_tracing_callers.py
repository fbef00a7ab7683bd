"""A caller's W3C trace context: kept by a chat with an agent with tracing off, and
several tracestate fields combined."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from roost import tracing
from roost.config import Settings
from roost.db.engine import Database
from tests.agents.conftest import make_agent, running_worker
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, StubServer

pytestmark = pytest.mark.needs_otel

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_timeout_s=5.0,
                    llm_local_model=False, knowledge_embedding_provider="hash")


@pytest.fixture
def spans() -> Iterator[Any]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracing.install(exporter)
    try:
        yield exporter
    finally:
        tracing.uninstall()


async def test_tracing_off_a_chat_with_an_agent_keeps_the_callers_trace(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], stub: StubServer,
    database: Database, test_settings: Settings,
) -> None:
    """docs/operations.md: a run started by POST /agents/{id}/runs or a chat with an agent
    stores the caller's trace (tracing off: when its traceparent follows the W3C rules).
    A chat message to `agent:<slug>` stored a new random trace: the header was unread."""
    assert not tracing.enabled()
    await add_provider(client, admin_headers, stub)
    user_id, headers = await make_user(database)
    await make_agent(database, user_id, slug="probe")
    stub.script(Reply("hello"))
    async with running_worker(app, database, test_settings), \
            app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://roost.test") as http:
        sid = (await asyncio.wait_for(http.post("/api/v1/chat/sessions", json={},
                                                  headers=headers), 30)).json()["id"]
        sent = await asyncio.wait_for(http.post(
            f"/api/v1/chat/sessions/{sid}/messages", timeout=30,
            headers={**headers, "traceparent": CALLER},
            json={"content": "hi", "model": "agent:probe"}), 30)
        assert sent.status_code == 201, sent.text
        run = (await asyncio.wait_for(http.get(f"/api/v1/runs/{sent.json()['run_id']}",
                                                 headers=headers), 30)).json()
    assert run["trace_id"].split("-")[1] == CALLER_TRACE, run["trace_id"]


async def test_repeated_tracestate_headers_are_combined(
    client: httpx.AsyncClient, spans: Any,
) -> None:
    """W3C Trace Context / RFC 9110: several tracestate header fields are one list,
    combined with ','.  The request's span kept only the last field's entries."""
    resp = await asyncio.wait_for(client.get("/api/v1/no-such-thing", headers=[
        ("traceparent", CALLER), ("tracestate", "vendora=1"), ("tracestate", "vendorb=2")]), 30)
    assert resp.status_code == 404
    server = [s for s in spans.get_finished_spans() if s.name == "GET unmatched"]
    assert len(server) == 1
    state = dict(server[0].context.trace_state.items())
    assert state == {"vendora": "1", "vendorb": "2"}, state

