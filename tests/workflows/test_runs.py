"""Workflow runs through the API and a real worker, the stub provider scripted: a linear
run pinned to its version, a ten-node graph with a parallel branch and a condition, loops,
approvals (decided, rejected, timed out), resume from a failed node, cancel, bad input
and another tenant."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text

from roost.app import create_app
from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.tasks.worker import Worker
from roost.workflows import execution
from roost.workflows import jobs as _workflow_jobs  # noqa: F401 - workflows.node, for the worker
from roost.workflows import runs as wf_runs
from tests.agents.conftest import (
    make_agent,
    other_user,
    running_worker,
    test_settings,
    user,
    worker,
)
from tests.billing.metered import subscribe
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Fail, Reply
from tests.support.server import in_process
from tests.support.sql import fetch, run_and_usage, scalar
from tests.workflows.graphs import edge, node, template_loop

__all__ = ["other_user", "test_settings", "user", "worker"]

Headers = dict[str, str]
API = "/api/v1/workflows"
RUNS = "/api/v1/workflow-runs"
TERMINAL = ("completed", "failed", "cancelled")


async def publish(client: httpx.AsyncClient, headers: Headers, nodes: list[Any],
                  edges: list[Any], name: str = "Flow") -> str:
    created = await client.post(API, headers=headers,
                                json={"name": name, "nodes": nodes, "edges": edges})
    assert created.status_code == 201, created.text
    workflow_id: str = created.json()["id"]
    published = await client.post(f"{API}/{workflow_id}/publish", headers=headers)
    assert published.status_code == 201, published.text
    return workflow_id


async def start(client: httpx.AsyncClient, headers: Headers, workflow_id: str,
                **body: Any) -> dict[str, Any]:
    answer = await client.post(f"{API}/{workflow_id}/runs", headers=headers, json=body)
    assert answer.status_code == 202, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def wait_for(client: httpx.AsyncClient, headers: Headers, run_id: str,
                   until: Any = None, within: float = 45) -> dict[str, Any]:
    """The run once ``until(run)`` holds (default: it is finished)."""
    check = until or (lambda r: r["status"] in TERMINAL)
    deadline = asyncio.get_running_loop().time() + within
    while True:
        run: dict[str, Any] = (await client.get(f"{RUNS}/{run_id}", headers=headers)).json()
        if check(run):
            return run
        assert asyncio.get_running_loop().time() < deadline, run
        await asyncio.sleep(0.1)


async def node_runs(database: Database, run_id: str) -> dict[str, list[str]]:
    """Each node's step statuses in order, straight from SQL."""
    rows = await fetch(database, "SELECT node_id, status FROM run_steps WHERE run_id = :r "
                                 "ORDER BY step_number", r=run_id)
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row.node_id, []).append(row.status)
    return found


def linear() -> tuple[list[Any], list[Any]]:
    return ([node("start", "start", inputs=["question"]),
             node("ask", "llm", prompt="Answer briefly: {{ question }}", model="stub-model"),
             node("shout", "template", template="{{ ask.output | upper }}!"),
             node("done", "end", output="{{ shout.output }}")],
            [edge("e1", "start", "ask"), edge("e2", "ask", "shout"), edge("e3", "shout", "done")])


async def test_a_run_executes_its_pinned_version(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    workflow_id = await publish(client, headers, *linear())
    stub.script(Reply("forty-two"))
    run = await start(client, headers, workflow_id, inputs={"question": "meaning of life?"})
    assert run["version"] == 1 and run["status"] == "running"
    # A new version published meanwhile does not change the running one.
    nodes, _edges = linear()
    nodes[2]["data"]["template"] = "v2 {{ ask.output }}"
    assert (await client.patch(f"{API}/{workflow_id}", headers=headers,
                               json={"nodes": nodes})).status_code == 200
    assert (await client.post(f"{API}/{workflow_id}/publish", headers=headers)).status_code == 201

    done = await wait_for(client, headers, run["id"])
    assert (done["status"], done["output"]) == ("completed", "FORTY-TWO!"), done
    assert done["outputs"] == {"done": "FORTY-TWO!"} and done["input"] == {
        "question": "meaning of life?"}
    assert [(s["node_id"], s["status"]) for s in done["steps"]] == [
        ("start", "completed"), ("ask", "completed"), ("shout", "completed"),
        ("done", "completed")]
    prompt = stub.requests(path="/v1/chat/completions")[-1].body["messages"][-1]["content"]
    assert prompt == "Answer briefly: meaning of life?"
    # The run is a run: /runs lists it, its steps and its LLM call are linked to it.
    generic = (await client.get(f"/api/v1/runs/{run['id']}", headers=headers)).json()
    assert generic["kind"] == "workflow" and generic["status"] == "completed"
    asked = next(s for s in done["steps"] if s["node_id"] == "ask")["output"]
    assert await scalar(database, "SELECT request_type FROM llm_requests WHERE id = :i",
                        i=asked["llm_request_id"]) == "workflow_node"
    listed = (await client.get(f"{API}/{workflow_id}/runs", headers=headers)).json()["items"]
    assert [r["id"] for r in listed] == [run["id"]]

    again = await start(client, headers, workflow_id, inputs={"question": "again?"}, version=2)
    stub.script(Reply("yes"))
    assert (await wait_for(client, headers, again["id"]))["output"] == "v2 yes"


async def test_a_model_answer_with_a_nul_character_is_stored_without_it(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """An llm node answering with U+0000 (which jsonb cannot store) completes, the
    character dropped; the model is asked once, not once per job retry, and the run does
    not stay `running`."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(*[Reply("half\x00half") for _ in range(3)])
    nodes, edges = linear()
    workflow_id = await publish(client, headers, nodes, edges)
    run = await start(client, headers, workflow_id, inputs={"question": "q"})
    done = await wait_for(client, headers, run["id"])
    assert done["status"] == "completed", done
    assert done["output"] == "HALFHALF!", done["output"]
    assert len(stub.requests(path="/v1/chat/completions")) == 1


def ten_nodes() -> tuple[list[Any], list[Any]]:
    """start -> draft (llm) -> fan (parallel) -> [tone (llm), stamp (tool), size
    (template)] -> merge (join all) -> check (condition) -> true: ok (end) /
    false: redo (template) -> bad (end)."""
    return ([node("start", "start", inputs=["topic"]),
             node("draft", "llm", prompt="Write about {{ topic }}"),
             node("fan", "parallel"),
             node("tone", "llm", prompt="Tone of: {{ draft.output }}"),
             node("stamp", "tool", tool="current_time", arguments={"timezone": "UTC"}),
             node("size", "template", template="{{ draft.output | length }}"),
             node("merge", "join"),
             node("check", "condition", expression="tone['output'] == 'friendly'"),
             node("ok", "end", output="{{ draft.output }} ({{ tone.output }}, {{ size.output }})"),
             node("redo", "template", template="rewrite"),
             node("bad", "end", output="{{ redo.output }}")],
            [edge("a", "start", "draft"), edge("b", "draft", "fan"),
             edge("c1", "fan", "tone"), edge("c2", "fan", "stamp"), edge("c3", "fan", "size"),
             edge("d1", "tone", "merge"), edge("d2", "stamp", "merge"),
             edge("d3", "size", "merge"), edge("f", "merge", "check"),
             edge("g1", "check", "ok", "true"), edge("g2", "check", "redo", "false"),
             edge("h", "redo", "bad")])


async def test_a_graph_with_a_parallel_branch_and_a_condition(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    workflow_id = await publish(client, headers, *ten_nodes())
    stub.script(Reply("Hello world"), Reply("friendly"))
    run = await start(client, headers, workflow_id, inputs={"topic": "greetings"})
    done = await wait_for(client, headers, run["id"])
    assert done["status"] == "completed", done
    assert done["output"] == "Hello world (friendly, 11)"
    ran = await node_runs(database, run["id"])
    assert ran == {n: ["completed"] for n in
                   ("start", "draft", "fan", "tone", "stamp", "size", "merge", "check", "ok")}
    merge = next(s for s in done["steps"] if s["node_id"] == "merge")
    assert set(merge["output"]["output"]) == {"tone", "stamp", "size"}
    # Each branch's node started only after the fan-out committed; the join after all.
    by_node = {s["node_id"]: s for s in done["steps"]}
    assert all(by_node[b]["step_number"] > by_node["fan"]["step_number"]
               for b in ("tone", "stamp", "size"))
    assert by_node["merge"]["step_number"] > max(by_node[b]["step_number"]
                                                 for b in ("tone", "stamp", "size"))
    assert await scalar(database, "SELECT count(*) FROM tool_runs WHERE run_id = :r",
                        r=run["id"]) == 1


def brief() -> tuple[list[Any], list[Any]]:
    """The README's "Brief": two llm nodes in parallel, joined."""
    return ([node("start", "start", inputs=["topic", "tokens_in"]), node("fan", "parallel"),
             node("facts", "llm", prompt="Three facts about {{ topic }}"),
             node("risks", "llm", prompt="Two risks of {{ topic }}"),
             node("both", "join"),
             node("done", "end", output="{{ facts.output }} / {{ risks.output }}")],
            [edge("a", "start", "fan"), edge("b", "fan", "facts"), edge("c", "fan", "risks"),
             edge("d", "facts", "both"), edge("e", "risks", "both"),
             edge("f", "both", "done")])


async def test_a_workflow_run_counts_the_tokens_and_cost_of_its_llm_nodes(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A workflow run is a run: `GET /api/v1/runs/{id}` gives the tokens and cost (credits)
    its llm nodes spent, as their outputs and usage records say; a start input named
    `tokens_in` counts for nothing.  A run that fails counts the nodes that answered."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    workflow_id = await publish(client, headers, *brief(), name="Brief")
    run = await start(client, headers, workflow_id,
                      inputs={"topic": "heat pumps", "tokens_in": "1000000"})
    done = await wait_for(client, headers, run["id"])
    assert done["status"] == "completed", done
    outputs = [s["output"] for s in done["steps"] if s["node_id"] in ("facts", "risks")]
    spent_in, spent_out = (sum(o["tokens_in"] for o in outputs),
                           sum(o["tokens_out"] for o in outputs))
    assert spent_in > 0 and spent_out > 0 and all(o["cost"] > 0 for o in outputs), outputs
    generic = (await client.get(f"/api/v1/runs/{run['id']}", headers=headers)).json()
    assert (generic["tokens_in"], generic["tokens_out"]) == (spent_in, spent_out), generic
    row, usage = await run_and_usage(database, run["id"])
    assert (row.tokens_in, row.tokens_out, row.cost) == (usage.tin, usage.tout, usage.credits)
    assert float(generic["cost"]) == sum(o["cost"] for o in outputs) > 0, generic

    nodes = [node("s", "start"), node("first", "llm", prompt="one"),
             node("second", "llm", prompt="two after {{ first.output }}"),
             node("e", "end", output="{{ second.output }}")]
    edges = [edge("1", "s", "first"), edge("2", "first", "second"), edge("3", "second", "e")]
    stub.script(Reply("A"), Fail(400, "the prompt is refused"))
    failing = await start(client, headers, await publish(client, headers, nodes, edges))
    failed = await wait_for(client, headers, failing["id"])
    assert failed["status"] == "failed", failed
    first = next(s for s in failed["steps"] if s["node_id"] == "first")["output"]
    row, usage = await run_and_usage(database, failing["id"])
    assert (row.tokens_in, row.tokens_out) == (first["tokens_in"], first["tokens_out"]), row
    assert (row.tokens_in, row.tokens_out, row.cost) == (usage.tin, usage.tout, usage.credits)
    assert row.cost > 0, row


async def test_a_failed_runs_totals_count_a_branch_that_finished_after_the_failure(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """Two parallel branches: an llm node answering slowly, a tool node failing at once.
    The run fails; the slow branch finishes its node and is billed under the run, so the
    failed run's tokens and cost count it too (the sums of its steps, as the docs say)."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("slow answer", delay_ms=2500))
    nodes = [node("start", "start"), node("fan", "parallel"),
             node("slow", "llm", prompt="Think hard"),
             node("bad", "tool", tool="no_such_tool_anywhere", arguments={}),
             node("both", "join"), node("done", "end", output="{{ slow.output }}")]
    edges = [edge("a", "start", "fan"), edge("b", "fan", "slow"), edge("c", "fan", "bad"),
             edge("d", "slow", "both"), edge("e", "bad", "both"), edge("f", "both", "done")]
    run = await start(client, headers, await publish(client, headers, nodes, edges))
    done = await wait_for(client, headers, run["id"], lambda r: r["status"] in TERMINAL and any(
        s["node_id"] == "slow" and s["status"] not in ("pending", "running")
        for s in r["steps"]))
    assert done["status"] == "failed", done
    slow = next(s for s in done["steps"] if s["node_id"] == "slow")
    assert slow["status"] == "completed", done  # the branch finished after the failure
    row, usage = await run_and_usage(database, run["id"])
    assert usage.credits > 0 and slow["output"]["cost"] > 0, (usage, slow)
    assert (row.tokens_in, row.tokens_out, row.cost) == (usage.tin, usage.tout,
                                                         usage.credits), (row, usage)


async def test_a_workflow_run_is_not_one_of_the_plans_agent_runs_per_day(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """`runs_per_day` counts agent runs: on a plan allowing one a day, a workflow with one
    agent node runs it (the workflow's own run is not an agent run)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    await subscribe(client, admin_headers, user_id, 1000, runs_per_day=1)
    agent = await make_agent(database, user_id)
    stub.script(Reply("Done."))
    nodes = [node("start", "start"),
             node("helper", "agent", agent=agent.slug, input="Say done"),
             node("done", "end", output="{{ helper.output }}")]
    edges = [edge("a", "start", "helper"), edge("b", "helper", "done")]
    run = await start(client, headers, await publish(client, headers, nodes, edges))
    done = await wait_for(client, headers, run["id"])
    assert done["status"] == "completed", done.get("error_message")


async def test_the_false_branch_and_a_join_after_an_untaken_branch(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    nodes = [node("s", "start", inputs=["n"]),
             node("big", "condition", expression="n > 10"),
             node("yes", "template", template="big"), node("no", "template", template="small"),
             node("j", "join", mode="all"),
             node("e", "end", output="{{ j.output }}")]
    edges = [edge("1", "s", "big"), edge("2", "big", "yes", "true"),
             edge("3", "big", "no", "false"), edge("4", "yes", "j"), edge("5", "no", "j"),
             edge("6", "j", "e")]
    workflow_id = await publish(client, headers, nodes, edges)
    run = await start(client, headers, workflow_id, inputs={"n": 3})
    # Nothing calls out: the whole run happened in the request that started it.
    assert run["status"] == "completed", run
    assert run["outputs"] == {"e": "{'no': 'small'}"}
    assert "yes" not in await node_runs(database, run["id"])


async def test_a_loop_runs_its_body_until_its_condition_fails(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    _, headers = user
    nodes = [node("s", "start"),
             node("again", "loop", max_iterations=10, condition="iteration < 3"),
             node("body", "template", template="pass {{ again.output }}"),
             node("e", "end", output="{{ body.output }} after {{ again.output }}")]
    edges = [edge("1", "s", "again"), edge("2", "again", "body", "body"),
             edge("3", "body", "again"), edge("4", "again", "e", "done")]
    workflow_id = await publish(client, headers, nodes, edges)
    run = await start(client, headers, workflow_id)
    assert (run["status"], run["output"]) == ("completed", "pass 2 after 3"), run
    ran = await node_runs(database, run["id"])
    assert (len(ran["again"]), len(ran["body"]), len(ran["e"])) == (4, 3, 1)
    iterations = await fetch(database, "SELECT iteration FROM run_steps WHERE run_id = :r "
                                       "AND node_id = 'body' ORDER BY step_number", r=run["id"])
    assert [r.iteration for r in iterations] == [0, 1, 2]


async def test_a_loop_whose_body_returns_straight_to_it_stops_at_max_iterations(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loop whose ``body`` edge goes back to itself iterates max_iterations times and the
    run completes (it used to spin in the POST until the steps cap, then answer 500)."""
    monkeypatch.setattr(execution, "MAX_STEPS_PER_RUN", 300)  # a regression fails fast
    _, headers = user
    nodes = [node("s", "start"), node("again", "loop", max_iterations=3),
             node("e", "end", output="x")]
    edges = [edge("1", "s", "again"), edge("2", "again", "again", "body"),
             edge("3", "again", "e", "done")]
    workflow_id = await publish(client, headers, nodes, edges)
    run = await start(client, headers, workflow_id)
    assert run["status"] == "completed", run
    ran = await node_runs(database, run["id"])
    assert len(ran["again"]) == 4 and len(ran["e"]) == 1, ran


async def test_a_condition_whose_both_outcomes_return_to_a_loop_iterates_max_times(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A loop (max 3) whose body is a condition with true and false edges both back to the
    loop runs 3 iterations and completes once (not one loop activation per edge)."""
    _, headers = user
    nodes = [node("start", "start"), node("lp", "loop", max_iterations=3),
             node("c", "condition", expression="True"),
             node("done", "end", output="{{ lp.iteration }}")]
    edges = [edge("e1", "start", "lp"), edge("e2", "lp", "c", "body"),
             edge("e3", "c", "lp", "true"), edge("e5", "c", "lp", "false"),
             edge("e4", "lp", "done", "done")]
    workflow_id = await publish(client, headers, nodes, edges)
    run = await start(client, headers, workflow_id)
    done = await wait_for(client, headers, run["id"], within=60)
    counts: dict[str, int] = {}
    for step in done["steps"]:
        counts[step["node_id"]] = counts.get(step["node_id"], 0) + 1
    assert (done["status"], done["outputs"], counts) == (
        "completed", {"done": "3"}, {"start": 1, "lp": 4, "c": 3, "done": 1}), (
        done["status"], done["outputs"], counts)


async def test_an_approval_whose_both_outcomes_return_to_a_loop_waits_once_per_iteration(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """An approval in a loop body, approved and rejected both going back to the loop: one
    decision starts one next iteration (one approval waiting), not two."""
    _, headers = user
    nodes = [node("start", "start"), node("lp", "loop", max_iterations=3),
             node("ok", "approval", message="again?"), node("done", "end", output="y")]
    edges = [edge("e1", "start", "lp"), edge("e2", "lp", "ok", "body"),
             edge("e3", "ok", "lp", "approved"), edge("e5", "ok", "lp", "rejected"),
             edge("e4", "lp", "done", "done")]
    workflow_id = await publish(client, headers, nodes, edges)
    run = await start(client, headers, workflow_id)
    for i in range(3):
        got = await wait_for(client, headers, run["id"],
                             lambda r: bool(r["waiting_for"]) or r["status"] in TERMINAL,
                             within=10)
        assert got["waiting_for"] == ["ok"], (i, got["status"], got["waiting_for"])
        decided = await client.post(f"{RUNS}/{run['id']}/approvals/ok", headers=headers,
                                    json={"approved": i % 2 == 0})
        assert decided.status_code == 200, decided.text
    done = await wait_for(client, headers, run["id"], within=10)
    assert done["status"] == "completed", done["status"]


async def test_a_run_reaching_the_steps_cap_fails_naming_it(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loops of inline nodes that reach MAX_STEPS_PER_RUN give a failed run naming the
    cap, not a 500."""
    monkeypatch.setattr(execution, "MAX_STEPS_PER_RUN", 50)
    _, headers = user
    workflow_id = await publish(client, headers, *template_loop(1000, body="body"))
    run = await start(client, headers, workflow_id)
    assert run["status"] == "failed", run
    assert "limit of 50 steps" in run["error_message"], run["error_message"]


def _big_template_loop(iterations: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """template_loop whose body renders 1,000 characters each time."""
    nodes, edges = template_loop(iterations)
    for item in nodes:
        if item["id"] == "b":
            item["data"]["template"] = "{{ 'x' * 1000 }}"
    return nodes, edges


async def test_a_run_reaching_the_stored_output_cap_fails_naming_it(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loop keeping a large output would store up to 100,000 of them: the run fails
    naming the cap on what one run may store, with its steps under it."""
    monkeypatch.setattr(execution, "MAX_STORED_CHARS_PER_RUN", 20_000)
    _, headers = user
    workflow_id = await publish(client, headers, *_big_template_loop(1000))
    run = await start(client, headers, workflow_id)
    assert run["status"] == "failed", run["status"]
    assert "characters of stored output" in run["error_message"], run["error_message"]
    stored = await fetch(database, "SELECT count(*) AS n, sum(length(output::text)) AS chars "
                                   "FROM run_steps WHERE run_id = :r", r=run["id"])
    assert 10 < stored[0].n < 60 and stored[0].chars <= 25_000, stored


async def test_the_stored_output_cap_counts_across_the_jobs_of_a_run(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Computed by jobs a few nodes at a time, the run still stops at the cap: what it
    stored is counted with the run, not per transaction."""
    monkeypatch.setattr(execution, "MAX_STORED_CHARS_PER_RUN", 20_000)
    monkeypatch.setattr(execution, "INLINE_SECONDS_PER_REQUEST", 0.0)
    monkeypatch.setattr(execution, "INLINE_STEPS_PER_REQUEST", 3)
    _, headers = user
    workflow_id = await publish(client, headers, *_big_template_loop(1000))
    run = await start(client, headers, workflow_id)
    done = await wait_for(client, headers, run["id"], within=120)
    assert done["status"] == "failed", done["status"]
    assert "characters of stored output" in done["error_message"], done["error_message"]
    assert len(done["steps"]) < 60, len(done["steps"])


async def test_starting_a_run_does_not_execute_a_whole_loop_inside_the_request(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POST /runs answers 202 with the run still running once the request's time budget
    is spent (here none at all, so the test does not depend on this machine's speed): the
    loop's template nodes run on the queue (a job computes the inline nodes left)."""
    monkeypatch.setattr(execution, "INLINE_SECONDS_PER_REQUEST", 0.0)
    _, headers = user
    workflow_id = await publish(client, headers, *template_loop(30))
    run = await start(client, headers, workflow_id)
    rendered = sum(1 for s in run["steps"] if s["node_id"] == "b")
    assert run["status"] == "running" and rendered < 30, (run["status"], rendered)
    done = await wait_for(client, headers, run["id"], within=120)
    counts: dict[str, int] = {}
    for step in done["steps"]:
        counts[step["node_id"]] = counts.get(step["node_id"], 0) + 1
    assert (done["status"], counts) == (
        "completed", {"start": 1, "lp": 31, "b": 30, "done": 1}), (done["status"], counts)


async def test_a_request_computes_a_bounded_number_of_inline_nodes(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starting a run and deciding an approval compute at most INLINE_STEPS_PER_REQUEST
    inline nodes; the next one is stored pending with a job, which finishes the run."""
    monkeypatch.setattr(execution, "INLINE_STEPS_PER_REQUEST", 5)
    _, headers = user
    nodes = [node("start", "start"), node("lp", "loop", max_iterations=10),
             node("b", "template", template="x"), node("ok", "approval", message="go?"),
             node("lp2", "loop", max_iterations=10), node("b2", "template", template="x"),
             node("done", "end", output="y")]
    edges = [edge("e1", "start", "lp"), edge("e2", "lp", "b", "body"), edge("e3", "b", "lp"),
             edge("e4", "lp", "ok", "done"), edge("e5", "ok", "lp2", "approved"),
             edge("e6", "lp2", "b2", "body"), edge("e7", "b2", "lp2"),
             edge("e8", "lp2", "done", "done")]
    workflow_id = await publish(client, headers, nodes, edges)
    run = await start(client, headers, workflow_id)
    assert run["status"] == "running", run
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [
        ("start", "completed"), ("lp", "completed"), ("b", "completed"),
        ("lp", "completed"), ("b", "completed"), ("lp", "pending")], run["steps"]
    waiting = await wait_for(client, headers, run["id"],
                             lambda r: bool(r["waiting_for"]) or r["status"] in TERMINAL)
    assert waiting["waiting_for"] == ["ok"], waiting
    decided = await client.post(f"{RUNS}/{run['id']}/approvals/ok", headers=headers,
                                json={"approved": True})
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "running", decided.json()
    done = await wait_for(client, headers, run["id"])
    counts: dict[str, int] = {}
    for step in done["steps"]:
        counts[step["node_id"]] = counts.get(step["node_id"], 0) + 1
    assert (done["status"], counts) == ("completed", {
        "start": 1, "lp": 11, "b": 10, "ok": 1, "lp2": 11, "b2": 10, "done": 1}), (
        done["status"], counts)


def approval_graph(**review: Any) -> tuple[list[Any], list[Any]]:
    return ([node("s", "start", inputs=["doc"]),
             node("review", "approval", message="Publish {{ doc }}?", **review),
             node("yes", "end", output="published {{ doc }}"),
             node("no", "end", output="kept {{ doc }}: {{ review.comment }}")],
            [edge("1", "s", "review"), edge("2", "review", "yes", "approved"),
             edge("3", "review", "no", "rejected")])


async def test_an_approval_waits_for_its_decision(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    _, stranger = other_user
    workflow_id = await publish(client, headers, *approval_graph())
    run = await start(client, headers, workflow_id, inputs={"doc": "the plan"})
    assert (run["status"], run["waiting_for"]) == ("running", ["review"]), run
    waiting = next(s for s in run["steps"] if s["node_id"] == "review")
    assert (waiting["status"], waiting["input"]["message"]) == ("waiting", "Publish the plan?")

    url = f"{RUNS}/{run['id']}/approvals/review"
    assert (await client.post(url, headers=stranger, json={"approved": True})).status_code == 404
    unknown = await client.post(f"{RUNS}/{run['id']}/approvals/nope", headers=headers,
                                json={"approved": True})
    assert unknown.status_code == 404
    assert (await client.post(url, headers=headers, json={"approved": "maybe"})).status_code == 422
    decided = await client.post(url, headers=headers, json={"approved": True, "comment": "go"})
    assert decided.status_code == 200, decided.text
    assert (decided.json()["status"], decided.json()["output"]) == ("completed",
                                                                    "published the plan")
    again = await client.post(url, headers=headers, json={"approved": False})
    assert again.status_code == 409 and again.json()["type"].endswith("not-waiting")

    rejected = await start(client, headers, workflow_id, inputs={"doc": "draft 2"})
    answer = await client.post(f"{RUNS}/{rejected['id']}/approvals/review", headers=headers,
                               json={"approved": False, "comment": "too early"})
    assert answer.json()["output"] == "kept draft 2: too early"
    assert await scalar(database, "SELECT count(*) FROM audit_logs WHERE action = "
                                  "'workflow.run.reject' AND resource_id = :r",
                        r=rejected["id"]) == 1


def approval_with_id(node_id: str) -> tuple[list[Any], list[Any]]:
    nodes = [node("s", "start"), node(node_id, "approval", message="ok?"),
             node("yes", "end", output="yes"), node("no", "end", output="no")]
    edges = [edge("1", "s", node_id), edge("2", node_id, "yes", "approved"),
             edge("3", node_id, "no", "rejected")]
    return nodes, edges


@pytest.mark.parametrize("node_id", ["review/1", "a/b/c"])
async def test_an_approval_whose_node_id_holds_a_slash_is_decided(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], node_id: str,
) -> None:
    """A node id may be any 1-255 characters: the console sends it URL-encoded
    (review%2F1), which the server decodes before routing (this was a 404, the run stuck
    waiting)."""
    _, headers = user
    workflow_id = await publish(client, headers, *approval_with_id(node_id))
    run = await start(client, headers, workflow_id)
    assert run["waiting_for"] == [node_id], run
    url = f"{RUNS}/{run['id']}/approvals/{quote(node_id, safe='')}"
    answer = await client.post(url, headers=headers, json={"approved": True})
    assert answer.status_code == 200, (answer.status_code, answer.text[:300])
    assert answer.json()["output"] == "yes"


@pytest.mark.parametrize("timeout_s", [1, 1.0])
async def test_an_approval_nobody_decides_is_rejected_at_its_timeout(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
    database: Database, timeout_s: float,
) -> None:
    """1.0 too: JSON Schema counts it as an integer, so the graph saves with it.  The
    rejection is in the audit as one through the API is (it was not recorded)."""
    _, headers = user
    workflow_id = await publish(client, headers, *approval_graph(timeout_s=timeout_s))
    run = await start(client, headers, workflow_id, inputs={"doc": "memo"})
    done = await wait_for(client, headers, run["id"])
    assert done["output"] == "kept memo: no decision before the timeout", done
    audited = await fetch(database, "SELECT user_id, metadata FROM audit_logs "
                          "WHERE action = 'workflow.run.reject' AND resource_id = :r",
                          r=run["id"])
    assert [(row[0], row[1]["node_id"], row[1]["timeout"]) for row in audited] == [
        (None, "review", True)], audited


async def test_an_approval_timeout_holds_after_its_run_failed_and_resumed(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A parallel branch fails the run while an approval (timeout 2 s) waits: its timeout
    job runs on the failed run and does nothing. Once resumed, the approval waited for
    ever (no timeout job was left); resume queues one for the time it has left."""
    _, h = user
    await add_provider(client, admin_headers, stub)
    nodes = [node("s", "start"), node("p", "parallel"),
             node("ok", "approval", message="ok?", timeout_s=2),
             node("call", "llm", prompt="hi"),
             node("j", "join"), node("e", "end", output="{{ ok.comment }}")]
    edges = [edge("1", "s", "p"), edge("2", "p", "ok"), edge("3", "p", "call"),
             edge("4", "ok", "j", "approved"), edge("5", "ok", "j", "rejected"),
             edge("6", "call", "j"), edge("7", "j", "e")]
    workflow_id = await publish(client, h, nodes, edges)
    stub.script(Fail(400, "refused"), Reply("fine"))
    run = await start(client, h, workflow_id)
    failed = await wait_for(client, h, run["id"], within=20)
    assert failed["status"] == "failed", failed
    await asyncio.sleep(3)  # the timeout job comes due on the failed run
    resumed = await client.post(f"{RUNS}/{run['id']}/resume", headers=h)
    assert resumed.status_code == 200, resumed.text
    done = await wait_for(client, h, run["id"], within=30)
    assert (done["status"], done["waiting_for"], done["output"]) == (
        "completed", [], "no decision before the timeout"), done


@pytest.mark.parametrize("timeout_s", [365 * 24 * 3600 + 1, 10**12, 10**20])
async def test_an_approval_timeout_beyond_a_year_is_refused_at_save(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], timeout_s: int,
) -> None:
    """A timeout past what a date holds is a 422 at save, not a workflow that saves and
    publishes but answers 422/500 at every run."""
    _, headers = user
    nodes, edges = approval_graph(timeout_s=timeout_s)
    created = await client.post(API, headers=headers,
                                json={"name": "slow", "nodes": nodes, "edges": edges})
    assert created.status_code == 422, created.text
    assert "timeout_s" in created.text
    year = approval_graph(timeout_s=365 * 24 * 3600)
    workflow_id = await publish(client, headers, *year)
    run = await start(client, headers, workflow_id, inputs={"doc": "x"})
    assert run["waiting_for"] == ["review"], run


@pytest.mark.parametrize("template", ["{{ q | dictsort }}", "{{ q | truncate(1) }}"])
async def test_a_template_misusing_a_filter_fails_its_node_when_the_run_starts(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], template: str,
) -> None:
    """dictsort of a string (AttributeError), truncate below its leeway (an assert): the
    run starts (202) and fails naming the node, as for any template error, not a 500."""
    _, headers = user
    workflow_id = await publish(
        client, headers,
        [node("s", "start", inputs=["q"]), node("t", "template", template=template),
         node("e", "end", output="{{ t.output }}")],
        [edge("1", "s", "t"), edge("2", "t", "e")])
    run = await start(client, headers, workflow_id, inputs={"q": "abc"})
    assert run["status"] == "failed" and "'t'" in run["error_message"], run
    assert "template error" in run["error_message"]


async def test_an_approval_message_misusing_a_filter_fails_the_run(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    nodes, edges = approval_graph()
    nodes[1]["data"]["message"] = "{{ doc | dictsort }}"
    workflow_id = await publish(client, headers, nodes, edges)
    run = await start(client, headers, workflow_id, inputs={"doc": "x"})
    assert run["status"] == "failed" and "'review'" in run["error_message"], run


async def test_approvers_limit_who_may_decide(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """Someone the approvers do not name is refused as forbidden (403; it was the 409 of
    a run that does not wait there, while the run waited there)."""
    user_id, headers = user
    username = await scalar(database, "SELECT username FROM users WHERE id = :u", u=user_id)
    workflow_id = await publish(client, headers, *approval_graph(approvers=["someone-else"]))
    run = await start(client, headers, workflow_id, inputs={"doc": "x"})
    refused = await client.post(f"{RUNS}/{run['id']}/approvals/review", headers=headers,
                                json={"approved": True})
    assert refused.status_code == 403 and "approvers" in refused.json()["detail"]
    mine = await publish(client, headers, *approval_graph(approvers=[username]), name="Mine")
    run = await start(client, headers, mine, inputs={"doc": "x"})
    allowed = await client.post(f"{RUNS}/{run['id']}/approvals/review", headers=headers,
                                json={"approved": True})
    assert allowed.status_code == 200 and allowed.json()["status"] == "completed"


def _spelled(spelling: str, user_id: uuid.UUID, username: str) -> str:
    return {"hex": user_id.hex, "braces": "{" + str(user_id) + "}", "urn": user_id.urn,
            "upper": str(user_id).upper(), "space": f" {username} ",
            "zwsp": f"{username}\u200b", "case": username.upper()}[spelling]


@pytest.mark.parametrize("spelling", ["hex", "braces", "urn", "upper", "space", "zwsp", "case"])
async def test_an_approver_named_by_another_spelling_of_their_id_or_name_may_decide(
    client: httpx.AsyncClient, database: Database, spelling: str,
) -> None:
    """Approvers name users by id, username or e-mail: any spelling of the id (no dashes,
    braces, urn:uuid:) and a name pasted with white space or a zero-width space around it
    name that user (the graph saved, then nobody but an administrator could decide)."""
    user_id, headers = await make_user(database)
    username = await scalar(database, "SELECT username FROM users WHERE id = :u", u=user_id)
    approver = _spelled(spelling, user_id, str(username))
    workflow_id = await publish(client, headers, *approval_graph(approvers=[approver]))
    run = await start(client, headers, workflow_id, inputs={"doc": "x"})
    assert run["waiting_for"] == ["review"], run
    decided = await client.post(f"{RUNS}/{run['id']}/approvals/review",
                                headers=headers, json={"approved": True})
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "completed", decided.text


async def test_a_failed_run_resumes_from_its_failed_node(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    nodes = [node("s", "start"), node("first", "llm", prompt="one"),
             node("second", "llm", prompt="two after {{ first.output }}"),
             node("e", "end", output="{{ first.output }} + {{ second.output }}")]
    edges = [edge("1", "s", "first"), edge("2", "first", "second"), edge("3", "second", "e")]
    workflow_id = await publish(client, headers, nodes, edges)
    stub.script(Reply("A"), Fail(400, "the prompt is refused"), Reply("B"))
    run = await start(client, headers, workflow_id)
    failed = await wait_for(client, headers, run["id"])
    assert failed["status"] == "failed" and "second" in failed["error_message"], failed
    assert "the prompt is refused" in failed["error_message"]
    assert await node_runs(database, run["id"]) == {
        "s": ["completed"], "first": ["completed"], "second": ["failed"]}

    resumed = await client.post(f"{RUNS}/{run['id']}/resume", headers=headers)
    assert resumed.status_code == 200, resumed.text
    done = await wait_for(client, headers, run["id"])
    assert (done["status"], done["output"]) == ("completed", "A + B"), done
    # "first" ran once: one step, and three model calls in all (A, the refusal, B).
    assert await node_runs(database, run["id"]) == {
        "s": ["completed"], "first": ["completed"], "second": ["completed"],
        "e": ["completed"]}
    assert len(stub.requests(path="/v1/chat/completions")) == 3
    again = await client.post(f"{RUNS}/{run['id']}/resume", headers=headers)
    assert again.status_code == 409 and again.json()["type"].endswith("run-not-resumable")


@pytest.mark.parametrize("helper", ["helper", "h" * 255])  # the longest id a node has
async def test_an_agent_node_runs_the_agent(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, helper: str,
) -> None:
    """The agent run is the node's (its trace id, holding the node's id, fits runs.trace_id
    whatever the id's length)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    nodes = [node("s", "start", inputs=["q"]),
             node(helper, "agent", agent=agent.slug, input="Please: {{ q }}"),
             node("e", "end", output=f"{{{{ {helper}.output }}}}")]
    workflow_id = await publish(client, headers, nodes, [edge("1", "s", helper),
                                                         edge("2", helper, "e")])
    stub.script(Reply("The agent's answer."))
    run = await start(client, headers, workflow_id, inputs={"q": "help"})
    done = await wait_for(client, headers, run["id"])
    assert (done["status"], done["output"]) == ("completed", "The agent's answer."), done
    child = next(s for s in done["steps"] if s["node_id"] == helper)["output"]["run_id"]
    agent_run = (await client.get(f"/api/v1/runs/{child}", headers=headers)).json()
    assert (agent_run["agent_id"], agent_run["input"]) == (str(agent.id), "Please: help")


def agent_graph(agent_slug: str) -> tuple[list[Any], list[Any]]:
    nodes = [node("s", "start"), node("a", "agent", agent=agent_slug, input="go"),
             node("e", "end", output="{{ a.output }}")]
    return nodes, [edge("1", "s", "a"), edge("2", "a", "e")]


@pytest.mark.parametrize("cancel_at", [RUNS, "/api/v1/runs"])
async def test_cancelling_a_workflow_run_cancels_its_agent_nodes_agent_run(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, cancel_at: str,
) -> None:
    """The agent run an agent node started is cancelled with the workflow run (it went on
    calling the model, and the node's job kept its worker slot polling it), whether the
    workflow's cancel or the generic runs API's cancels it (docs/workflows.md: a workflow
    run is a row of `runs`, "cancel works for it too")."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    workflow_id = await publish(client, headers, *agent_graph(agent.slug))
    stub.script(Reply("slow", delay_ms=4000))
    run = await start(client, headers, workflow_id)
    deadline = asyncio.get_running_loop().time() + 20
    child = None
    while child is None:
        child = await scalar(database, "SELECT id FROM runs WHERE kind = 'agent' AND "
                                       "user_id = :u", u=user_id)
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    cancelled = await client.post(f"{cancel_at}/{run['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    # In the cancel's own transaction, not later.
    assert await scalar(database, "SELECT status FROM runs WHERE id = :i", i=child) == \
        "cancelled"
    done = await wait_for(client, headers, run["id"])
    assert done["status"] == "cancelled"


async def test_resume_after_a_failed_agent_node_runs_the_agent_again(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """The agent run failed (a 400 from the model), and so the node and the workflow run:
    once the cause is fixed, resume runs the agent again (this found the failed agent run
    again by its idempotency key, and the node failed at once)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    workflow_id = await publish(client, headers, *agent_graph(agent.slug))
    stub.script(Fail(400, "refused"), Fail(400, "refused"), Fail(400, "refused"))
    run = await start(client, headers, workflow_id)
    failed = await wait_for(client, headers, run["id"], within=60)
    assert failed["status"] == "failed", failed
    stub.reset()
    stub.script(Reply("fixed answer"))
    resumed = await client.post(f"{RUNS}/{run['id']}/resume", headers=headers)
    assert resumed.status_code == 200, resumed.text
    done = await wait_for(client, headers, run["id"], within=60)
    assert (done["status"], done["output"]) == ("completed", "fixed answer"), \
        done["error_message"]
    statuses = await fetch(database, "SELECT status FROM runs WHERE kind = 'agent' AND "
                                     "user_id = :u ORDER BY created_at", u=user_id)
    assert [r.status for r in statuses] == ["failed", "completed"]


async def test_the_operator_runs_a_users_workflow_as_its_owner(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], admin_headers: Headers,
        database: Database) -> None:
    """As an administrator's account does: the run is the workflow owner's (this was an
    assertion error, a 500, for the operator token)."""
    user_id, headers = user
    workflow_id = await publish(client, headers, *approval_graph())
    run = await start(client, admin_headers, workflow_id, inputs={"doc": "x"})
    mine = await client.get(f"{RUNS}/{run['id']}", headers=headers)
    assert mine.status_code == 200 and mine.json()["waiting_for"] == ["review"]
    assert await scalar(database, "SELECT user_id FROM runs WHERE id = :id",
                        id=uuid.UUID(run["id"])) == user_id


async def test_cancel_a_waiting_run(client: httpx.AsyncClient,
                                    user: tuple[uuid.UUID, Headers]) -> None:
    _, headers = user
    workflow_id = await publish(client, headers, *approval_graph())
    run = await start(client, headers, workflow_id, inputs={"doc": "x"})
    cancelled = await client.post(f"{RUNS}/{run['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["waiting_for"] == []
    assert [s["status"] for s in body["steps"]] == ["completed", "cancelled"]
    late = await client.post(f"{RUNS}/{run['id']}/approvals/review", headers=headers,
                             json={"approved": True})
    assert late.status_code == 409
    assert (await client.post(f"{RUNS}/{run['id']}/cancel", headers=headers)).status_code == 409


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"inputs": {}}, 422, "missing 'doc'"),
    ({"inputs": {"doc": "x", "extra": 1}}, 422, "unknown 'extra'"),
    ({"inputs": {"1bad": 1}}, 422, "identifiers"),
    ({"inputs": {"doc": "x" * 100_001}}, 422, "limit"),
    ({"inputs": {"doc": "x"}, "version": 7}, 404, "version"),
    ({"inputs": {"doc": "x"}, "version": "one"}, 422, ""),
    ({"inputs": ["doc"]}, 422, ""),
    ({"inputs": {"doc": "x"}, "surprise": True}, 422, ""),
    ({"inputs": {"doc": "half\x00way"}}, 422, "see errors"),
    ({"inputs": {"doc": "x"}, "idempotency_key": "k\x00"}, 422, "see errors"),
])
async def test_bad_run_requests(client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
                                body: dict[str, Any], status: int, words: str) -> None:
    _, headers = user
    workflow_id = await publish(client, headers, *approval_graph())
    answer = await client.post(f"{API}/{workflow_id}/runs", headers=headers, json=body)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]


async def test_inputs_are_measured_as_compact_json_against_their_limit(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """80,008 characters of compact JSON are within the 100,000 limit and run (they were a
    422 "the inputs are 120008 characters": the count was of a re-encoding with ", "
    between the items, not of what was sent)."""
    _, headers = user
    nodes = [node("s", "start"), node("e", "end", output="{{ xs | length }}")]
    workflow_id = await publish(client, headers, nodes, [edge("1", "s", "e")])
    answer = await client.post(f"{API}/{workflow_id}/runs", headers=headers,
                               json={"inputs": {"xs": [1] * 40_000}})
    assert answer.status_code == 202, answer.text[:400]
    assert answer.json()["output"] == "40000"


async def test_an_idempotency_key_used_for_another_workflow_is_a_409(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """A key already used for a run of workflow A, sent to workflow B: 409, not A's run
    passed off as B's; sent to A again: A's run."""
    _, headers = user
    first_wf = await publish(client, headers, *approval_graph(), name="one")
    second_wf = await publish(client, headers, *approval_graph(), name="two")
    first = await start(client, headers, first_wf, inputs={"doc": "x"}, idempotency_key="k")
    second = await client.post(f"{API}/{second_wf}/runs", headers=headers,
                               json={"inputs": {"doc": "y"}, "idempotency_key": "k"})
    assert second.status_code == 409, second.text
    again = await client.post(f"{API}/{first_wf}/runs", headers=headers,
                              json={"inputs": {"doc": "x"}, "idempotency_key": "k"})
    assert again.status_code == 200 and again.json()["id"] == first["id"], again.text


async def test_an_idempotency_key_sent_again_is_the_first_run_or_a_409_for_other_inputs(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """A key replayed with other inputs is a client's mistake: 409 naming the first run,
    not the first run passed off as the answer to different inputs; the same inputs again
    (or the version the first run used, named) answer the first run, even once the
    workflow is archived."""
    _, headers = user
    workflow_id = await publish(client, headers, *approval_graph())
    first = await start(client, headers, workflow_id, inputs={"doc": "x"}, idempotency_key="k")
    other = await client.post(f"{API}/{workflow_id}/runs", headers=headers,
                              json={"inputs": {"doc": "y"}, "idempotency_key": "k"})
    assert other.status_code == 409, other.text
    assert other.json()["run_id"] == first["id"], other.text
    again = await client.post(f"{API}/{workflow_id}/runs", headers=headers,
                              json={"inputs": {"doc": "x"}, "version": 1,
                                    "idempotency_key": "k"})
    assert again.status_code == 200 and again.json()["id"] == first["id"], again.text
    # Its first answer lost, the client retries after the workflow was archived: the run
    # it started is the answer (the archive check came first: a 409).
    assert (await client.patch(f"{API}/{workflow_id}", headers=headers,
                               json={"status": "archived"})).status_code == 200
    retried = await client.post(f"{API}/{workflow_id}/runs", headers=headers,
                                json={"inputs": {"doc": "x"}, "idempotency_key": "k"})
    assert retried.status_code == 200 and retried.json()["id"] == first["id"], retried.text
    fresh = await client.post(f"{API}/{workflow_id}/runs", headers=headers,
                              json={"inputs": {"doc": "x"}, "idempotency_key": "k2"})
    assert fresh.status_code == 409 and "archived" in fresh.json()["detail"], fresh.text


async def test_runs_are_their_owners(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    _, stranger = other_user
    workflow_id = await publish(client, headers, *approval_graph())
    run = await start(client, headers, workflow_id, inputs={"doc": "x"})
    assert (await client.post(f"{API}/{workflow_id}/runs", headers=stranger,
                              json={"inputs": {"doc": "x"}})).status_code == 404
    assert (await client.get(f"{API}/{workflow_id}/runs", headers=stranger)).status_code == 404
    for method, path in (("GET", ""), ("POST", "/resume"), ("POST", "/cancel")):
        answer = await client.request(method, f"{RUNS}/{run['id']}{path}", headers=stranger)
        assert answer.status_code == 404, (path, answer.text)
    assert (await client.get(f"{RUNS}/{uuid.uuid4()}", headers=headers)).status_code == 404
    assert (await client.get(f"{RUNS}/not-an-id", headers=headers)).status_code == 404
    unpublished = await client.post(API, headers=headers, json={"name": "Draft only"})
    never = await client.post(f"{API}/{unpublished.json()['id']}/runs", headers=headers, json={})
    assert never.status_code == 404 and "no published version" in never.json()["detail"]
    # An agent run is not a workflow run.
    assert (await client.post(f"{API}/{workflow_id}/runs", headers=headers, json={
        "inputs": {"doc": "x"}, "idempotency_key": "k1"})).status_code == 202
    replay = await client.post(f"{API}/{workflow_id}/runs", headers=headers, json={
        "inputs": {"doc": "x"}, "idempotency_key": "k1"})
    assert replay.status_code == 200
    # Deleting the workflow deletes its runs.
    assert (await client.delete(f"{API}/{workflow_id}", headers=headers)).status_code == 204
    assert (await client.get(f"{RUNS}/{run['id']}", headers=headers)).status_code == 404
    assert (await client.get(f"/api/v1/runs/{run['id']}", headers=headers)).status_code == 404


async def test_events_stream_each_node_then_the_end(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    nodes = [node("s", "start"), node("t", "template", template="hi"),
             node("e", "end", output="{{ t.output }}")]
    workflow_id = await publish(client, headers, nodes, [edge("1", "s", "t"), edge("2", "t", "e")])
    run = await start(client, headers, workflow_id)
    async with client.stream("GET", f"/api/v1/runs/{run['id']}/events", headers=headers) as got:
        body = "".join([chunk async for chunk in got.aiter_text()])
    frames = [f for f in body.split("\n\n") if f.startswith("id:")]
    assert [f.split("\n")[1] for f in frames] == ["event: step"] * 6 + ["event: end"]
    assert '"node_id": "t"' in frames[2] and '"phase": "started"' in frames[2]
    assert '"output": "hi"' in frames[-1]


def _ids_and_steps(body: str) -> list[tuple[str, str, Any, Any]]:
    """(id, event, node, phase) of each frame with an id."""
    found = []
    for frame in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.split("\n") if ": " in line)
        if "id" in fields:
            data = json.loads(fields["data"])
            found.append((fields["id"], fields["event"], data.get("node_id"), data.get("phase")))
    return found


async def test_events_of_parallel_branches_finish_every_step_and_resume(
    test_settings: Settings, database: Database, test_keys: KeyMaterial, stub: StubServer,
    admin_headers: Headers,
) -> None:
    """Two parallel branches, a slow one (an llm node) and a quick one (a template) numbered
    after it: the events stream sends each node's `finished` frame, the slow one's after
    the quick one's (once a single cursor passed the slow step's number, it never came);
    reconnecting with the id of the quick one's finish gets exactly the events after it,
    the slow one's finish included (docs/agents.md, "Events")."""
    app = create_app(test_settings, database=database, keys=test_keys, configure_logs=False)
    _user_id, headers = await make_user(database)
    nodes = [node("start", "start"), node("fan", "parallel"),
             node("slow", "llm", prompt="take your time"),
             node("quick", "template", template="fast"),
             node("both", "join"), node("done", "end", output="{{ quick.output }}")]
    edges = [edge("a", "start", "fan"), edge("b", "fan", "slow"), edge("c", "fan", "quick"),
             edge("d", "slow", "both"), edge("e", "quick", "both"), edge("f", "both", "done")]
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as http, \
            running_worker(app, database, test_settings):
        await add_provider(http, admin_headers, stub)
        workflow_id = await publish(http, headers, nodes, edges, name="Par")
        stub.script(Reply("slowly", delay_ms=3000))
        run_id = (await start(http, headers, workflow_id))["id"]
        async with http.stream("GET", f"/api/v1/runs/{run_id}/events",
                               headers=headers) as response:
            assert response.status_code == 200
            text_ = (await asyncio.wait_for(response.aread(), 60)).decode()
        steps = (await http.get(f"/api/v1/runs/{run_id}/steps", headers=headers)).json()
        frames = _ids_and_steps(text_)
        quick_done = next(i for i, f in enumerate(frames) if f[2:] == ("quick", "finished"))
        resumed = await http.get(f"/api/v1/runs/{run_id}/events", headers={
            **headers, "Last-Event-ID": frames[quick_done][0]})
    assert frames[-1][:2] == ("end", "end")
    assert len({f[0] for f in frames}) == len(frames), frames  # each id names one position
    finished = sorted(f[2] for f in frames if f[3] == "finished")
    assert finished == sorted(s["node_id"] for s in steps), (frames, steps)
    assert frames[quick_done][0].count(".") == 2, frames  # it names the slow step, open
    assert frames.index((frames[quick_done][0], "step", "quick", "finished")) < \
        next(i for i, f in enumerate(frames) if f[2:] == ("slow", "finished"))
    after = sorted(f[1:] for f in frames[quick_done + 1:])
    assert sorted(f[1:] for f in _ids_and_steps(resumed.text)) == after, resumed.text


async def test_a_node_whose_job_died_for_good_fails_the_run_until_resumed(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    _, headers = user
    nodes, edges = linear()
    workflow_id = await publish(client, headers, nodes, edges)
    run = await start(client, headers, workflow_id, inputs={"question": "q"})  # no worker
    (ask,) = [s for s in run["steps"] if s["node_id"] == "ask"]
    assert ask["status"] == "pending" and ask["task_id"]
    async with database.transaction() as session:
        assert await wf_runs.sweep(session) == []  # its job is alive
        await session.execute(text("UPDATE background_tasks SET status = 'dead_letter' "
                                   "WHERE id = :t"), {"t": ask["task_id"]})
        await session.execute(text("UPDATE runs SET updated_at = now() - interval '1 minute' "
                                   "WHERE id = :r"), {"r": run["id"]})
    async with database.transaction() as session:
        assert [str(r) for r in await wf_runs.sweep(session)] == [run["id"]]
    failed = (await client.get(f"{RUNS}/{run['id']}", headers=headers)).json()
    assert failed["status"] == "failed" and "resume the run" in failed["error_message"]
    resumed = (await client.post(f"{RUNS}/{run['id']}/resume", headers=headers)).json()
    (again,) = [s for s in resumed["steps"] if s["node_id"] == "ask"]
    assert resumed["status"] == "running" and again["status"] == "pending"
    assert again["task_id"] != ask["task_id"]


@pytest.mark.parametrize(("first", "second"), [(1, True), (0, False), (1, 1.0)])
async def test_a_replay_whose_inputs_differ_only_to_python_is_a_409(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], first: Any, second: Any,
) -> None:
    """``{"doc": true}`` is other inputs than ``{"doc": 1}`` (and ``1.0`` than ``1``): a 409
    naming the first run (Python's == took them as equal and answered the first run);
    the same JSON again is that run."""
    _, headers = user
    workflow_id = await publish(client, headers, *approval_graph())
    one = await start(client, headers, workflow_id, inputs={"doc": first}, idempotency_key="k")
    two = await client.post(f"{API}/{workflow_id}/runs", headers=headers,
                            json={"inputs": {"doc": second}, "idempotency_key": "k"})
    assert two.status_code == 409 and two.json()["run_id"] == one["id"], two.text
    again = await client.post(f"{API}/{workflow_id}/runs", headers=headers,
                              json={"inputs": {"doc": first}, "idempotency_key": "k"})
    assert again.status_code == 200 and again.json()["id"] == one["id"], again.text
