"""Code versions fixtures: settings with tiny checks (``python -c``), users, a chat
session and a run to commit to, an in-process worker that runs the validations."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.agents.models import Agent, Run
from roost.codeversions import jobs
from roost.codeversions.config import CodeVersionsConfig
from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.support.identity import make_user
from tests.support.workers import in_process_worker

Headers = dict[str, str]

# Passes when the checkout's app.py says "ok": the check really reads the commit's files.
APP_SAYS_OK = [sys.executable, "-c",
               "import pathlib, sys; text = pathlib.Path('app.py').read_text(); "
               "print('app.py:', text.strip()); sys.exit(0 if 'ok' in text else 1)"]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_local_model=False,
                    knowledge_embedding_provider="hash", code_checks=[APP_SAYS_OK],
                    code_check_timeout_s=60, code_max_file_bytes=64 * 1024,
                    code_max_files=20)


@pytest.fixture
def config(test_settings: Settings) -> CodeVersionsConfig:
    return CodeVersionsConfig.from_settings(test_settings)


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


@pytest.fixture
async def other_user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


async def chat_session(client: httpx.AsyncClient, headers: Headers) -> str:
    resp = await client.post("/api/v1/chat/sessions", json={"title": "coding"}, headers=headers)
    assert resp.status_code == 201, resp.text
    session_id: str = resp.json()["id"]
    return session_id


async def make_run(database: Database, owner: uuid.UUID) -> uuid.UUID:
    async with database.transaction() as session:
        agent = Agent(user_id=owner, name="Coder", slug=f"coder-{uuid.uuid4().hex[:8]}",
                      tool_permissions=[], config={})
        session.add(agent)
        await session.flush()
        run = Run(agent_id=agent.id, user_id=owner, trace_id=f"t-{uuid.uuid4()}",
                  input="write code", status="completed")
        session.add(run)
        await session.flush()
        return run.id


async def commit(client: httpx.AsyncClient, headers: Headers, expect: int = 201,
                 **body: Any) -> dict[str, Any]:
    body.setdefault("message", "change")
    resp = await client.post("/api/v1/code-versions", json=body, headers=headers)
    assert resp.status_code == expect, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


@pytest.fixture
async def worker(client: Any, database: Database,
                 config: CodeVersionsConfig) -> AsyncIterator[Worker]:
    jobs.config_override = config
    try:
        async with in_process_worker(database) as w:
            yield w
    finally:
        jobs.config_override = None


async def wait_validated(client: httpx.AsyncClient, headers: Headers, version_id: str,
                         within: float = 60) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        version: dict[str, Any] = (await client.get(f"/api/v1/code-versions/{version_id}",
                                                    headers=headers)).json()
        if version["validation_status"] not in ("pending", "running"):
            return version
        assert asyncio.get_running_loop().time() < deadline, version
        await asyncio.sleep(0.1)
