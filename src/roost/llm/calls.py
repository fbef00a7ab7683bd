"""Calling a model: the one lifecycle every recorded LLM call goes through.

No database transaction stays open while a provider works.  A call is three short
transactions:

1. **pending**: the ``llm_requests`` row is stored (:func:`begin`, or
   :func:`add_request` inside the caller's own transaction when the caller must keep
   something whatever happens, as chat keeps the user's message), and committed;
2. **running**: :func:`run` / :func:`open_stream` mark it so just before the first
   provider is asked, then execute it (fallback chain or ensemble);
3. **completed** or **failed**: one ``llm_responses`` row per attempt, the
   ``usage_records`` row, the request's final status and, through the caller's hook, the
   caller's own rows.  This write is shielded: a cancelled caller (a client that went
   away, a job timeout) still leaves the request ``failed`` with its reason.

Hooks run inside the final transaction, after the call's records: ``on_success(session,
outcome)`` returns what :func:`run` returns; ``on_failure(session, message, attempts)``.
Without a hook the call audits ``llm.request.complete`` / ``llm.request.fail`` itself;
with one, the hook audits that outcome in the domain's own terms.  See docs/chat.md,
"Calling a model from a domain".
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

import anyio
import structlog
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost import tracing
from roost.analytics.streaming import StreamMeter
from roost.audit import service as audit
from roost.billing import credits, limits
from roost.billing.credits import Payer, Reservation
from roost.db.errors import RETRYABLE_SQLSTATES
from roost.db.errors import sqlstate as sqlstate_of
from roost.db.statements import flush_pending, insert_row, with_defaults
from roost.db.transaction import driver_fetch
from roost.errors import Conflict, ServiceUnavailable
from roost.identity.tenancy import scope_settings
from roost.llm.base import elapsed_ms
from roost.llm.errors import GatewayFailed, ProviderError
from roost.llm.execution import CallStream, execute, execute_embedding
from roost.llm.gateway import LLMGateway
from roost.llm.models import LLMRequest
from roost.llm.orchestration import Attempt
from roost.llm.records import (
    REQUEST_RESOURCE,
    CallOutcome,
    billed_tokens,
    counts_only,
    mark_running,
    partial_credits,
    public_error,
    record_failure,
    record_success,
    record_usage_alone,
    request_values,
)
from roost.llm.routing import Route, resolve_route
from roost.llm.schemas import EnsembleSpec
from roost.llm.types import ChatChunk, ChatMessage, ChatRequest, ChatResult, fill_missing_usage
from roost.principal import Principal

T = TypeVar("T")
log = structlog.get_logger(__name__)

SuccessHook = Callable[[AsyncSession, CallOutcome], Awaitable[T]]
FailureHook = Callable[[AsyncSession, str, Sequence[Attempt]], Awaitable[None]]


_background: set[asyncio.Task[Any]] = set()


def _span(call: PendingCall, *, current: bool, operation: str = "chat") -> tracing.SpanHandle:
    """The call's span (GenAI attribute names): current for a whole call, not current for
    a stream (opened and closed in different functions)."""
    if not tracing.enabled():
        return tracing.NOOP
    attributes: dict[str, tracing.AttributeValue] = {
        "gen_ai.operation.name": operation, "gen_ai.request.model": call.route.model,
        "roost.llm.request_id": str(call.request_id), "roost.llm.request_type": call.request_type,
        "roost.llm.mode": call.route.mode,
        "roost.run.id": str(call.run_id) if call.run_id else None}
    name = f"{operation} {call.route.model}" if call.route.model else operation
    if current:
        return tracing.span(name, kind="client", attributes=attributes)
    return tracing.start(name, kind="client", attributes=attributes)


def _annotate(span: tracing.SpanHandle, outcome: CallOutcome) -> None:
    """What the provider answered: who, which model, how many tokens."""
    if span.recording:
        result = outcome.result
        span.update({"gen_ai.provider.name": outcome.winner.type or outcome.winner.name,
                     "roost.llm.provider": outcome.winner.name,
                     "gen_ai.response.model": result.model,
                     "gen_ai.usage.input_tokens": result.tokens_in,
                     "gen_ai.usage.output_tokens": result.tokens_out,
                     "roost.llm.attempts": len(outcome.attempts)})


async def shielded(coro: Awaitable[T]) -> T:
    """Finish a database write even if the caller is being cancelled (client went away)."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    with anyio.CancelScope(shield=True):
        await asyncio.shield(task)
    return task.result()


@dataclass(frozen=True)
class PendingCall:
    """A stored ``pending`` request, ready to run."""

    request_id: uuid.UUID
    principal: Principal  # whose records these are (and whose row-level security applies)
    route: Route
    chat: ChatRequest
    request_type: str
    session_id: uuid.UUID | None = None  # the chat session, when there is one
    running: bool = False  # stored as running already: no separate mark_running
    run_id: uuid.UUID | None = None  # the agent run it is a step of (its usage row says so)
    agent_id: uuid.UUID | None = None
    reservation: Reservation | None = None  # the credits held for it (roost.billing)


async def add_request(
    session: AsyncSession, gateway: LLMGateway, principal: Principal, chat: ChatRequest,
    route: Route, *, request_type: str, session_id: uuid.UUID | None = None,
    running: bool = False, run_id: uuid.UUID | None = None, agent_id: uuid.UUID | None = None,
    request_id: uuid.UUID | None = None,
) -> PendingCall:
    """Step 1 inside the caller's transaction (the caller audits it with its own rows).
    ``request_id``: the id the new row gets (a caller that has referred to it already).
    ``running``: the call starts as soon as this transaction commits, so the request is
    stored as running (one transaction less).  The row is written at once by a prebuilt
    insert (what the caller added before is flushed first: the row may refer to it).

    A metered user's call first holds its estimated credits (roost.billing.credits): 402
    when the balance cannot cover it, 403 when the plan does not include the model.  The
    hold is a statement of its own on the side pool, committed at once, so the payer's
    row is locked for that statement, not until this transaction's durable commit
    (docs/billing.md, "A model call's hold"); it is given back if this transaction does
    not commit, and settled by the call's final one."""
    call, values = await prepare_request(
        session, gateway, principal, chat, route, request_type=request_type,
        session_id=session_id, running=running, run_id=run_id, agent_id=agent_id,
        request_id=request_id)
    await flush_pending(session)
    await insert_row(session, LLMRequest, values)
    return call


async def prepare_request(
    session: AsyncSession, gateway: LLMGateway, principal: Principal, chat: ChatRequest,
    route: Route, *, request_type: str, session_id: uuid.UUID | None = None,
    running: bool = False, run_id: uuid.UUID | None = None, agent_id: uuid.UUID | None = None,
    request_id: uuid.UUID | None = None,
) -> tuple[PendingCall, dict[str, Any]]:
    """:func:`add_request` without writing the row: the credits held as it holds them,
    and the ``llm_requests`` row's values (every column, defaults filled in), for a caller
    that writes the row in a statement of its own (the agent runner: with its step, one
    round trip).  A caller that then writes no row gives the hold back with
    :func:`give_back` (a rollback of ``session``'s transaction does it by itself)."""
    reservation, route = await _hold_credits(session, gateway, principal, chat, route,
                                             request_type)
    values = with_defaults(LLMRequest, request_values(
        gateway, principal, chat, route, request_type=request_type, session_id=session_id,
        running=running))
    if request_id is not None:
        values["id"] = request_id
    return PendingCall(request_id=values["id"], principal=principal, route=route, chat=chat,
                       request_type=request_type, session_id=session_id, running=running,
                       run_id=run_id, agent_id=agent_id, reservation=reservation), values


async def give_back(gateway: LLMGateway, call: PendingCall) -> None:
    """The credits held for a call whose request was never written (a transaction that
    committed without it)."""
    if call.reservation is not None:
        await credits.release_alone(
            gateway.db, scope_settings(call.principal, app_role=gateway.settings.db_app_role),
            call.reservation)


async def _hold_credits(
    session: AsyncSession, gateway: LLMGateway, principal: Principal, chat: ChatRequest,
    route: Route, request_type: str,
) -> tuple[Reservation | None, Route]:
    """The payer found and the estimate held in one round trip of its own
    (credits.reserve_alone on the side pool: ``session``'s connection stays in its
    transaction meanwhile); the plan's models checked on the payer it found (403 before
    the balance's 402, the hold given back first).  Given back in the background if
    ``session``'s transaction rolls back (the request it would pay for is not stored).
    Returns the hold and the route to call: for a call that names no model, without the
    providers whose default model the plan excludes (:func:`limits.allowed_defaults`)."""
    if principal.user_id is None:
        return None, route
    settings = gateway.settings
    texts = [m.text() for m in chat.messages]
    # An ensemble asks every member, and each answer is billed (records.billed_tokens).
    asked = len(route.members) if route.mode == "ensemble" else 1
    estimate = credits.estimate_tokens(settings, texts, chat.max_tokens) * max(1, asked)
    allowed = route

    def check(payer: Payer) -> None:
        nonlocal allowed
        if route.model is not None:
            limits.check_model(payer, route.model)
            return
        # Each provider answers with its default model: the plan's own are asked only.
        allowed = route.narrowed(limits.allowed_defaults(
            payer, [provider.default_model for _, provider in route.members]))

    amount = credits.credits_for_tokens(settings, estimate)
    if amount == 0:
        # Free model calls (a rate of 0) hold nothing, as a free tool call does, but are
        # refused as any charge is: no subscription when one is required, a paused one;
        # and the plan's models still apply.  (A hold is at least one credit: a balance
        # of 0 refused a call that costs nothing.)
        payer = await credits.require_payer(session, settings, principal.user_id)
        if payer is not None:
            check(payer)
        return None, allowed
    reservation = await credits.hold_beside(
        session, gateway.db, settings, scope_settings(principal, app_role=settings.db_app_role),
        principal.user_id, amount, kind="llm", reference=request_type, check=check)
    return reservation, allowed


async def begin(
    gateway: LLMGateway, principal: Principal, chat: ChatRequest, *, model: str | None,
    request_type: str, ensemble_spec: EnsembleSpec | None = None,
) -> PendingCall:
    """Step 1 in a transaction of its own: route (404/409, for embeddings a 400 for a model
    without an embeddings API, before anything is stored), the
    ``pending`` request, audited ``llm.request.create``."""
    async with gateway.transaction(principal) as session:
        route = await resolve_route(session, gateway, model, ensemble_spec,
                                    embeddings=request_type == "embedding")
        call = await add_request(session, gateway, principal, chat, route,
                                 request_type=request_type)
        await audit.record(
            session, "llm.request.create", user_id=principal.user_id,
            resource_type=REQUEST_RESOURCE, resource_id=call.request_id,
            metadata={"model": model, "type": request_type, "mode": route.mode,
                      "providers": [ref.name for ref in call.route.refs()]},
        )
    return call


async def _store_failure(
    gateway: LLMGateway, call: PendingCall, error: BaseException, attempts: Sequence[Attempt],
    latency_ms: int, on_failure: FailureHook | None, partial: ChatResult | None = None,
    delivered: bool = True,
) -> None:
    async with gateway.transaction(call.principal) as session:
        message = await record_failure(
            session, gateway, call.principal, call.request_id, error, attempts,
            request_type=call.request_type, model=call.route.model, latency_ms=latency_ms,
            session_id=call.session_id, run_id=call.run_id, agent_id=call.agent_id,
            audit_action=None if on_failure is not None else "llm.request.fail",
            reservation=call.reservation, partial=partial, delivered=delivered,
        )
        if on_failure is not None:
            await on_failure(session, message, attempts)
        if call.reservation is not None:  # last: see _store_success
            used = partial_credits(gateway, partial, delivered=delivered)
            if used:  # the tokens the caller received are paid for
                await credits.settle(session, call.reservation, used)
            else:
                await credits.release(session, call.reservation)


def _delivered(stream: CallStream) -> ChatResult | None:
    """What a stream that broke off (the client went away, the provider failed mid-way)
    had delivered, its token counts the provider's when it sent them, else estimated as
    for any answer without usage (``fill_missing_usage``); None when no text or tool call
    was delivered (nothing to pay)."""
    result = stream.accumulator.result(latency_ms=stream.latency_ms())
    if not (result.content or result.tool_calls):
        return None
    return fill_missing_usage(result, stream.request)


def _bill_attempt(attempts: Sequence[Attempt], partial: ChatResult | None) -> None:
    """The answering attempt of a stream that broke off, with the token counts its call
    is billed (``partial``'s, estimated ones marked as such): its ``llm_responses`` row
    must agree with the usage row, not show the zeros of a provider that sent no usage
    before the break."""
    if partial is None:
        return
    for attempt in attempts:
        if not attempt.selected:
            continue
        if attempt.result is None:  # its stream not closed yet: what it delivered
            attempt.result = partial.model_copy()
            continue
        attempt.result.tokens_in, attempt.result.tokens_out = (
            partial.tokens_in, partial.tokens_out)
        if "usage_estimated" in partial.raw:
            attempt.result.raw = {**attempt.result.raw,
                                  "usage_estimated": partial.raw["usage_estimated"]}


async def close_unasked(gateway: LLMGateway, call: PendingCall, error: BaseException,
                        on_failure: FailureHook | None = None) -> None:
    """A prepared call that was never made (its caller stopped first: out of time,
    cancelled): its request recorded failed with ``error`` and its credits given back,
    as a call that fails to start is; shielded from the caller's cancellation."""
    await shielded(_record_failure(gateway, call, error, [], 0, on_failure))


async def _record_failure(
    gateway: LLMGateway, call: PendingCall, error: BaseException, attempts: Sequence[Attempt],
    latency_ms: int, on_failure: FailureHook | None, partial: ChatResult | None = None,
    delivered: bool = True,
) -> None:
    """:func:`_store_failure`, never raising an error of its own over ``error`` (which the
    caller raises next): when the failure cannot be recorded (its request was deleted
    meanwhile, with its user or chat session, so a foreign key refuses its responses; a
    lost connection; a hook's refusal), a warning is logged, the call's usage row is
    written alone (the ledger outlives the request: the tokens of ``partial``, what the
    call produced) and the credits held are settled for what it bills (``partial`` when
    ``delivered``) or given back (else the sweeper frees them).  When the database
    refused a value of an attempt (SQLSTATE class 22: something a provider answered),
    the failure is recorded once more without the attempts' rows (and of ``partial``
    only its token counts), so the request does not stay ``running``; when the
    attempts' provider was deleted meanwhile, once more with attempts that no longer
    name it (:func:`_provider_gone`)."""
    try:
        await _store_failure(gateway, call, error, attempts, latency_ms, on_failure, partial,
                             delivered)
        return
    except Exception as again:
        log.warning("llm_call_unrecorded", request_id=str(call.request_id),
                    error=type(again).__name__, sqlstate=sqlstate_of(again),
                    cause=type(error).__name__)
        refused = (sqlstate_of(again) or "").startswith("22")
        gone = _provider_gone(again)
    if refused:  # the refused value may be the answer's own: its token counts are kept
        partial = counts_only(partial)
    if (refused or gone) and attempts:
        try:  # a deleted provider's attempts are kept, their link to it dropped
            await _store_failure(gateway, call, error, [] if refused else _unlinked(attempts),
                                 latency_ms, on_failure, partial, delivered)
            return
        except Exception as still:
            log.warning("llm_call_unrecorded", request_id=str(call.request_id),
                        error=type(still).__name__, sqlstate=sqlstate_of(still),
                        cause=type(error).__name__, attempts=False)
    used = partial_credits(gateway, partial, delivered=delivered)
    settled = False
    try:  # the usage row alone, and the hold settled for what it bills
        async with gateway.transaction(call.principal) as session:
            await record_usage_alone(
                session, gateway, call.principal, call.request_id,
                request_type=call.request_type, model=call.route.model, latency_ms=latency_ms,
                session_id=call.session_id, run_id=call.run_id, agent_id=call.agent_id,
                reservation=call.reservation, partial=partial, delivered=delivered)
            if used and call.reservation is not None:
                # A savepoint: a hold gone with its user's subscription cannot be charged,
                # and the usage row stays all the same.
                with suppress(Exception):
                    async with session.begin_nested():
                        await credits.settle(session, call.reservation, used)
                    settled = True
    except Exception as lost:
        settled = False  # its commit failed: the settlement with it
        log.warning("llm_usage_unrecorded", request_id=str(call.request_id),
                    error=type(lost).__name__)
    if not settled:
        with suppress(Exception):  # else the sweeper frees it
            await give_back(gateway, call)


def _produced(outcome: CallOutcome) -> ChatResult:
    """A call's answer that could not be stored, as a failure's ``partial``: with the
    tokens the call is billed for (an ensemble's other answers' too: ``billed_tokens``)."""
    tokens_in, tokens_out = billed_tokens(outcome)
    return outcome.result.model_copy(update={"tokens_in": tokens_in, "tokens_out": tokens_out})


async def _store_outcome(
    gateway: LLMGateway, call: PendingCall, outcome: CallOutcome,
    on_success: SuccessHook[Any] | None, meter: StreamMeter | None = None, *,
    delivered: bool = False,
) -> Any:
    """:func:`_store_success`; when its transaction fails (a lock wait past the statement
    timeout, a hook's refusal, a lost connection), the call is recorded failed in one of
    its own, without the hook (which may be what failed), so the request does not stay
    ``running`` and its credits are given back unless the caller received the answer
    (below); the error is raised either way.  An answer whose provider was deleted while it answered is kept,
    its attempts no longer naming the provider (:func:`_provider_gone`).

    The failure's usage row keeps the tokens the provider reported (:func:`_produced`);
    they are paid for when the caller received the answer (``delivered``: a stream's
    deltas were sent already; a stream cut by the deletion of its chat session must not
    be free), not otherwise (a non-streamed caller gets the error, not the answer)."""
    try:
        return await _store_success(gateway, call, outcome, on_success, meter)
    except Exception as first:
        exc = first
    if _provider_gone(exc):
        outcome.attempts = _unlinked(outcome.attempts)
        try:
            return await _store_success(gateway, call, outcome, on_success, meter)
        except Exception as again:
            exc = again
    state = sqlstate_of(exc)
    refused: GatewayFailed | None = None
    if state is not None and state.startswith("22"):  # a value the database refuses:
        # what the provider answered (the caller's request was stored already)
        refused = GatewayFailed(
            f"the provider's answer could not be stored (a value the database refuses, "
            f"SQLSTATE {state}): the answer was not kept", timeout=False,
            kind="bad_response")
    # Its request may be gone too (a chat session deleted): then logged, its usage
    # row written alone.
    await _record_failure(gateway, call, refused or exc, outcome.attempts,
                          outcome.latency_ms, None, _produced(outcome), delivered)
    if refused is not None:
        raise refused from exc
    # As the caller's answer (a stream ends with an error frame, not a broken body).
    if state == "23503":  # what the answer was for was deleted meanwhile
        raise Conflict("what this answer was for (its chat session, run or request) was "
                       "deleted while it was being stored: the answer was not kept") from exc
    if state in RETRYABLE_SQLSTATES:  # a deadlock or conflict: in practice with a
        # deletion of what it was for (a chat session's cascade locks its requests)
        raise Conflict("the answer could not be stored: it collided with a concurrent "
                       "change of what it was for (its chat session deleted?)") from exc
    if state == "57014":  # the statement timeout: nothing of the final transaction stands
        raise ServiceUnavailable("the answer could not be stored in time; try again") \
            from exc
    raise exc


# The foreign key of an attempt's row (llm_responses) to its provider.
_PROVIDER_FK = "fk_llm_responses_provider_id_llm_providers"


def _provider_gone(exc: BaseException) -> bool:
    """The database refused an attempt's row: its provider was deleted (by an
    administrator) while the call ran.  Not the call's fault: its records are kept."""
    return sqlstate_of(exc) == "23503" and _PROVIDER_FK in str(exc)


def _unlinked(attempts: Sequence[Attempt]) -> list[Attempt]:
    """``attempts`` naming their provider by name only (as the foreign key's ON DELETE
    SET NULL leaves the rows written before the deletion)."""
    return [replace(a, ref=replace(a.ref, id=None)) for a in attempts]


@functools.cache
def _chat_session_lock() -> TextClause:
    return text("SELECT 1 FROM chat_sessions WHERE id = :session_id FOR NO KEY UPDATE")


async def _lock_chat_session(session: AsyncSession, call: PendingCall) -> None:
    """An answer for a chat session locks the session's row before its request's: the
    order the session's deletion takes (its row, then by cascade its requests).  The other
    order (the request's row by the call's records, then the session's by the hook that
    stores the answer) deadlocked with a deletion, which PostgreSQL broke by aborting one
    of the two.  Now the later one waits; an answer whose session is gone is a 409."""
    if call.session_id is None:
        return
    found = await driver_fetch(session, _chat_session_lock(), {"session_id": call.session_id})
    if not found:
        raise Conflict("the chat session this answer was for was deleted while the model "
                       "answered: the answer was not kept")


async def _store_success(
    gateway: LLMGateway, call: PendingCall, outcome: CallOutcome,
    on_success: SuccessHook[Any] | None, meter: StreamMeter | None = None,
) -> Any:
    for attempt in outcome.attempts:  # the other ensemble members' answers are billed too:
        # estimated as the answer's are when their provider sent no usage
        if attempt.ok and attempt.result is not None and attempt.result is not outcome.result:
            fill_missing_usage(attempt.result, call.chat)
    metrics: list[dict[str, Any]] = []
    if meter is not None:  # a streamed answer: its time to first token and chunks
        meter.finish(outcome.result.tokens_out)
        metrics = meter.row_values(str(call.request_id), call.principal.user_id,
                                   outcome.result.model or call.route.model, outcome.winner.name)
    async with gateway.transaction(call.principal) as session:
        await _lock_chat_session(session, call)
        await record_success(
            session, gateway, call.principal, outcome, request_type=call.request_type,
            session_id=call.session_id, run_id=call.run_id, agent_id=call.agent_id,
            audit_action=None if on_success is not None else "llm.request.complete",
            reservation=call.reservation, stream_metrics=metrics,
        )
        outcome.reservation = call.reservation
        answer = outcome if on_success is None else await on_success(session, outcome)
        # The payer's row is locked last.  The hook locks its domain's row (the chat
        # session that stores the answer); a request that locks that row first, then
        # holds credits for its own call on a side connection (the session's next turn),
        # would otherwise wait for this transaction while this one waits for it, a cycle
        # PostgreSQL cannot see (the side connection), until the statement timeout.
        await settle(session, outcome)
        return answer


async def settle(session: AsyncSession, outcome: CallOutcome) -> None:
    """The call's held credits charged with what it used, in its final transaction (once:
    a success hook that holds credits for what comes next calls this first, so its holds
    see the balance after this call; it must then lock nothing a request holding credits
    on a side connection may hold: see :func:`_store_success`)."""
    held, usage = outcome.reservation, outcome.usage
    if held is not None and usage is not None:
        outcome.reservation = None
        await credits.settle(session, held, usage.credits_used)


@overload
async def run(
    gateway: LLMGateway, call: PendingCall, *, on_success: None = None,
    on_failure: FailureHook | None = None,
    execute_with: Callable[[], Awaitable[CallOutcome]] | None = None,
) -> CallOutcome: ...
@overload
async def run(
    gateway: LLMGateway, call: PendingCall, *, on_success: SuccessHook[T],
    on_failure: FailureHook | None = None,
    execute_with: Callable[[], Awaitable[CallOutcome]] | None = None,
) -> T: ...
async def run(
    gateway: LLMGateway, call: PendingCall, *, on_success: SuccessHook[Any] | None = None,
    on_failure: FailureHook | None = None,
    execute_with: Callable[[], Awaitable[CallOutcome]] | None = None,
) -> Any:
    """Steps 2 and 3 of a non-streamed call.  A provider failure is recorded and raised as
    the caller's answer (:func:`~roost.llm.records.public_error`: 502/504, 400, 404);
    cancellation is recorded and re-raised.  ``execute_with`` replaces the chat
    completion (embeddings use it)."""
    with _span(call, current=True,
               operation="embeddings" if call.request_type == "embedding" else "chat") as span:
        if not call.running:
            await mark_running(gateway, call.principal, call.request_id)
        started = time.perf_counter()
        try:
            if execute_with is not None:
                outcome = await execute_with()
            else:
                outcome = await execute(gateway, call.route, call.chat, call.request_id)
        except ProviderError as exc:
            span.set("roost.llm.attempts", len(exc.attempts))
            await shielded(_record_failure(gateway, call, exc, exc.attempts,
                                           elapsed_ms(started), on_failure))
            raise public_error(exc, exc.attempts, call.request_id) from exc
        except BaseException as exc:  # cancelled (client gone, job timeout, shutdown) or a bug
            await shielded(_record_failure(gateway, call, exc, [], elapsed_ms(started),
                                           on_failure))
            raise
        _annotate(span, outcome)
        return await shielded(_store_outcome(gateway, call, outcome, on_success))


class RecordedStream(Generic[T]):
    """A streamed call whose chunks are read inside ``async with``::

        async with stream:
            async for chunk in stream.chunks():
                ...
        stream.saved  # what on_success returned (the CallOutcome without a hook)

    Leaving the block normally records success; an exception records the failure and is
    raised as the caller's answer (a ``RoostError``); cancellation (the client went away)
    is recorded and re-raised.
    """

    def __init__(
        self, gateway: LLMGateway, call: PendingCall, stream: CallStream,
        on_success: SuccessHook[Any] | None, on_failure: FailureHook | None,
        meter: StreamMeter | None = None, span: tracing.SpanHandle = tracing.NOOP,
    ) -> None:
        self.call = call
        self._span = span
        self._meter = meter
        self._gateway = gateway
        self._stream = stream
        self._on_success = on_success
        self._on_failure = on_failure
        self.outcome: CallOutcome | None = None
        self.saved: T | None = None

    @property
    def request_id(self) -> uuid.UUID:
        return self.call.request_id

    def chunks(self) -> AsyncIterator[ChatChunk]:
        if self._meter is None:
            return self._stream.chunks()
        return self._metered(self._meter)

    async def _metered(self, meter: StreamMeter) -> AsyncIterator[ChatChunk]:
        async for chunk in self._stream.chunks():
            if chunk.delta:  # about four characters a token (providers send no per-chunk count)
                meter.on_chunk(max(1, (len(chunk.delta) + 3) // 4))
            yield chunk

    async def __aenter__(self) -> RecordedStream[T]:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stream = self._stream
        span, self._span = self._span, tracing.NOOP
        try:
            if exc is not None:
                span.__exit__(kind, exc, tb)
                partial = _delivered(stream)
                _bill_attempt(stream.attempts, partial)
                await shielded(_record_failure(self._gateway, self.call, exc, stream.attempts,
                                               stream.latency_ms(), self._on_failure, partial))
                if isinstance(exc, Exception):
                    raise public_error(exc, stream.attempts, self.call.request_id) from exc
                return  # cancellation: re-raised as it is
        finally:
            await stream.aclose()
        self.outcome = stream.outcome()
        _annotate(span, self.outcome)
        span.end()
        self.saved = await shielded(
            _store_outcome(self._gateway, self.call, self.outcome, self._on_success,
                           self._meter, delivered=True))


@overload
async def open_stream(
    gateway: LLMGateway, call: PendingCall, *, on_success: None = None,
    on_failure: FailureHook | None = None,
) -> RecordedStream[CallOutcome]: ...
@overload
async def open_stream(
    gateway: LLMGateway, call: PendingCall, *, on_success: SuccessHook[T],
    on_failure: FailureHook | None = None,
) -> RecordedStream[T]: ...
async def open_stream(
    gateway: LLMGateway, call: PendingCall, *, on_success: SuccessHook[Any] | None = None,
    on_failure: FailureHook | None = None,
) -> RecordedStream[Any]:
    """Step 2 of a streamed call, up to its first chunk (fallback happens here), so a
    failure before any output is recorded and raised as an ordinary error answer."""
    if not call.running:
        await mark_running(gateway, call.principal, call.request_id)
    meter = StreamMeter(gateway.settings.analytics_stream_sample_every)
    stream = CallStream(gateway, call.route, call.chat, call.request_id)
    span = _span(call, current=False)  # ended when the stream is recorded
    span.set("roost.llm.streamed", True)
    try:
        await stream.start()
    except ProviderError as exc:
        span.__exit__(type(exc), exc, None)
        await shielded(_record_failure(gateway, call, exc, exc.attempts, stream.latency_ms(),
                                       on_failure))
        raise public_error(exc, exc.attempts, call.request_id) from exc
    except BaseException as exc:  # cancelled, or a bug: the request must not stay running
        span.__exit__(type(exc), exc, None)
        await shielded(_record_failure(gateway, call, exc, stream.attempts, stream.latency_ms(),
                                       on_failure))
        await stream.aclose()
        raise
    return RecordedStream(gateway, call, stream, on_success, on_failure, meter, span)


# --- whole calls ------------------------------------------------------------------------


async def complete(
    gateway: LLMGateway, principal: Principal, chat: ChatRequest, *, model: str | None,
    ensemble_spec: EnsembleSpec | None = None, request_type: str | None = None,
) -> CallOutcome:
    """One recorded, non-streamed completion, from routing to the final record."""
    kind = request_type or ("ensemble" if ensemble_spec else "chat")
    call = await begin(gateway, principal, chat, model=model, request_type=kind,
                       ensemble_spec=ensemble_spec)
    return await run(gateway, call)


async def stream(
    gateway: LLMGateway, principal: Principal, chat: ChatRequest, *, model: str | None,
    ensemble_spec: EnsembleSpec | None = None, request_type: str = "chat_stream",
) -> RecordedStream[CallOutcome]:
    """One recorded, streamed completion: read it with ``async with`` (see RecordedStream)."""
    call = await begin(gateway, principal, chat, model=model, request_type=request_type,
                       ensemble_spec=ensemble_spec)
    return await open_stream(gateway, call)


async def embed(
    gateway: LLMGateway, principal: Principal, texts: list[str], *, model: str,
    dimensions: int | None = None,
) -> CallOutcome:
    """A recorded embeddings call; the vectors are ``outcome.embedding``."""
    chat = ChatRequest(messages=[ChatMessage(role="user", content=t) for t in texts])
    call = await begin(gateway, principal, chat, model=model, request_type="embedding")
    return await run(gateway, call, execute_with=lambda: execute_embedding(
        gateway, call.route, texts, call.request_id, dimensions))
