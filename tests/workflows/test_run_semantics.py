"""What a run's nodes give and how a failed run goes on: a join inside a loop, a run
stopped by the steps cap, an approval whose message failed, an llm node's max_tokens, a
knowledge node whose document ids are malformed (a graph saved before they were checked)
or whose query renders to nothing visible."""

from __future__ import annotations

import types
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.tasks.worker import Worker
from roost.workflows import execution, nodes
from roost.workflows import jobs as _workflow_jobs  # noqa: F401 - workflows.node, for the worker
from roost.workflows.engine import Node
from tests.agents.conftest import test_settings, user, worker
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.workflows.graphs import edge, node, template_loop
from tests.workflows.test_runs import RUNS, publish, start, wait_for

__all__ = ["test_settings", "user", "worker"]

Headers = dict[str, str]


async def test_a_knowledge_node_with_a_malformed_document_id_fails_at_once() -> None:
    """A malformed id (stored before the save checked them) fails the node: it is no error
    a retry fixes, so the job is not retried five times with backoff first."""
    knowledge = Node("k", "knowledge", {"query": "q", "document_ids": ["0" * 36]})
    env: Any = types.SimpleNamespace(knowledge=object())
    with pytest.raises(nodes.NodeFailed, match="document_ids"):
        await nodes.run_knowledge(env, None, None, knowledge, {})  # type: ignore[arg-type]


@pytest.mark.parametrize("query", ["\u200b\u2060", "{{ blank }}"])
async def test_a_knowledge_query_rendering_only_invisible_characters_fails_the_node(
        query: str) -> None:
    """A query that renders to zero-width characters only is empty: the node fails saying
    so (no error a retry fixes), not the search's own validation error retried five
    times as an unexpected one."""
    knowledge = Node("k", "knowledge", {"query": query})
    env: Any = types.SimpleNamespace(knowledge=object())
    with pytest.raises(nodes.NodeFailed, match="rendered empty"):
        await nodes.run_knowledge(env, None, None, knowledge,  # type: ignore[arg-type]
                                  {"blank": "\ufeff \u200b"})


@pytest.mark.parametrize("inline_budget", [execution.INLINE_STEPS_PER_REQUEST, 1])
async def test_a_join_in_a_loop_lists_only_the_branches_that_arrived_this_round(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
    monkeypatch: pytest.MonkeyPatch, inline_budget: int,
) -> None:
    """Iteration 0 takes branch a, iteration 1 branch b: the second join lists b alone,
    not a's output from the iteration before.  With a budget of 1 inline node per request
    the joins are left to a job, which computes them from what their step recorded."""
    monkeypatch.setattr(execution, "INLINE_STEPS_PER_REQUEST", inline_budget)
    _, headers = user
    graph_nodes = [node("s", "start"), node("lp", "loop", max_iterations=2),
                   node("c", "condition", expression="lp['iteration'] == 0"),
                   node("a", "template", template="A"), node("b", "template", template="B"),
                   node("j", "join"), node("log", "template", template="{{ j.output | tojson }}"),
                   node("e", "end", output="{{ log.output }}")]
    edges = [edge("1", "s", "lp"), edge("2", "lp", "c", "body"), edge("3", "c", "a", "true"),
             edge("4", "c", "b", "false"), edge("5", "a", "j"), edge("6", "b", "j"),
             edge("7", "j", "log"), edge("8", "log", "lp"), edge("9", "lp", "e", "done")]
    workflow_id = await publish(client, headers, graph_nodes, edges)
    run = await wait_for(client, headers, (await start(client, headers, workflow_id))["id"])
    assert run["status"] == "completed", run
    joins = [s["output"]["output"] for s in run["steps"] if s["node_id"] == "j"]
    assert joins == [{"a": "A"}, {"b": "B"}], joins
    assert run["output"] == '{"b": "B"}'


async def test_a_run_failed_at_the_steps_cap_is_not_resumable(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No node failed, so resuming has nothing to run again: a 409 naming why, and the run
    stays failed (it became "completed" with no output, having reached no end)."""
    monkeypatch.setattr(execution, "MAX_STEPS_PER_RUN", 50)
    _, headers = user
    workflow_id = await publish(client, headers, *template_loop(1000, body="body"))
    run = await start(client, headers, workflow_id)
    assert run["status"] == "failed", run["status"]
    resumed = await client.post(f"{RUNS}/{run['id']}/resume", headers=headers)
    assert resumed.status_code == 409, resumed.text
    assert "no node to run again" in resumed.json()["detail"]
    assert "limit of 50 steps" in resumed.json()["detail"]
    got = (await client.get(f"{RUNS}/{run['id']}", headers=headers)).json()
    assert got["status"] == "failed" and "limit of 50 steps" in got["error_message"], got


async def test_resuming_a_run_whose_approval_message_failed_gives_the_real_reason(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """The resumed approval renders its message again (an approval is no node computed
    inline): still failing, the run fails naming the template's error."""
    _, headers = user
    graph_nodes = [node("s", "start"), node("ok", "approval", message="{{ ghost }}"),
                   node("e", "end", output="x")]
    workflow_id = await publish(client, headers, graph_nodes,
                                [edge("1", "s", "ok"), edge("2", "ok", "e", "approved")])
    run = await start(client, headers, workflow_id)
    assert run["status"] == "failed" and "ghost" in run["error_message"], run
    resumed = await client.post(f"{RUNS}/{run['id']}/resume", headers=headers)
    assert resumed.status_code == 200, resumed.text
    done = await wait_for(client, headers, run["id"], within=20)
    assert done["status"] == "failed", done["status"]
    assert "'ok'" in done["error_message"] and "ghost" in done["error_message"], done
    assert [s["status"] for s in done["steps"] if s["node_id"] == "ok"] == ["failed"]


async def test_a_resumed_approval_waits_again_for_its_decision(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
    database: Database,
) -> None:
    """An approval step that failed (here: marked so in SQL, with its run) waits again on
    resume, its message rendered, and a decision completes the run."""
    _, headers = user
    graph_nodes = [node("s", "start"), node("ok", "approval", message="Ship {{ 1 + 1 }}?"),
                   node("e", "end", output="shipped")]
    workflow_id = await publish(client, headers, graph_nodes,
                                [edge("1", "s", "ok"), edge("2", "ok", "e", "approved")])
    run = await start(client, headers, workflow_id)
    assert run["waiting_for"] == ["ok"], run
    async with database.transaction() as session:
        await session.execute(text("UPDATE run_steps SET status = 'failed', error = 'boom' "
                                   "WHERE run_id = :r AND node_id = 'ok'"), {"r": run["id"]})
        await session.execute(text("UPDATE runs SET status = 'failed', error_message = 'boom' "
                                   "WHERE id = :r"), {"r": run["id"]})
    resumed = await client.post(f"{RUNS}/{run['id']}/resume", headers=headers)
    assert resumed.status_code == 200, resumed.text
    waiting = await wait_for(client, headers, run["id"], within=20,
                             until=lambda r: r["waiting_for"] == ["ok"] or r["status"] != "running")
    assert waiting["waiting_for"] == ["ok"], (waiting["status"], waiting["error_message"])
    (step,) = [s for s in waiting["steps"] if s["node_id"] == "ok"]
    assert step["input"]["message"] == "Ship 2?" and step["error"] is None, step
    decided = await client.post(f"{RUNS}/{run['id']}/approvals/ok", headers=headers,
                                json={"approved": True})
    assert decided.status_code == 200, decided.text
    done = await wait_for(client, headers, run["id"], within=20)
    assert (done["status"], done["output"]) == ("completed", "shipped"), done


async def test_an_llm_nodes_max_tokens_reaches_the_model(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """The max_tokens saved (at most MAX_LLM_OUTPUT_TOKENS, checked at save) is what the
    model is asked for."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    graph_nodes = [node("s", "start"),
                   node("l", "llm", prompt="p", model="stub-model", max_tokens=3000),
                   node("e", "end", output="{{ l.output }}")]
    workflow_id = await publish(client, headers, graph_nodes,
                                [edge("1", "s", "l"), edge("2", "l", "e")])
    stub.script(Reply("ok"))
    run = await start(client, headers, workflow_id)
    done = await wait_for(client, headers, run["id"])
    assert done["status"] == "completed", done
    sent = stub.requests(path="/v1/chat/completions")[-1].body
    assert sent.get("max_tokens") == 3000, sent.get("max_tokens")
