"""A memory.learn job whose account is deleted while it is queued or while its
extraction call runs: it ends at its first attempt (no retries with backoff for an
account that no longer exists), and a model is never asked on behalf of no one."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from roost.db.engine import Database
from roost.llm import jobs as llm_jobs
from roost.llm.gateway import LLMGateway
from tests.memory.test_learning import API, extracted, fact, gateway, test_settings
from tests.support.identity import make_user
from tests.support.lifecycle import end_account, job_once_finished
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.support.workers import in_process_worker

__all__ = ["gateway", "test_settings"]  # fixtures
Headers = dict[str, str]


@pytest.mark.parametrize("when", ["queued", "extracting"])
async def test_a_learn_job_of_a_deleted_account_ends_at_its_first_attempt(
    database: Database, gateway: LLMGateway, client: httpx.AsyncClient, stub: StubServer,
    admin_headers: Headers, when: str,
) -> None:
    user_id, headers = await make_user(database)
    if when == "queued":
        stub.script(extracted(fact("The user likes tea.")))
    else:
        stub.script(Reply(json={"facts": [fact("The user likes tea.")]}, delay_ms=2000))
    queued = await client.post(f"{API}/learn", headers=headers, json={"text": "I like tea."})
    assert queued.status_code == 202, queued.text
    if when == "queued":
        await end_account(client, admin_headers, user_id)
    llm_jobs.gateway_override = gateway
    try:
        async with in_process_worker(database):
            if when == "extracting":
                deadline = asyncio.get_running_loop().time() + 15
                while not stub.requests("/v1/chat/completions"):
                    assert asyncio.get_running_loop().time() < deadline, "no extraction began"
                    await asyncio.sleep(0.05)
                await end_account(client, admin_headers, user_id)
            state = await job_once_finished(database, queued.json()["task_id"])
    finally:
        llm_jobs.gateway_override = None
    assert state[:2] == ("completed", 1), state
    if when == "queued":
        assert stub.requests("/v1/chat/completions") == []
