"""Agents fixtures: users, a stub LLM provider (a real process), an in-process worker whose
runs use the app's gateway, and agents inserted as their owners would create them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from roost.agents import jobs as agent_jobs
from roost.agents import runner
from roost.agents.models import Agent
from roost.config import Settings
from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from roost.llm import jobs as llm_jobs
from roost.llm.deps import app_gateway
from roost.security.crypto import SecretBox
from roost.tasks.worker import Worker
from roost.tools.config import ToolsConfig
from tests.support.identity import make_user
from tests.support.workers import in_process_worker

Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_timeout_s=5.0,
                    llm_local_model=False, knowledge_embedding_provider="hash",
                    tools_allowed_hosts="127.0.0.1", tools_call_timeout_s=15.0)


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


@pytest.fixture
async def other_user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


@contextlib.asynccontextmanager
async def running_worker(app: FastAPI, database: Database, settings: Settings,
                         knowledge: KnowledgeConfig | None = None) -> AsyncIterator[Worker]:
    """A worker in this process whose runs use the app's gateway and keys (the app must
    have started: its start-up builds the gateway); ``knowledge``: its runs may search
    documents (retrieval, the knowledge_search tool) with that configuration."""
    gateway = app_gateway(app)
    env = runner.RunEnv(database=database, gateway=gateway,
                        tools=ToolsConfig.from_settings(settings),
                        box=SecretBox.from_keys(app.state.keys.secrets_key), knowledge=knowledge,
                        hosted=agent_jobs.hosted_builtins(settings, knowledge))
    agent_jobs.env_override, llm_jobs.gateway_override = env, gateway
    try:
        async with in_process_worker(database) as w:
            yield w
    finally:
        agent_jobs.env_override, llm_jobs.gateway_override = None, None


@pytest.fixture
async def worker(app: FastAPI, client: Any, database: Database,
                 test_settings: Settings) -> AsyncIterator[Worker]:
    """``running_worker`` for the whole test (``client`` first: the app's start-up)."""
    async with running_worker(app, database, test_settings) as w:
        yield w


async def make_agent(database: Database, owner: uuid.UUID, **fields: Any) -> Agent:
    values: dict[str, Any] = {"name": "Helper", "slug": f"helper-{uuid.uuid4().hex[:8]}",
                              "system_prompt": "You are a careful helper.",
                              "tool_permissions": [], "config": {}, **fields}
    async with database.transaction() as session:
        agent = Agent(user_id=owner, **values)
        session.add(agent)
        await session.flush()
        await session.refresh(agent)
    return agent


TERMINAL = ("completed", "failed", "cancelled")


async def wait_for_run(client: httpx.AsyncClient, headers: Headers, run_id: str,
                       statuses: tuple[str, ...] = TERMINAL, within: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        run: dict[str, Any] = (await client.get(f"/api/v1/runs/{run_id}", headers=headers)).json()
        if run["status"] in statuses:
            return run
        assert asyncio.get_running_loop().time() < deadline, run
        await asyncio.sleep(0.1)
