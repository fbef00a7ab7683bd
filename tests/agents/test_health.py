"""Persona health metrics: the sampling job run directly over runs and usage records in
place (exact counts and windows), the retention, and the time series API."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import select, text

from roost.agents import health
from roost.agents.models import Agent, Persona, PersonaHealthMetric, Run
from roost.db.engine import Database
from roost.tasks.schedules import schedules
from tests.agents.conftest import Headers, make_agent


async def persona_with_agent(database: Database, owner: uuid.UUID, *,
                             active: bool = True) -> tuple[Persona, Agent]:
    async with database.transaction() as session:
        persona = Persona(owner_id=owner, name="Iris", is_active=active)
        session.add(persona)
        await session.flush()
        await session.refresh(persona)
    return persona, await make_agent(database, owner, persona_id=persona.id)


async def add_run(database: Database, agent: Agent, owner: uuid.UUID, status: str) -> uuid.UUID:
    async with database.transaction() as session:
        run = Run(agent_id=agent.id, persona_id=agent.persona_id, user_id=owner,
                  trace_id=f"t-{uuid.uuid4()}", input="x", status=status)
        session.add(run)
        await session.flush()
        return run.id


async def add_usage(database: Database, owner: uuid.UUID, run_id: uuid.UUID | None,
                    credits: int, seconds_ago: float) -> None:
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO usage_records (id, user_id, request_type, credits_used, run_id, "
            "created_at) VALUES (:id, :u, 'agent_step', :c, :r, "
            "now() - make_interval(secs => :ago))"),
            {"id": uuid.uuid4(), "u": owner, "c": credits, "r": run_id, "ago": seconds_ago})


async def samples(database: Database, persona_id: uuid.UUID) -> list[PersonaHealthMetric]:
    async with database.transaction() as session:
        return list((await session.scalars(select(PersonaHealthMetric).where(
            PersonaHealthMetric.persona_id == persona_id)
            .order_by(PersonaHealthMetric.measured_at))).all())


async def test_a_sample_counts_active_runs_and_the_window_s_calls(
    database: Database, user: tuple[uuid.UUID, Headers], tmp_path: Path,
) -> None:
    owner, _ = user
    persona, agent = await persona_with_agent(database, owner)
    other, other_agent = await persona_with_agent(database, owner)
    asleep, _ = await persona_with_agent(database, owner, active=False)
    for status in ("pending", "running", "running"):
        await add_run(database, agent, owner, status)
    done = await add_run(database, agent, owner, "completed")
    failed = await add_run(database, agent, owner, "failed")
    elsewhere = await add_run(database, other_agent, owner, "completed")
    await add_usage(database, owner, done, 3, seconds_ago=10)
    await add_usage(database, owner, failed, 4, seconds_ago=50)
    await add_usage(database, owner, done, 100, seconds_ago=120)  # before the window
    await add_usage(database, owner, elsewhere, 7, seconds_ago=5)  # another persona's
    await add_usage(database, owner, None, 9, seconds_ago=5)  # a chat call: no run

    outcome = await health.sample(database, data_dir=tmp_path / "missing" / "data",
                                  interval_s=60, retention_days=30)
    assert outcome == {"sampled": 2, "deleted": 0}
    [first] = await samples(database, persona.id)
    assert (first.active_runs_count, first.llm_calls_count, first.estimated_cost,
            first.window_s) == (3, 2, Decimal("7.0000"), 60)
    assert first.cpu_percent is not None and first.memory_mb and first.memory_mb > 10
    assert first.memory_percent is not None and first.disk_usage_gb is not None
    [theirs] = await samples(database, other.id)
    assert (theirs.active_runs_count, theirs.llm_calls_count, theirs.estimated_cost) == (
        0, 1, Decimal("7.0000"))
    assert await samples(database, asleep.id) == []

    # The next window starts where the previous ended: nothing is counted twice.
    await add_usage(database, owner, done, 5, seconds_ago=0)
    async with database.transaction() as session:
        await session.execute(text("UPDATE runs SET status = 'completed' WHERE status = 'pending'"))
    await health.sample(database, data_dir=tmp_path, interval_s=60, retention_days=30)
    first_again, second = await samples(database, persona.id)
    assert (second.active_runs_count, second.llm_calls_count, second.estimated_cost) == (
        2, 1, Decimal("5.0000"))
    elapsed = (second.measured_at - first_again.measured_at).total_seconds()
    assert second.window_s == round(elapsed) and second.window_s < 60


async def test_samples_past_the_retention_are_deleted(
    database: Database, user: tuple[uuid.UUID, Headers], tmp_path: Path,
) -> None:
    owner, _ = user
    persona, _ = await persona_with_agent(database, owner)
    async with database.transaction() as session:
        for days in (40, 31, 29):
            session.add(PersonaHealthMetric(persona_id=persona.id, window_s=60))
            await session.flush()
            await session.execute(text(
                "UPDATE persona_health_metrics SET measured_at = now() - make_interval(days => :d) "
                "WHERE window_s = 60 AND measured_at > now() - interval '1 minute'"), {"d": days})
    outcome = await health.sample(database, data_dir=tmp_path, interval_s=60, retention_days=30)
    assert outcome == {"sampled": 1, "deleted": 2}
    kept = await samples(database, persona.id)
    assert len(kept) == 2
    # The new sample's window runs from the newest sample kept (29 days ago).
    assert kept[-1].window_s is not None and 29 * 86_400 - 5 < kept[-1].window_s < 29 * 86_400 + 5


async def test_the_series_is_the_members_and_oldest_first(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers], tmp_path: Path,
) -> None:
    owner, headers = user
    _, stranger_headers = other_user
    persona, _ = await persona_with_agent(database, owner)
    for _ in range(3):
        await health.sample(database, data_dir=tmp_path, interval_s=60, retention_days=30)
    rows = await samples(database, persona.id)
    url = f"/api/v1/personas/{persona.id}/health"
    got = (await client.get(url, headers=headers)).json()
    assert [g["id"] for g in got] == [str(r.id) for r in rows]
    assert got[0]["window_s"] == 60 and got[0]["active_runs_count"] == 0
    latest = (await client.get(url, params={"limit": 2}, headers=headers)).json()
    assert [g["id"] for g in latest] == [str(r.id) for r in rows[1:]]
    since = (await client.get(url, params={"since": rows[1].measured_at.isoformat(), "limit": 1},
                              headers=headers)).json()
    assert [g["id"] for g in since] == [str(rows[1].id)]
    until = (await client.get(url, params={"until": rows[1].measured_at.isoformat()},
                              headers=headers)).json()
    assert [g["id"] for g in until] == [str(rows[0].id)]
    # An empty window (until at or before since) is a mistake: a 422 naming until, as
    # the usage and analytics reports answer it (it was an empty 200).
    moment = rows[1].measured_at.isoformat()
    empty = await client.get(url, params={"since": moment, "until": moment}, headers=headers)
    assert empty.status_code == 422 and empty.json()["field"] == "until", empty.text
    assert (await client.get(url, headers=stranger_headers)).status_code == 404
    missing = await client.get(f"/api/v1/personas/{uuid.uuid4()}/health", headers=headers)
    assert missing.status_code == 404


def test_the_job_is_scheduled_on_the_maintenance_queue() -> None:
    from roost.agents import jobs  # noqa: F401 - what the worker imports registers it
    from roost.tasks.handlers import get_task_type

    schedule = schedules()[health.HEALTH_TASK]
    assert schedule.interval_seconds == 60
    task_type = get_task_type(health.HEALTH_TASK)
    assert task_type is not None and task_type.queue == "maintenance"
    assert task_type.priority == "background"


async def test_overlapping_passes_count_each_call_once(
    database: Database, user: tuple[uuid.UUID, Headers], tmp_path: Path,
) -> None:
    """Two passes of the job at once (two workers, or a pass overrunning its 60 s interval:
    the job's timeout is 300 s) both read the same previous sample and counted the
    persona's one call (and its credits) twice: the later pass now skips."""
    owner, _ = user
    persona, agent = await persona_with_agent(database, owner)
    run = await add_run(database, agent, owner, "completed")
    await add_usage(database, owner, run, 3, seconds_ago=10)
    # Hold the persona row: the first pass waits to key-share lock it (its measuring
    # statement locks the personas it samples) while the second one runs.
    async with database.transaction() as holder:
        await holder.execute(text("SELECT 1 FROM personas WHERE id = :p FOR UPDATE"),
                             {"p": persona.id})
        first = asyncio.create_task(health.sample(
            database, data_dir=tmp_path, interval_s=60, retention_days=30))
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            async with database.transaction() as watcher:
                waiting: int = (await watcher.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%FOR KEY SHARE OF p%'"))).scalar_one()
            if waiting == 1:
                break
            assert asyncio.get_running_loop().time() < deadline, waiting
            await asyncio.sleep(0.05)
        second = await asyncio.wait_for(health.sample(  # before: blocked behind the holder
            database, data_dir=tmp_path, interval_s=60, retention_days=30), 30)
    assert second == {"sampled": 0, "deleted": 0, "skipped": "another pass is sampling"}
    assert (await first)["sampled"] >= 1
    rows = await samples(database, persona.id)
    assert [(r.llm_calls_count, r.estimated_cost) for r in rows] == [(1, 3)]


async def test_a_big_spender_does_not_stop_every_personas_sample(
    database: Database, user: tuple[uuid.UUID, Headers], tmp_path: Path,
) -> None:
    """One persona's two million credits in a window overflowed estimated_cost (numeric
    10,4): the pass, one statement for every persona, failed and no persona was sampled."""
    owner, _ = user
    big, big_agent = await persona_with_agent(database, owner)
    quiet, _ = await persona_with_agent(database, owner)
    run = await add_run(database, big_agent, owner, "completed")
    await add_usage(database, owner, run, 2_000_000, seconds_ago=5)
    await health.sample(database, data_dir=tmp_path, interval_s=60, retention_days=30)
    assert len(await samples(database, quiet.id)) == 1
    [row] = await samples(database, big.id)
    assert (row.llm_calls_count, row.estimated_cost) == (1, 2_000_000)


async def test_a_persona_deleted_during_a_pass_is_left_out_not_every_sample(
    database: Database, user: tuple[uuid.UUID, Headers], tmp_path: Path,
) -> None:
    """A persona's deletion not yet committed when the pass reads the personas: the pass
    waits for it and leaves that persona out (its sample's foreign key failed the whole
    pass, one transaction with max_retries 0: no persona got a sample that interval)."""
    owner, _ = user
    keep, _ = await persona_with_agent(database, owner)
    doomed, _ = await persona_with_agent(database, owner)
    async with database.transaction() as deleter:  # DELETE /personas/{id}, not yet committed
        await deleter.execute(text("DELETE FROM personas WHERE id = :p"), {"p": doomed.id})
        task = asyncio.create_task(health.sample(database, data_dir=tmp_path, interval_s=60,
                                                 retention_days=30))
        await asyncio.sleep(1.5)  # the pass reaches the deleted row and waits for it
    outcome = await task
    assert outcome["sampled"] == 1
    assert len(await samples(database, keep.id)) == 1
    assert await samples(database, doomed.id) == []


async def test_tool_usage_of_a_run_is_not_an_llm_call(
    database: Database, user: tuple[uuid.UUID, Headers], tmp_path: Path,
) -> None:
    """llm_calls_count is the model calls of the persona's runs: a paid tool call's ledger
    row (request_type 'tool', run_id set) adds to the cost, not to the calls (it did)."""
    owner, _ = user
    persona, agent = await persona_with_agent(database, owner)
    run = await add_run(database, agent, owner, "completed")
    await add_usage(database, owner, run, 3, seconds_ago=5)
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO usage_records (id, user_id, request_type, credits_used, run_id, "
            "created_at) VALUES (:id, :u, 'tool', 5, :r, now() - interval '5 seconds')"),
            {"id": uuid.uuid4(), "u": owner, "r": run})
    await health.sample(database, data_dir=tmp_path, interval_s=60, retention_days=30)
    [row] = await samples(database, persona.id)
    assert row.llm_calls_count == 1
