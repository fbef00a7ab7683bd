"""A metered user's agent run cancelled at each point of its loop: while the model
answers, while a tool runs, and between a model call's credit hold and its step being
written (the runner finds the run cancelled with the hold in hand).  Each time the run
ends ``cancelled``, no step stays running and nothing of the user's credits stays held
or reserved: what was not used is given back."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from roost.agents import runner
from roost.db.engine import Database
from roost.llm import calls
from roost.tasks.worker import Worker
from tests.agents.conftest import make_agent, test_settings, wait_for_run, worker  # noqa: F401
from tests.agents.test_races_runs import end_state, slow_current_time
from tests.agents.test_runs import start
from tests.billing.metered import Headers, assert_settled, metered_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Hang, Reply, ToolCalls
from tests.support.races import no_5xx, wait_for_steps


async def cancel_and_check(client: httpx.AsyncClient, headers: Headers, database: Database,
                           user_id: uuid.UUID, run_id: str) -> dict[str, int]:
    cancelled = await client.post(f"/api/v1/runs/{run_id}/cancel", headers=headers)
    no_5xx(cancelled)
    assert cancelled.status_code == 200, cancelled.text
    done = await wait_for_run(client, headers, run_id)
    assert done["status"] == "cancelled", done
    state = await end_state(database, run_id)
    assert state["steps_running"] == 0 and state["tools_running"] == 0, state
    return await assert_settled(database, user_id)


async def test_a_run_cancelled_while_the_model_answers_gives_its_hold_back(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811 - the fixture
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    agent = await make_agent(database, user_id)
    stub.script(Hang())
    run = await start(client, headers, agent.id)
    await wait_for_steps(client, headers, run["id"])
    ledger = await cancel_and_check(client, headers, database, user_id, run["id"])
    assert ledger["used"] == 0, ledger  # the model never answered: nothing to pay


async def test_a_run_cancelled_while_a_tool_runs_pays_only_its_model_call(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker, monkeypatch: pytest.MonkeyPatch,  # noqa: F811 - the fixture
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    started = slow_current_time(monkeypatch, 3.0)
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("Noon."))
    run = await start(client, headers, agent.id)
    await asyncio.wait_for(started.wait(), 20)
    ledger = await cancel_and_check(client, headers, database, user_id, run["id"])
    assert ledger["used"] >= 1, ledger  # the first model call answered
    assert len(stub.requests(path="/v1/chat/completions")) == 1


async def test_a_run_cancelled_between_a_model_calls_hold_and_its_step_gives_it_back(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker, monkeypatch: pytest.MonkeyPatch,  # noqa: F811 - the fixture
) -> None:
    """The second model call's credits are held, then the run is cancelled before its step
    is written: the runner stops with the hold in hand and gives it back."""
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("Noon."))
    original = calls.prepare_request
    holds: list[calls.PendingCall] = []
    cancelled: list[httpx.Response] = []

    async def prepare_then_cancel(*args: Any, **kwargs: Any) -> Any:
        call, values = await original(*args, **kwargs)
        holds.append(call)
        if len(holds) == 2:  # the call after the tool step: held, its step not written
            assert call.reservation is not None
            cancelled.append(await client.post(f"/api/v1/runs/{call.run_id}/cancel",
                                               headers=headers))
        return call, values

    monkeypatch.setattr(runner.calls, "prepare_request", prepare_then_cancel)
    run = await start(client, headers, agent.id)
    done = await wait_for_run(client, headers, run["id"])
    assert [r.status_code for r in cancelled] == [200], [r.text for r in cancelled]
    assert done["status"] == "cancelled", done
    state = await end_state(database, run["id"])
    assert state["steps_running"] == 0 and state["tools_running"] == 0, state
    ledger = await assert_settled(database, user_id)
    assert ledger["used"] >= 1, ledger  # the first call and the tool, not the second call
    assert len(stub.requests(path="/v1/chat/completions")) == 1


async def test_a_run_out_of_time_while_a_tool_runs_gives_the_tools_hold_back(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker, monkeypatch: pytest.MonkeyPatch,  # noqa: F811 - the fixture
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"],
                             config={"timeout_s": 2})
    slow_current_time(monkeypatch, 10.0)
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("Noon."))
    run = await start(client, headers, agent.id)
    done = await wait_for_run(client, headers, run["id"])
    assert (done["status"], done["stop_reason"]) == ("completed", "timeout"), done
    state = await end_state(database, run["id"])
    assert state["steps_running"] == 0 and state["tools_running"] == 0, state
    ledger = await assert_settled(database, user_id)
    assert ledger["used"] >= 1, ledger  # the model call, not the tool that never answered
