"""An agent run's tokens and cost agree with the usage rows its user paid for: a streamed
model step that the provider cuts off after delivering text included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import make_agent, wait_for_run, worker
from tests.agents.test_runs import start
from tests.billing.metered import Headers, metered_settings, settled, subscribe
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Drop
from tests.support.sql import fetch, run_and_usage

__all__ = ["worker"]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return metered_settings(tmp_path, llm_credits_per_1k_tokens=1000.0, llm_timeout_s=2.0)


async def run_books(database: Database, run_id: str) -> dict[str, Any]:
    """The run row's totals, the sums of its model calls' usage rows, its agent.run events."""
    run, usage = await run_and_usage(database, run_id)
    events = await fetch(database, "SELECT event_data FROM clickhouse_analytics "
                         "WHERE event_type = 'agent.run' AND event_data->>'run_id' = :r",
                         r=run_id)
    return {"run": run, "usage": usage, "events": [e.event_data for e in events]}


async def test_a_step_the_provider_cut_off_counts_the_tokens_it_billed(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,
) -> None:
    """A run's streamed model step that the provider cuts mid-way is billed (the tokens
    delivered): the failed step, the run and its agent.run event count what the user
    paid for, not 0."""
    await add_provider(client, admin_headers, stub)
    user_id, headers = await make_user(database)
    await subscribe(client, admin_headers, user_id, 100_000)
    agent = await make_agent(database, user_id)
    stub.script(Drop(" ".join(["word"] * 60), after=20))
    run = await start(client, headers, agent.id)
    done = await wait_for_run(client, headers, run["id"])
    assert done["status"] == "failed", done
    books = await run_books(database, run["id"])
    r, u = books["run"], books["usage"]
    assert await settled(database, user_id) == {"used": u.credits, "reserved": 0, "held": 0}
    assert u.credits > 0 and u.tout > 0, u
    assert (r.tokens_in, r.tokens_out, r.cost) == (u.tin, u.tout, u.credits), (r, u)
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    [step] = [s for s in steps if s["step_type"] == "llm_call"]
    assert (step["status"], step["tokens_in"], step["tokens_out"]) == (
        "failed", u.tin, u.tout), step
    [event] = books["events"]
    assert (event["tokens_input"], event["tokens_output"]) == (u.tin, u.tout), event
    assert float(event["cost"]) == u.credits, event
