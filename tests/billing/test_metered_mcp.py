"""Roost's own ``/mcp`` endpoint for a metered user: a tool call (``current_time``, twice:
the second may be answered from the process's caches) pays a credit each and is an error
result saying "not enough credits" once the balance is spent; an agent whose run calls a
tool completes and settles every hold; an agent the balance cannot cover is an error
result saying so, nothing charged or held."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import make_agent, worker  # noqa: F401
from tests.billing.metered import Headers, assert_settled, metered_settings, metered_user, settled, subscribe
from tests.support.identity import make_user
from tests.support.mcp_client import mcp_session
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls
from tests.support.server import in_process


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return metered_settings(tmp_path)


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_mcp_tool_calls_pay_credits_and_stop_at_the_limit(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    user_id, headers = await make_user(database)
    await subscribe(client, admin_headers, user_id, 2)
    async with in_process(app) as base, mcp_session(f"{base}/mcp", headers) as session:
        names = {t.name for t in (await session.list_tools()).tools}
        assert "current_time" in names, names
        for _ in range(2):
            result = await session.call_tool("current_time", {"timezone": "UTC"})
            assert not result.is_error, _text(result)
        refused = await session.call_tool("current_time", {"timezone": "UTC"})
        assert refused.is_error and "not enough credits" in _text(refused), _text(refused)
        who = await session.call_tool("whoami", {})
        assert not who.is_error
    assert await settled(database, user_id) == {"used": 2, "reserved": 0, "held": 0}


async def test_an_mcp_agent_call_whose_run_calls_a_tool_completes_and_settles(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, worker: Worker,  # noqa: F811
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    await make_agent(database, user_id, slug="clock", tool_permissions=["current_time"],
                     config={"max_output_tokens": 500})
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("It is noon."))
    async with in_process(app) as base, mcp_session(f"{base}/mcp", headers) as session:
        result = await session.call_tool("agent__clock", {"input": "What time is it?"})
        assert not result.is_error, _text(result)
        assert result.structured_content["status"] == "completed", result.structured_content
    await assert_settled(database, user_id, used_at_least=3)


async def test_an_mcp_agent_call_without_credits_is_an_error_result_saying_so(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, worker: Worker,  # noqa: F811
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 0)
    await make_agent(database, user_id, slug="clock", tool_permissions=["current_time"])
    async with in_process(app) as base, mcp_session(f"{base}/mcp", headers) as session:
        result = await session.call_tool("agent__clock", {"input": "What time is it?"})
        assert result.is_error and "credits" in _text(result).lower(), _text(result)
    assert await settled(database, user_id) == {"used": 0, "reserved": 0, "held": 0}
