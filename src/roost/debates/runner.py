"""Running a debate on the task queue (``debates.run``), resumable.

:func:`execute` plays every turn not yet stored, in order: round 1's participants in the
order given, then round 2's, ... (turn ``n`` is round ``(n-1) // P + 1``, participant
``(n-1) % P``).  Each turn is one model call through the LLM gateway
(:mod:`roost.llm.calls`, split lifecycle) that sees the topic, the participant's position
and every earlier turn; the turn row is written in the transaction that records the call,
so a stored turn is never asked again and a call cut off by a crash leaves no turn (it is
asked again on the next attempt).  Then each participant without a ballot ranks the
positions (JSON, validated: junk fails the debate with the reason), and the debate's
voting method decides (:mod:`roost.debates.voting`).

Every write is conditional on the debate still being open, so a cancelled debate stays
cancelled.  A provider failure (5xx) is raised, and the queue retries the job (resuming
from what is stored); an unusable route (unknown model or provider, no provider) or an
invalid ballot fails the debate at once, as does the job's last failed attempt.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import structlog
from sqlalchemy import and_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.catalog import AgentInactive, get_agent, require_runnable
from roost.audit.service import record
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from roost.debates import prompts, voting
from roost.debates.models import DebateBallot, DebateSession, DebateTurn
from roost.debates.service import RESOURCE, ballots_of, turns_of
from roost.errors import Forbidden, NotFound, RoostError
from roost.identity.models import User
from roost.llm import calls
from roost.llm.gateway import LLMGateway
from roost.llm.orchestration import Attempt
from roost.llm.records import CallOutcome
from roost.llm.routing import resolve_route
from roost.llm.types import ChatMessage, ChatRequest
from roost.principal import Principal

log = structlog.get_logger(__name__)

OPEN: Final = ("pending", "active", "voting")
TURN_MAX_TOKENS: Final = 800
BALLOT_MAX_TOKENS: Final = 300  # a ballot's cap before its positions' share
BALLOT_TOKENS_PER_POSITION: Final = 10  # a position's quotes, comma and indentation


def ballot_max_tokens(positions: Sequence[str]) -> int:
    """The ballot's token cap: room for the ranking it asks for, every position written out
    once (about two characters a token, twice what English text takes), so 20 positions of
    255 characters are not cut off mid-JSON."""
    return BALLOT_MAX_TOKENS + sum(len(p) // 2 + BALLOT_TOKENS_PER_POSITION for p in positions)


@dataclass(frozen=True)
class DebateEnv:
    database: Database
    gateway: LLMGateway


class _Cancelled(Exception):  # the debate was cancelled (or finished) meanwhile
    pass


INACTIVE_OWNER: Final = ("the debate's owner is suspended or deactivated: no model is asked "
                         "on the account's behalf")


class _Failed(Exception):  # the debate cannot go on: fail it with this reason
    pass


@dataclass
class _State:
    debate: DebateSession
    principal: Principal
    turns: list[DebateTurn]
    ballots: dict[str, DebateBallot]
    instructions: dict[str, str | None] = field(default_factory=dict)
    # why an agent participant can no longer be run by the owner (deleted, made private,
    # deactivated, its persona left): the debate fails
    unavailable_agents: list[str] = field(default_factory=list)
    owner_active: bool = True  # the owner's account, when the debate was loaded

    @property
    def participants(self) -> list[dict[str, Any]]:
        return list(self.debate.participants)

    @property
    def positions(self) -> list[str]:
        return [str(p) for p in self.debate.positions]

    def seen(self) -> list[prompts.SeenTurn]:
        return [prompts.SeenTurn(t.round_number, t.participant_id, t.position, t.content)
                for t in self.turns]


def schedule(participants: int, rounds: int) -> list[tuple[int, int, int]]:
    """(turn number, round, participant index) of every turn, in order."""
    return [((r - 1) * participants + i + 1, r, i)
            for r in range(1, rounds + 1) for i in range(participants)]


async def _load(env: DebateEnv, debate_id: uuid.UUID) -> _State | None:
    """The debate and its stored turns and ballots (as the system: the debate's row decides
    whose scope the rest runs in), and its agents' instructions (as the owner)."""
    async with env.database.transaction() as session:
        debate = await session.get(DebateSession, debate_id)
        if debate is None:
            return None
        turns = await turns_of(session, debate_id)
        ballots = {b.participant_id: b for b in await ballots_of(session, debate_id)}
        active = await session.scalar(select(and_(User.status == "active", User.is_active))
                                      .where(User.id == debate.created_by))
    principal = Principal(user_id=debate.created_by, is_admin=False, kind="job")
    state = _State(debate=debate, principal=principal, turns=turns, ballots=ballots,
                   owner_active=bool(active))
    await _load_agents(env, state)
    return state


async def _load_agents(env: DebateEnv, state: _State) -> None:
    """Each agent participant's instructions, when the owner may still run its agent: the
    checks of :func:`~roost.debates.service.create_debate` again, in the owner's scope (row
    level security), since the agent may have been deleted, made private or deactivated,
    or the owner removed from its persona while the debate waited or between attempts."""
    async with env.gateway.transaction(state.principal) as session:
        for p in state.participants:
            if not p.get("agent_id"):
                continue
            pid = str(p["id"])
            try:
                agent = await require_runnable(session, state.principal, await get_agent(
                    session, state.principal, uuid.UUID(str(p["agent_id"]))))
            except (NotFound, Forbidden, AgentInactive) as exc:
                state.unavailable_agents.append(
                    f"the agent of participant {pid!r} is no longer available to the "
                    f"debate's owner: {exc.detail}")
            else:
                state.instructions[pid] = agent.system_prompt


async def _status_now(env: DebateEnv, debate_id: uuid.UUID) -> str:
    """The debate's committed status ("cancelled" when it is gone)."""
    async with env.database.transaction() as session:
        found = await session.scalar(
            select(DebateSession.status).where(DebateSession.id == debate_id))
    return str(found) if found is not None else "cancelled"


async def _claim(session: AsyncSession, debate_id: uuid.UUID, **values: Any) -> None:
    """The debate is still open: set ``values``; else :class:`_Cancelled`.  The row lock
    orders this write against a concurrent cancel."""
    changed = (await session.execute(
        update(DebateSession).where(DebateSession.id == debate_id,
                                    DebateSession.status.in_(OPEN))
        .values(**values).returning(DebateSession.id)
        .execution_options(synchronize_session=False))).first()
    if changed is None:
        raise _Cancelled


async def _call(env: DebateEnv, state: _State, participant: dict[str, Any], chat: ChatRequest,
                *, request_type: str, claim: dict[str, Any],
                on_success: Callable[[AsyncSession, CallOutcome], Awaitable[Any]],
                on_failure: Callable[[AsyncSession, str, Sequence[Attempt]], Awaitable[None]],
                ) -> Any:
    """One recorded model call for ``participant``: routed to its model (and provider),
    the pending request stored with the debate's claim, then run."""
    model = participant.get("model") or None
    provider = participant.get("provider") or None
    try:
        async with env.gateway.transaction(state.principal) as session:
            await _claim(session, state.debate.id, **claim)
            route = await resolve_route(session, env.gateway, model)
            if provider is not None:
                route.members = [m for m in route.members
                                 if m[0].name.lower() == str(provider).lower()]
                if not route.members:
                    raise _Failed(f"participant {participant['id']!r}: provider {provider!r} "
                                  f"is unknown, disabled or does not serve "
                                  f"{model or 'a default model'}")
            call = await calls.add_request(session, env.gateway, state.principal, chat, route,
                                           request_type=request_type, running=True)
    except RoostError as exc:  # routing: unknown model, no provider
        raise _Failed(f"participant {participant['id']!r}: {exc.detail}") from None
    try:
        return await calls.run(env.gateway, call, on_success=on_success, on_failure=on_failure)
    except RoostError as exc:
        if exc.status >= 500:
            raise  # the provider failed: the queue retries the job, which resumes here
        raise _Failed(f"participant {participant['id']!r}: the model call failed: "
                      f"{exc.detail}") from None


def _text(outcome: CallOutcome) -> str:
    """The model's answer without NUL characters: PostgreSQL's text and jsonb cannot store
    U+0000, and asking again (the job's retries) would not help."""
    return (outcome.result.content or "").replace("\x00", "")


def _raw(outcome: CallOutcome) -> dict[str, Any]:
    r = outcome.result
    return {"model": r.model, "provider": outcome.winner.name, "finish_reason": r.finish_reason,
            "tokens_in": r.tokens_in, "tokens_out": r.tokens_out,
            "request_id": str(outcome.request_id)}


async def _turn(env: DebateEnv, state: _State, number: int, round_number: int,
                participant: dict[str, Any]) -> None:
    debate = state.debate
    pid, position = str(participant["id"]), str(participant["position"])
    chat = ChatRequest(max_tokens=TURN_MAX_TOKENS, messages=[
        ChatMessage(role="system", content=prompts.system_prompt(
            pid, state.instructions.get(pid), judging=False)),
        ChatMessage(role="user", content=prompts.turn_prompt(
            debate.topic, debate.description, state.positions, position=position,
            round_number=round_number, total_rounds=debate.total_rounds,
            turns=state.seen()))])

    async def save(session: AsyncSession, outcome: CallOutcome) -> DebateTurn | None:
        try:
            await _claim(session, debate.id, current_round=round_number)
        except _Cancelled:
            return None  # cancelled meanwhile: the call is recorded, no turn
        content = _text(outcome)
        raw = _raw(outcome)
        if len(content) > prompts.MAX_TURN_CHARS:
            raw["truncated_from"] = len(content)  # characters the model answered
        row = (await session.execute(
            pg_insert(DebateTurn).values(
                id=uuid7(), session_id=debate.id, round_number=round_number, turn_number=number,
                participant_id=pid, position=position,
                content=content[:prompts.MAX_TURN_CHARS],
                raw_response=raw, tokens_used=outcome.result.tokens_total,
                response_time=outcome.latency_ms,
                confidence=Decimal(str(round(prompts.turn_confidence(content), 4))),
                llm_request_id=outcome.request_id, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["session_id", "turn_number"])
            .returning(DebateTurn))).scalar_one_or_none()
        if row is None:
            # Another attempt of the job (one whose lease was taken over, until its next
            # heartbeat stops it) stored this turn first: it is the turn, recorded once;
            # this attempt goes on with it (it read as a cancel, and its job ended with
            # the debate still open).
            return (await session.scalars(select(DebateTurn).where(
                DebateTurn.session_id == debate.id, DebateTurn.turn_number == number))).one()
        await record(session, "debate.turn", user_id=debate.created_by, resource_type=RESOURCE,
                     resource_id=debate.id,
                     metadata={"turn": number, "round": round_number, "participant": pid,
                               "llm_request_id": str(outcome.request_id)})
        return row

    async def failed(session: AsyncSession, message: str, attempts: Sequence[Attempt]) -> None:
        await record(session, "debate.turn.fail", user_id=debate.created_by, category="error",
                     resource_type=RESOURCE, resource_id=debate.id, success=False,
                     error_message=message[:1000],
                     metadata={"turn": number, "round": round_number, "participant": pid})

    row = await _call(env, state, participant, chat, request_type="debate_turn",
                      claim={"status": "active", "current_round": round_number},
                      on_success=save, on_failure=failed)
    if row is None:
        raise _Cancelled
    state.turns.append(row)


async def _ballot(env: DebateEnv, state: _State, participant: dict[str, Any]) -> None:
    debate = state.debate
    pid = str(participant["id"])
    chat = ChatRequest(max_tokens=ballot_max_tokens(state.positions), temperature=0,
                       extra={"response_format": {"type": "json_object"}}, messages=[
        ChatMessage(role="system", content=prompts.system_prompt(
            pid, state.instructions.get(pid), judging=True)),
        ChatMessage(role="user", content=prompts.ballot_prompt(
            debate.topic, debate.description, state.positions, turns=state.seen()))])

    async def save(session: AsyncSession,
                   outcome: CallOutcome) -> DebateBallot | str | None:
        try:
            ranking, confidence = prompts.parse_ballot(_text(outcome), state.positions)
        except prompts.BallotError as exc:
            await record(session, "debate.ballot.invalid", user_id=debate.created_by,
                         category="error", resource_type=RESOURCE, resource_id=debate.id,
                         success=False, error_message=str(exc),
                         metadata={"participant": pid,
                                   "llm_request_id": str(outcome.request_id)})
            return f"{exc} (LLM request {outcome.request_id})"
        try:
            await _claim(session, debate.id, status="voting")
        except _Cancelled:
            return None
        row = (await session.execute(
            pg_insert(DebateBallot).values(
                id=uuid7(), session_id=debate.id, participant_id=pid, ranking=ranking,
                weight=Decimal(str(participant.get("weight", 1))),
                confidence=Decimal(str(round(confidence, 4))), raw_response={
                    **_raw(outcome), "content": _text(outcome)[:4000]},
                tokens_used=outcome.result.tokens_total, llm_request_id=outcome.request_id,
                created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["session_id", "participant_id"])
            .returning(DebateBallot))).scalar_one_or_none()
        if row is None:  # stored first by another attempt of the job, as a turn can be
            return (await session.scalars(select(DebateBallot).where(
                DebateBallot.session_id == debate.id,
                DebateBallot.participant_id == pid))).one()
        await record(session, "debate.ballot", user_id=debate.created_by,
                     resource_type=RESOURCE, resource_id=debate.id,
                     metadata={"participant": pid, "ranking": ranking,
                               "llm_request_id": str(outcome.request_id)})
        return row

    async def failed(session: AsyncSession, message: str, attempts: Sequence[Attempt]) -> None:
        await record(session, "debate.ballot.fail", user_id=debate.created_by, category="error",
                     resource_type=RESOURCE, resource_id=debate.id, success=False,
                     error_message=message[:1000], metadata={"participant": pid})

    row = await _call(env, state, participant, chat, request_type="debate_ballot",
                      claim={"status": "voting"}, on_success=save, on_failure=failed)
    if isinstance(row, str):
        raise _Failed(f"the ballot of participant {pid!r} is not valid: {row}")
    if row is None:
        raise _Cancelled
    state.ballots[pid] = row


async def _decide(env: DebateEnv, state: _State) -> str:
    debate = state.debate
    ballots = [voting.Ballot(voter=b.participant_id, ranking=tuple(str(r) for r in b.ranking),
                             weight=b.weight)
               for b in (state.ballots[str(p["id"])] for p in state.participants)]
    try:
        result = voting.tally(debate.voting_method, state.positions, ballots)
    except voting.VotingError as exc:
        raise _Failed(f"the votes cannot be counted: {exc}") from None
    tallied = result.as_json()
    async with env.gateway.transaction(state.principal) as session:
        await _claim(session, debate.id, status="completed", final_winner=result.winner,
                     meta={**(debate.meta or {}), "result": tallied}, completed_at=utcnow(),
                     error_message=None)
        await record(session, "debate.complete", user_id=debate.created_by,
                     resource_type=RESOURCE, resource_id=debate.id,
                     metadata={"winner": result.winner, "method": result.method,
                               "tied": list(result.tied),
                               "no_condorcet_winner": result.no_condorcet_winner})
    return "completed"


async def fail_debate(database: Database, debate_id: uuid.UUID, reason: str) -> bool:
    """Fail an unfinished debate (as the system); true when it changed."""
    async with database.transaction() as session:
        changed = (await session.execute(
            update(DebateSession).where(DebateSession.id == debate_id,
                                        DebateSession.status.in_(OPEN))
            .values(status="failed", error_message=reason[:4000], completed_at=utcnow())
            .returning(DebateSession.created_by))).first()
        if changed is None:
            return False
        await record(session, "debate.fail", user_id=changed.created_by, category="error",
                     resource_type=RESOURCE, resource_id=debate_id, success=False,
                     error_message=reason[:1000])
    return True


async def execute(env: DebateEnv, debate_id: uuid.UUID) -> str:
    """Run (or resume) the debate to a terminal state; returns that state.  Provider
    failures propagate, so the queue retries the job (which resumes from what is stored)."""
    state = await _load(env, debate_id)
    if state is None:
        return "missing"
    debate = state.debate
    if debate.status not in OPEN:
        return debate.status
    participants = state.participants
    try:
        async with env.database.transaction() as session:
            await _claim(session, debate_id, started_at=debate.started_at or utcnow())
        if not state.owner_active:  # suspended or deactivated since it was queued
            raise _Failed(INACTIVE_OWNER)
        if state.unavailable_agents:
            raise _Failed("; ".join(state.unavailable_agents))
        stored = {t.turn_number for t in state.turns}
        for number, round_number, index in schedule(len(participants), debate.total_rounds):
            if number not in stored:
                await _turn(env, state, number, round_number, participants[index])
        for participant in participants:
            if str(participant["id"]) not in state.ballots:
                await _ballot(env, state, participant)
        outcome = await _decide(env, state)
    except _Cancelled:
        # Closed meanwhile: cancelled, or finished by another attempt of the job (one
        # whose lease was taken over): the debate's own status says which.
        outcome = await _status_now(env, debate_id)
    except _Failed as exc:
        outcome = "failed" if await fail_debate(env.database, debate_id, str(exc)) else "cancelled"
    log.info("debates.finished", debate_id=str(debate_id), outcome=outcome,
             turns=len(state.turns), ballots=len(state.ballots))
    return outcome
