"""Overlapping operations on one workflow run: two cancels, two resumes or two decisions
at once (one wins, the other is a 409), an approval and a cancel at once (one of the two
ends), a resume and a cancel at once, the workflow edited, published or deleted while it
runs (the run keeps its pinned version; deleted, it goes with the workflow).  None
answers a 5xx or leaves a step, job or model request open."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from roost.workflows import jobs as _workflow_jobs  # noqa: F401 - workflows.node, for the worker
from tests.agents.conftest import test_settings as agents_settings
from tests.agents.conftest import user, worker
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Fail, Reply
from tests.support.races import no_5xx, race_settings, until_none
from tests.support.sql import scalar
from tests.workflows.graphs import edge, node
from tests.workflows.test_runs import API, RUNS, approval_graph, publish, start, wait_for

__all__ = ["agents_settings", "user", "worker"]  # fixtures

Headers = dict[str, str]


@pytest.fixture
def test_settings(agents_settings: Settings) -> Settings:
    return race_settings(agents_settings)


def model_calls(*prompts: tuple[str, str], output: str) -> tuple[list[Any], list[Any]]:
    """start -> an llm node for each (id, prompt), in a line -> end with ``output``."""
    ids = ["s", *(node_id for node_id, _ in prompts), "e"]
    nodes = [node("s", "start"), *(node(node_id, "llm", prompt=prompt)
                                   for node_id, prompt in prompts),
             node("e", "end", output=output)]
    return nodes, [edge(str(n), a, b) for n, (a, b) in enumerate(itertools.pairwise(ids), 1)]


ONE_CALL = model_calls(("first", "one"), output="{{ first.output }}")


async def slow_run(client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
                   headers: Headers) -> tuple[str, dict[str, Any]]:
    """A published ``ONE_CALL`` workflow and its run, half a second into a model call
    of 1.5 s."""
    await add_provider(client, admin_headers, stub)
    workflow_id = await publish(client, headers, *ONE_CALL)
    stub.script(Reply("slow", delay_ms=1500))
    run = await start(client, headers, workflow_id)
    await asyncio.sleep(0.5)
    return workflow_id, run


async def waiting_run(client: httpx.AsyncClient, headers: Headers) -> str:
    """The id of a run of a new ``approval_graph`` workflow, waiting for its decision."""
    workflow_id = await publish(client, headers, *approval_graph())
    return str((await start(client, headers, workflow_id, inputs={"doc": "x"}))["id"])


async def records(database: Database, run_id: str, action: str) -> int:
    return int(await scalar(database, "SELECT count(*) FROM audit_logs "
                                      "WHERE resource_id = :r AND action = :a",
                            r=run_id, a=action) or 0)


async def test_two_cancels_of_a_waiting_run_at_once_one_wins_the_other_is_a_409(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    run_id = await waiting_run(client, user[1])
    a, b = await asyncio.gather(client.post(f"{RUNS}/{run_id}/cancel", headers=user[1]),
                                client.post(f"{RUNS}/{run_id}/cancel", headers=user[1]))
    no_5xx(a, b)
    count = await records(database, run_id, "agent.run.cancel")
    assert sorted([a.status_code, b.status_code]) == [200, 409] and count == 1, (
        a.status_code, b.status_code, count)


async def test_an_approval_and_a_cancel_at_once_one_of_them_ends_the_run(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    workflow_id = await publish(client, headers, *approval_graph())
    for _ in range(4):
        run = await start(client, headers, workflow_id, inputs={"doc": "x"})
        approved, cancelled = await asyncio.gather(
            client.post(f"{RUNS}/{run['id']}/approvals/review", headers=headers,
                        json={"approved": True}),
            client.post(f"{RUNS}/{run['id']}/cancel", headers=headers))
        no_5xx(approved, cancelled)
        final = (await client.get(f"{RUNS}/{run['id']}", headers=headers)).json()
        codes = (approved.status_code, cancelled.status_code)
        assert codes in ((200, 409), (409, 200)), (codes, approved.text, cancelled.text)
        if cancelled.status_code == 200:
            assert final["status"] == "cancelled" and final["output"] is None, final
        else:
            assert final["status"] == "completed", final
        assert not [s for s in final["steps"] if s["status"] in ("running", "waiting")], final


async def test_two_decisions_at_once_one_wins_the_other_is_a_409(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    run_id = await waiting_run(client, headers)
    yes, no = await asyncio.gather(
        client.post(f"{RUNS}/{run_id}/approvals/review", headers=headers,
                    json={"approved": True}),
        client.post(f"{RUNS}/{run_id}/approvals/review", headers=headers,
                    json={"approved": False, "comment": "no"}))
    no_5xx(yes, no)
    assert sorted([yes.status_code, no.status_code]) == [200, 409], (yes.text, no.text)
    final = (await client.get(f"{RUNS}/{run_id}", headers=headers)).json()
    ends = [s["node_id"] for s in final["steps"] if s["node_id"] in ("yes", "no")]
    assert len(ends) == 1, final


async def test_two_resumes_of_a_failed_run_at_once_one_wins_the_other_is_a_409(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    workflow_id = await publish(client, headers, *model_calls(
        ("first", "one"), ("second", "two after {{ first.output }}"),
        output="{{ first.output }} + {{ second.output }}"))
    stub.script(Reply("A"), Fail(400, "the prompt is refused"), Reply("B"), Reply("C"))
    run = await start(client, headers, workflow_id)
    failed = await wait_for(client, headers, run["id"])
    assert failed["status"] == "failed", failed
    a, b = await asyncio.gather(client.post(f"{RUNS}/{run['id']}/resume", headers=headers),
                                client.post(f"{RUNS}/{run['id']}/resume", headers=headers))
    no_5xx(a, b)
    assert sorted([a.status_code, b.status_code]) == [200, 409], (a.text, b.text)
    done = await wait_for(client, headers, run["id"])
    assert (done["status"], done["output"]) == ("completed", "A + B"), done
    assert len(stub.requests(path="/v1/chat/completions")) == 3
    assert await records(database, run["id"], "workflow.run.resume") == 1


async def test_a_resume_and_a_cancel_of_a_failed_run_at_once_end_it_once(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """The resume always goes through (a failed run cannot be cancelled: 409); a cancel
    arriving after it cancels the resumed run."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    workflow_id = await publish(client, headers, *ONE_CALL)
    stub.script(Fail(400, "refused"), Reply("B", delay_ms=500), Reply("C"))
    run = await start(client, headers, workflow_id)
    assert (await wait_for(client, headers, run["id"]))["status"] == "failed"
    resumed, cancelled = await asyncio.gather(
        client.post(f"{RUNS}/{run['id']}/resume", headers=headers),
        client.post(f"{RUNS}/{run['id']}/cancel", headers=headers))
    no_5xx(resumed, cancelled)
    assert resumed.status_code == 200, resumed.text
    assert cancelled.status_code in (200, 409), cancelled.text
    final = await wait_for(client, headers, run["id"])
    expected = ("cancelled", None) if cancelled.status_code == 200 else ("completed", "B")
    assert (final["status"], final["output"]) == expected, (cancelled.status_code, final)
    assert not [s for s in final["steps"] if s["status"] in ("running", "pending")], final


async def test_a_workflow_edited_and_published_while_it_runs_the_run_keeps_its_version(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    workflow_id, run = await slow_run(client, admin_headers, stub, headers)
    nodes, edges = model_calls(("other", "two"), output="{{ other.output }}")
    edited, *published = await asyncio.gather(
        client.patch(f"{API}/{workflow_id}", headers=headers,
                     json={"nodes": nodes, "edges": edges}),
        client.post(f"{API}/{workflow_id}/publish", headers=headers),
        client.post(f"{API}/{workflow_id}/publish", headers=headers))
    no_5xx(edited, *published)
    assert edited.status_code == 200, edited.text
    # 409: published before the edit, the draft is unchanged since version 1.
    assert all(p.status_code in (201, 409) for p in published), [p.text for p in published]
    done = await wait_for(client, headers, run["id"])
    assert (done["status"], done["output"]) == ("completed", "slow"), done


async def test_a_workflow_deleted_while_it_runs_takes_its_run_and_leaves_nothing_open(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    workflow_id, run = await slow_run(client, admin_headers, stub, headers)
    deleted = await client.delete(f"{API}/{workflow_id}", headers=headers)
    no_5xx(deleted)
    assert deleted.status_code == 204, deleted.text
    after = await client.get(f"{RUNS}/{run['id']}", headers=headers)
    assert after.status_code == 404, after.text
    assert await until_none(database, (
        "SELECT (SELECT count(*) FROM background_tasks WHERE status IN "
        " ('pending', 'running', 'queued', 'failed', 'stuck')) "
        "+ (SELECT count(*) FROM llm_requests WHERE status IN ('pending', 'running'))")) == 0


async def test_runs_started_while_their_workflow_is_deleted_start_or_find_it_gone(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """Starts racing the deletion of their workflow: each starts (and goes with the
    workflow, 202) or finds it gone (404), never a 5xx.  The run's row locked the
    version and waited for the workflow the deletion held while deleting the version: a
    deadlock, answered 503."""
    _, headers = user
    graph = ([node("s", "start"), node("t", "template", template="hi"),
              node("e", "end", output="{{ t.output }}")],
             [edge("e1", "s", "t"), edge("e2", "t", "e")])
    for _ in range(4):
        workflow_id = await publish(client, headers, *graph)
        *started, deleted = await asyncio.gather(
            *(client.post(f"{API}/{workflow_id}/runs", headers=headers, json={})
              for _ in range(3)),
            client.delete(f"{API}/{workflow_id}", headers=headers))
        assert deleted.status_code == 204, deleted.text
        for answer in started:
            no_5xx(answer)
            assert answer.status_code in (202, 404), (answer.status_code, answer.text)
    assert await scalar(database, "SELECT count(*) FROM workflow_runs") == 0
