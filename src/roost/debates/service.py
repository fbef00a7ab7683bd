"""Debates: create one (enqueued on the task queue as ``debates.run``), list, read with its
turns and ballots, cancel.  What runs a debate is :mod:`roost.debates.runner`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.catalog import get_agent, require_runnable
from roost.audit.service import record
from roost.db.base import utcnow, uuid7
from roost.debates.models import TERMINAL_STATUSES, DebateBallot, DebateSession, DebateTurn
from roost.debates.schemas import BallotOut, DebateCreate, DebateDetail, DebateOut, TurnOut
from roost.errors import Conflict, Forbidden, NotFound
from roost.identity.common import require_user
from roost.pagination import DEFAULT_LIMIT, newest_first, where_equal
from roost.principal import Principal
from roost.tasks.service import enqueue

RUN_TASK: Final = "debates.run"
RESOURCE: Final = "debate"


class DebateFinished(Conflict):
    title, type_slug = "Debate already finished", "debate-finished"


def resolve_participants(body: DebateCreate,
                         agents: dict[uuid.UUID, Any]) -> list[dict[str, Any]]:
    """The participants as stored: each with its position (given, or round-robin over the
    positions in order) and weight; an agent's with its preferred model and provider."""
    out: list[dict[str, Any]] = []
    for i, p in enumerate(body.participants):
        item: dict[str, Any] = {"id": p.id, "position": p.position or
                                body.positions[i % len(body.positions)], "weight": p.weight}
        if p.agent_id is not None:
            agent = agents[p.agent_id]
            item.update(agent_id=str(agent.id), model=agent.preferred_model,
                        provider=agent.preferred_provider)
        else:
            item.update(model=p.model, provider=p.provider)
        out.append(item)
    return out


async def create_debate(session: AsyncSession, actor: Principal,
                        body: DebateCreate) -> DebateSession:
    """A pending debate and its job, in the caller's transaction.  Agents must be ones
    the actor can see (else 404), run (a persona's: its members; else 403) and active
    (else 409)."""
    require_user(actor, "debates")
    # The debate's job acts for its owner, never as an administrator (as workflow runs
    # do): an agent is checked in the scope its turns will run in, not refused by the
    # worker later.
    owner = replace(actor, is_admin=False)
    agents: dict[uuid.UUID, Any] = {}
    for p in body.participants:
        if p.agent_id is not None and p.agent_id not in agents:
            agent = await get_agent(session, actor, p.agent_id)
            if actor.is_admin:
                try:
                    await get_agent(session, owner, p.agent_id)
                except NotFound:
                    raise Forbidden(
                        f"agent {p.agent_id} is another user's private agent: a debate acts "
                        "for you, not as an administrator, so it may use only agents you "
                        "may run as a user", extra={"agent_id": str(p.agent_id)}) from None
            agents[p.agent_id] = await require_runnable(session, owner, agent)
    debate = DebateSession(
        id=uuid7(), topic=body.topic, description=body.description, status="pending",
        current_round=0, total_rounds=body.total_rounds, voting_method=body.voting_method,
        positions=list(body.positions), participants=resolve_participants(body, agents),
        meta={}, created_by=actor.user_id, created_at=utcnow())
    session.add(debate)
    await session.flush()
    job = await enqueue(session, RUN_TASK, {"debate_id": str(debate.id)})
    debate.task_id = job.id
    await record(session, "debate.create", user_id=actor.user_id, resource_type=RESOURCE,
                 resource_id=debate.id,
                 metadata={"voting_method": body.voting_method, "rounds": body.total_rounds,
                           "participants": len(body.participants),
                           "positions": len(body.positions), "task_id": str(job.id)})
    await session.flush()
    return debate


async def get_debate(session: AsyncSession, actor: Principal,
                     debate_id: uuid.UUID) -> DebateSession:
    """A debate the actor may see (its owner, administrators), else 404."""
    stmt = select(DebateSession).where(DebateSession.id == debate_id)
    if not actor.is_admin:  # the first wall; row-level security is the second
        stmt = stmt.where(DebateSession.created_by == actor.user_id)
    debate = await session.scalar(stmt.execution_options(populate_existing=True))
    if debate is None:
        raise NotFound(f"debate {debate_id} does not exist")
    return debate


async def list_debates(
    session: AsyncSession, actor: Principal, *, status: str | None = None,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[DebateSession], str | None]:
    """The actor's debates (administrators: everyone's), newest first."""
    stmt = where_equal(select(DebateSession), (DebateSession.status, status))
    if not actor.is_admin:
        stmt = stmt.where(DebateSession.created_by == actor.user_id)
    return await newest_first(session, stmt, DebateSession.created_at, DebateSession.id,
                              limit=limit, cursor=cursor)


async def turns_of(session: AsyncSession, debate_id: uuid.UUID) -> list[DebateTurn]:
    return list((await session.scalars(
        select(DebateTurn).where(DebateTurn.session_id == debate_id)
        .order_by(DebateTurn.turn_number))).all())


async def ballots_of(session: AsyncSession, debate_id: uuid.UUID) -> list[DebateBallot]:
    return list((await session.scalars(
        select(DebateBallot).where(DebateBallot.session_id == debate_id)
        .order_by(DebateBallot.created_at, DebateBallot.id))).all())


@dataclass(frozen=True)
class DebateView:
    debate: DebateSession
    turns: list[DebateTurn]
    ballots: list[DebateBallot]


async def read_debate(session: AsyncSession, actor: Principal,
                      debate_id: uuid.UUID) -> DebateView:
    debate = await get_debate(session, actor, debate_id)
    return DebateView(debate, await turns_of(session, debate_id),
                      await ballots_of(session, debate_id))


async def cancel_debate(session: AsyncSession, actor: Principal,
                        debate_id: uuid.UUID) -> DebateSession:
    """Cancel an unfinished debate; its worker stops before its next model call (the call
    in flight finishes, its turn is not stored)."""
    debate = await get_debate(session, actor, debate_id)
    if debate.status in TERMINAL_STATUSES:
        raise DebateFinished(f"debate {debate_id} is already {debate.status}")
    # Conditional on the debate still being open: the runner's last write (or another
    # cancel) may have finished it since it was read; the row lock orders the two.
    changed = (await session.execute(
        update(DebateSession).where(DebateSession.id == debate_id,
                                    DebateSession.status.notin_(TERMINAL_STATUSES))
        .values(status="cancelled", completed_at=utcnow()).returning(DebateSession.id)
        .execution_options(synchronize_session=False))).first()
    if changed is None:
        debate = await get_debate(session, actor, debate_id)
        raise DebateFinished(f"debate {debate_id} is already {debate.status}")
    await record(session, "debate.cancel", user_id=actor.user_id, resource_type=RESOURCE,
                 resource_id=debate_id, metadata={"was": debate.status})
    return await get_debate(session, actor, debate_id)


def debate_out(debate: DebateSession) -> DebateOut:
    meta = dict(debate.meta or {})
    result = meta.pop("result", None)
    return DebateOut(
        id=debate.id, topic=debate.topic, description=debate.description,
        status=debate.status,  # type: ignore[arg-type]
        current_round=debate.current_round, total_rounds=debate.total_rounds,
        voting_method=debate.voting_method,  # type: ignore[arg-type]
        positions=[str(p) for p in debate.positions], participants=list(debate.participants),
        final_winner=debate.final_winner, result=result, metadata=meta,
        error_message=debate.error_message, created_by=debate.created_by,
        task_id=debate.task_id, created_at=debate.created_at, started_at=debate.started_at,
        completed_at=debate.completed_at)


def detail_out(view: DebateView) -> DebateDetail:
    return DebateDetail(
        **debate_out(view.debate).model_dump(),
        turns=[TurnOut.model_validate(t) for t in view.turns],
        ballots=[BallotOut.model_validate(b) for b in view.ballots])
