"""The owner of workflow runs deleted or suspended while a run is in a model call or
waits for an approval with a timeout job queued: the account can be deleted though it
published workflow versions, no job fails or retries, nothing is left open (job or
model request), no answer is a 5xx; a suspended owner's run ends."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI

from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from roost.workflows import jobs as _workflow_jobs  # noqa: F401 - workflows.node, for the worker
from tests.agents.conftest import running_worker, user, worker
from tests.agents.conftest import test_settings as agents_settings
from tests.chat.conftest import add_provider
from tests.support.lifecycle import end_account, jobs
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.support.races import race_settings, until_none
from tests.support.sql import scalar
from tests.workflows.test_races_workflows import ONE_CALL, slow_run
from tests.workflows.test_runs import approval_graph, publish, start, wait_for

__all__ = ["agents_settings", "user", "worker"]  # fixtures

Headers = dict[str, str]
OPEN = ("SELECT (SELECT count(*) FROM background_tasks WHERE status IN "
        " ('pending', 'running', 'queued', 'failed', 'stuck')) "
        "+ (SELECT count(*) FROM llm_requests WHERE status IN ('pending', 'running'))")


@pytest.fixture
def test_settings(agents_settings: Settings) -> Settings:
    return race_settings(agents_settings)


async def test_an_account_that_published_a_workflow_can_be_deleted(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
    user: tuple[uuid.UUID, Headers],
) -> None:
    user_id, headers = user
    await publish(client, headers, *approval_graph())
    await end_account(client, admin_headers, user_id)
    assert await scalar(database, "SELECT count(*) FROM workflows") == 0


@pytest.mark.parametrize("how", ["delete", "suspend"])
@pytest.mark.parametrize("phase", ["model call", "approval"])
async def test_an_account_ended_while_its_workflow_runs_leaves_nothing_open(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, how: str, phase: str,
) -> None:
    user_id, headers = user
    if phase == "model call":
        _, run = await slow_run(client, admin_headers, stub, headers)
    else:  # its timeout job fires a second later
        workflow_id = await publish(client, headers, *approval_graph(timeout_s=1))
        run = await start(client, headers, workflow_id, inputs={"doc": "memo"})
    await end_account(client, admin_headers, user_id, how)
    assert await until_none(database, OPEN, within=20) == 0, await jobs(database)
    workflow_jobs = await jobs(database, "workflows.%")
    assert workflow_jobs and all(s == "completed" and a == 1 for _, s, a, _ in workflow_jobs), \
        workflow_jobs
    status = await scalar(database, "SELECT status FROM runs WHERE id = :r", r=run["id"])
    if how == "delete":
        assert status is None, status  # gone with its owner
    else:
        assert status in ("completed", "failed", "cancelled"), status


async def test_a_run_queued_before_its_owner_was_suspended_calls_no_model(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers], test_settings: Settings,
) -> None:
    """Queued while no worker ran; the owner is suspended; the worker that picks the node
    up fails the run, saying why, without asking the model (its job completes, no retry)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("Should not be asked.", times=None))
    run = await start(client, headers, await publish(client, headers, *ONE_CALL))
    changed = await client.patch(f"/api/v1/users/{user_id}", headers=admin_headers,
                                 json={"status": "suspended"})
    assert changed.status_code == 200, changed.text
    async with running_worker(app, database, test_settings):
        done = await wait_for(client, admin_headers, run["id"])
        assert await until_none(database, OPEN, within=20) == 0, await jobs(database)
    assert done["status"] == "failed", done
    assert "suspended or deactivated" in (done["error_message"] or ""), done
    assert [(s, a) for _, s, a, _ in await jobs(database, "workflows.%")] == [("completed", 1)]
    assert stub.requests(path="/v1/chat/completions") == []
