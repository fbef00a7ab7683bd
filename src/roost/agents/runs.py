"""Runs: create one (enqueued on the task queue, idempotent per key), list, read, read its
steps, cancel.  The loop that executes a run is :mod:`roost.agents.runner`."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime, time
from typing import Any, Final, cast

from sqlalchemy import Select, Table, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from roost.agents.catalog import require_runnable
from roost.agents.models import OPEN_STEP_STATUSES, TERMINAL_RUN_STATUSES, Agent, Run, RunStep
from roost.agents.schemas import STORED, AgentConfig, RunCreate
from roost.audit.models import AuditLog
from roost.audit.service import entry_values, record
from roost.billing import credits, limits
from roost.config import get_settings
from roost.db.base import utcnow, uuid7
from roost.db.statements import bound_insert_from, flush_pending, prefixed, with_defaults
from roost.db.transaction import driver_fetch
from roost.errors import (
    Conflict,
    Forbidden,
    LimitReached,
    NotFound,
    PaymentRequired,
    Unprocessable,
)
from roost.identity.common import require_user
from roost.pagination import DEFAULT_LIMIT, newest_first, where_equal
from roost.principal import Principal
from roost.prompts import service as prompts
from roost.tasks.models import BackgroundTask
from roost.tasks.service import JOB_KEYS, job_values
from roost.tools.models import ToolRun

RUN_TASK: Final = "agents.run"
EVENTS_CHANNEL: Final = "roost_runs"


AGENT_INACTIVE: Final = ("the agent was deactivated before the run started: the run was "
                         "not started (activate the agent and run it again)")


class RunFinished(Conflict):
    title, type_slug = "Run already finished", "run-finished"


def effective_config(agent: Agent) -> dict[str, Any]:
    """The agent's config with every default filled in (what the run keeps)."""
    return AgentConfig.model_validate(agent.config or {}, context=STORED).model_dump(mode="json")


async def notify(session: AsyncSession, run_id: uuid.UUID, what: str) -> None:
    """Tell listeners (``GET /runs/{id}/events``) that the run changed; sent on commit."""
    await driver_fetch(session, _notify_statement(),
                       {"channel": EVENTS_CHANNEL, "payload": f"{run_id}:{what}"})


@functools.cache
def _notify_statement() -> Select[Any]:
    return select(func.pg_notify(bindparam("channel"), bindparam("payload")))


async def create_run(
    session: AsyncSession, actor: Principal, agent: Agent, body: RunCreate, *,
    trace_id: str | None = None, source: str = "api",
) -> tuple[Run, bool]:
    """A pending run and its job, in the caller's transaction.  With an idempotency key
    already used by this user for the same agent and input, the existing run (``created``
    false); for another agent or input, 422 (a key names one request, as in the IETF
    Idempotency-Key draft: answering with a run of something else would hide the
    client's mistake)."""
    runner = require_user(actor, "runs")  # a run is its runner's: not the operator token's
    # A retry is answered before anything is checked: the run it replays may be the one
    # that used up the day's runs, or its agent deactivated since (a replay writes
    # nothing; a 409 would tell the client that no run was made).
    replayed = await _replayed(session, runner, agent, body)
    if replayed is not None:
        return replayed, False
    await require_runnable(session, actor, agent)
    run_id, job_id, now = uuid7(), uuid7(), utcnow()
    trace = trace_id or f"run-{run_id}"
    row: dict[str, Any] = dict.fromkeys(_RUN_COLUMNS)
    row.update(with_defaults(Run, dict(
        id=run_id, agent_id=agent.id, persona_id=agent.persona_id, user_id=runner,
        trace_id=trace, idempotency_key=body.idempotency_key,
        status="pending", input=body.input, source=source, config=effective_config(agent),
        task_id=job_id, created_at=now, updated_at=now)))
    # A metered user's plan first: refused, nothing is written.
    try:
        await _check_plan(session, runner, run_id)
    except (PaymentRequired, LimitReached):
        # A retry that raced its first request (committed while this one waited for the
        # plan's lock) is still a replay.
        replayed = await _replayed(session, runner, agent, body)
        if replayed is None:
            raise
        return replayed, False
    audit = entry_values(
        "agent.run.create", user_id=runner, resource_type="run", resource_id=run_id,
        trace_id=trace, metadata={"agent_id": str(agent.id), "source": source,
                                  "task_id": str(job_id)})
    await flush_pending(session)  # as audit.record would: the record may name it
    # The run, its job and its audit record: one statement (the job and the record only
    # when the run was inserted, not when its idempotency key was used).
    inserted = await driver_fetch(session, _insert_run_statement(), {
        **prefixed("r_", row), "channel": EVENTS_CHANNEL, "event": f"{run_id}:created",
        **prefixed("j_", job_values(RUN_TASK, {"run_id": str(run_id)}, job_id=job_id)),
        **prefixed("a_", audit)})
    if not inserted:  # the key was used: the first run is the answer
        existing = await _replayed(session, runner, agent, body)
        if existing is None:
            raise NotFound("the run with this idempotency key is not visible")
        return existing, False
    # The row as written, known to the session without reading it back.
    run = Run(**row)
    make_transient_to_detached(run)
    session.add(run)
    return run, True


async def _replayed(session: AsyncSession, runner: uuid.UUID, agent: Agent,
                    body: RunCreate) -> Run | None:
    """The run this user started with ``body``'s idempotency key (None: no key, or no
    such run visible); 422 when it was of another agent or input."""
    if body.idempotency_key is None:
        return None
    existing = await session.scalar(select(Run).where(
        Run.user_id == runner, Run.idempotency_key == body.idempotency_key))
    if existing is not None and (existing.agent_id != agent.id or existing.input != body.input):
        raise Unprocessable(
            f"idempotency_key {body.idempotency_key!r} was used for run {existing.id}"
            " with another agent or input: send that request again unchanged, or use a"
            " new key", extra={"run_id": str(existing.id)})
    return existing


_RUN_COLUMNS: Final = tuple(Run.__mapper__.columns.keys())


@functools.cache
def _insert_run_statement() -> Select[Any]:
    """``WITH new_run AS (INSERT INTO runs ... ON CONFLICT DO NOTHING RETURNING id),
    new_job AS (INSERT INTO background_tasks SELECT ... FROM new_run), new_record AS
    (INSERT INTO audit_logs SELECT ... FROM new_run) SELECT pg_notify(...) FROM new_run``:
    the run with every column given (``r_`` parameters), its job (``j_``) and its audit
    record (``a_``), unless its idempotency key was used (then nothing, and no row
    back); listeners hear ``<id>:created``."""
    columns = Run.__mapper__.columns
    run = (pg_insert(cast(Table, Run.__table__))
           .values({columns[key]: bindparam("r_" + key) for key in _RUN_COLUMNS})
           .on_conflict_do_nothing(index_elements=[Run.user_id, Run.idempotency_key],
                                   index_where=Run.idempotency_key.is_not(None))
           .returning(Run.__table__.c.id).cte("new_run"))
    job = bound_insert_from(BackgroundTask, "j_", JOB_KEYS, run).cte("new_job")
    audit = bound_insert_from(AuditLog, "a_", _AUDIT_KEYS, run).cte("new_record")
    return (select(func.pg_notify(bindparam("channel"), bindparam("event")))
            .select_from(run).add_cte(job).add_cte(audit))


_AUDIT_KEYS: Final = tuple(entry_values("agent.run.create"))  # every record has the same


async def _check_plan(session: AsyncSession, user_id: uuid.UUID, run_id: uuid.UUID) -> None:
    """A metered user's plan: its runs a day (403 naming the limit), and a balance above
    zero (402): the run's model and tool calls then hold their own credits."""
    settings = get_settings()
    payer = await credits.require_payer(session, settings, user_id)
    if payer is None:
        return
    if payer.balance <= 0 and not await credits.calls_are_free(session, settings):
        raise PaymentRequired(
            f"not enough credits to start a run: the balance is 0 of {payer.credits_limit} "
            f"(plan {payer.plan_key!r})", extra={"balance": 0, "needed": 1,
                                                 "subscription_id": str(payer.subscription_id)})
    if payer.limits.get("runs_per_day") is not None:
        await limits.lock_count(session, payer, "runs_per_day")
        today = datetime.combine(utcnow().date(), time(), UTC)
        # Agent runs only (the plan's limit is theirs): a workflow's own run row counted
        # here would leave a one-run-a-day plan no run for the workflow's agent node.
        started = await limits.owned_count(session, payer, "runs", since=today,
                                           except_run=run_id)
        await limits.check_count(session, user_id, "runs_per_day", started, payer=payer)


def totals_from_steps(run_id: uuid.UUID) -> dict[str, Any]:
    """SET values: the run's tokens and cost summed over its steps (the runner writes them
    to the run row one step late; a run ended from outside takes them from here)."""
    def total(column: Any) -> Any:
        return select(func.coalesce(func.sum(column), 0)).where(
            RunStep.run_id == run_id).scalar_subquery()
    return {"tokens_in": total(RunStep.tokens_in), "tokens_out": total(RunStep.tokens_out),
            "cost": total(RunStep.cost)}


async def fail_open_run(session: AsyncSession, run_id: uuid.UUID, reason: str, *,
                        unstarted: bool = False,
                        metadata: dict[str, Any] | None = None) -> bool:
    """Fail a run that is not finished (``unstarted``: only while no worker has started
    it), in the caller's transaction, which must see the run (the system's); true when
    it changed.  Its listeners hear it end failed, its job later finds it finished and
    does nothing."""
    unfinished = [Run.id == run_id, Run.status.in_(("pending", "running"))]
    if unstarted:  # a worker's first claim (which stores started_at) wins, or waits
        unfinished += [Run.status == "pending", Run.started_at.is_(None)]
    now = utcnow()
    changed = (await session.execute(
        update(Run).where(*unfinished)
        .values(status="failed", stop_reason="error", error_message=reason,
                completed_at=now, updated_at=now, **totals_from_steps(run_id))
        .returning(Run.user_id, Run.trace_id, Run.system_prompt_id)
        .execution_options(synchronize_session=False))).first()
    if changed is None:
        return False
    if changed.system_prompt_id is not None:  # its prompt version's success rate
        await prompts.record_outcome(session, changed.system_prompt_id, False)
    await session.execute(text(
        "UPDATE run_steps SET status = 'interrupted', finished_at = now(), "
        "error = :reason WHERE run_id = :run_id AND status = 'running'"),
        {"reason": reason, "run_id": run_id})
    await record(session, "agent.run.fail", user_id=changed.user_id, resource_type="run",
                 resource_id=run_id, trace_id=changed.trace_id, success=False,
                 category="error", error_message=reason, metadata=metadata)
    await notify(session, run_id, "end:failed")
    return True


async def get_run(session: AsyncSession, actor: Principal, run_id: uuid.UUID) -> Run:
    run = await session.get(Run, run_id, populate_existing=True)
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    return run


async def list_runs(
    session: AsyncSession, actor: Principal, *, agent_id: uuid.UUID | None = None,
    status: str | None = None, persona_id: uuid.UUID | None = None,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[Run], str | None]:
    """Newest first; the runs row-level security lets the actor see."""
    stmt = where_equal(select(Run), (Run.agent_id, agent_id), (Run.status, status),
                       (Run.persona_id, persona_id))
    return await newest_first(session, stmt, Run.created_at, Run.id, limit=limit, cursor=cursor)


async def list_steps(
    session: AsyncSession, actor: Principal, run_id: uuid.UUID, *, after: int = 0,
) -> list[RunStep]:
    """The run's steps in order (those numbered after ``after``)."""
    await get_run(session, actor, run_id)
    return list((await session.scalars(
        select(RunStep).where(RunStep.run_id == run_id, RunStep.step_number > after)
        .order_by(RunStep.step_number))).all())


def child_trace_prefix(run: Run) -> str:
    """What the trace id of every run started under this one begins with (a workflow's
    agent nodes, an agent run's calls through /mcp)."""
    return f"{run.trace_id}/"


async def cancel_run(session: AsyncSession, actor: Principal, run_id: uuid.UUID) -> Run:
    """Close the run, its open steps and their tool runs in one transaction.  The worker
    executing it sees the run cancelled and stops (within a second).  Only the run's user
    (or an administrator) cancels it: others who see it (the persona's members) get 403.
    A run that finished meanwhile is not turned into a cancelled one (409).  A run takes
    with it, in the same transaction, the unfinished runs of its user under its trace id:
    the agent runs a workflow's agent nodes started, and those an agent run started
    through Roost's own /mcp, at any depth (they would otherwise go on calling the
    model)."""
    run = await get_run(session, actor, run_id)
    cancelled = await _cancel_one(session, actor, run)
    children = (await session.scalars(select(Run.id).where(
        Run.user_id == run.user_id, Run.kind == "agent",
        Run.status.not_in(TERMINAL_RUN_STATUSES),
        Run.trace_id.startswith(child_trace_prefix(run), autoescape=True))
        .order_by(Run.id))).all()
    for child_id in children:
        try:
            await _cancel_one(session, actor, await get_run(session, actor, child_id))
        except RunFinished:  # finished since it was read: nothing to stop
            pass
    return cancelled


async def _cancel_one(session: AsyncSession, actor: Principal, run: Run) -> Run:
    run_id = run.id
    if not actor.is_admin and run.user_id != actor.user_id:
        raise Forbidden("only the user who started this run may cancel it")
    if run.status in TERMINAL_RUN_STATUSES:
        raise RunFinished(f"run {run_id} is already {run.status}")
    now = utcnow()
    closed = await session.scalar(update(Run).where(
        Run.id == run_id, Run.status.not_in(TERMINAL_RUN_STATUSES)).values(
        status="cancelled", stop_reason="cancelled", cancel_requested_at=now, completed_at=now,
        updated_at=now, error_message=None, **totals_from_steps(run_id)).returning(Run.status))
    if closed is None:  # finished (or cancelled) since it was read
        current = await session.scalar(select(Run.status).where(Run.id == run_id)
                                       .execution_options(populate_existing=True))
        raise RunFinished(f"run {run_id} is already {current}")
    # The open steps the runner is not writing right now.  A step row it has locked (its
    # result being recorded) is skipped, not waited for: the runner's transaction goes on
    # to lock the run's row, which this one holds, so waiting would be a deadlock; that
    # transaction then finds the run cancelled and starts no step (workflows lock the
    # run's row first, as this does).
    writable = (select(RunStep.id).where(RunStep.run_id == run_id,
                                        RunStep.status.in_(OPEN_STEP_STATUSES))
                .with_for_update(skip_locked=True).scalar_subquery())
    open_steps = (await session.scalars(
        update(RunStep).where(RunStep.id.in_(writable))
        .values(status="cancelled", finished_at=now, error="cancelled")
        .returning(RunStep.id))).all()
    await session.execute(
        update(ToolRun).where(ToolRun.run_id == run_id, ToolRun.status == "running")
        .values(status="error", error="cancelled with its run", finished_at=now))
    await record(session, "agent.run.cancel", user_id=actor.user_id, resource_type="run",
                 resource_id=run_id, trace_id=run.trace_id,
                 metadata={"open_steps_closed": len(open_steps)})
    await notify(session, run_id, "cancelled")
    return await get_run(session, actor, run_id)
