"""The records every model call leaves: ``llm_requests`` (``pending`` → ``running`` →
``completed`` / ``failed``), one ``llm_responses`` row per provider attempt and one
``usage_records`` row; and what a failed call tells its caller.

Prompts, messages and answers are stored encrypted with the message cipher; the
provider's raw answer is kept without its text fields.  ``roost.llm.calls`` decides when
each of these writes happens; domains call that, not these functions.
"""

from __future__ import annotations

import json
import math
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, cast

from sqlalchemy import Insert, Table, Update, bindparam, literal_column, null, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.analytics import streaming
from roost.analytics.models import AnalyticsEvent
from roost.analytics.outbox import emit, event_values
from roost.audit import service as audit
from roost.billing import credits, prices
from roost.billing.credits import Reservation
from roost.billing.models import MAX_MONEY, Subscription, UsageRecord
from roost.db.base import utcnow, uuid7
from roost.db.statements import bound_insert, flush_pending, prefixed
from roost.db.transaction import driver_fetch
from roost.errors import NotFound, RoostError
from roost.identity.common import nfc
from roost.llm.base import MAX_TOKEN_COUNT
from roost.llm.errors import (
    SURROGATE,
    AllProvidersFailed,
    GatewayFailed,
    ModelNotFound,
    ProviderError,
    ProviderModelMissing,
    ProviderRequestError,
    ProviderTimeout,
    UpstreamRejected,
    clean_text,
)
from roost.llm.gateway import LLMGateway
from roost.llm.models import LLMRequest, LLMResponse
from roost.llm.orchestration import Attempt, ProviderRef
from roost.llm.routing import Route
from roost.llm.types import ChatRequest, ChatResult, EmbeddingResult
from roost.principal import Principal
from roost.security.crypto import MessageCipher

REQUEST_RESOURCE = "llm_request"
# Keys whose values are conversation text: kept out of llm_responses.raw_response (the
# text itself is stored encrypted in llm_responses.content).
_TEXT_KEYS = frozenset({"content", "text", "arguments", "reasoning_content", "refusal", "input",
                        "partial_json", "thinking", "delta"})


# A stored conversation (llm_requests.messages: every message of the call, so each agent
# step or chat turn repeats the ones before) is compressed before it is encrypted when
# that saves space: JSON with repeated keys shrinks to a third, ciphertext not at all.
# The plaintext then starts with a zero byte, which JSON text never does.
_COMPRESSED: Final = b"\x00"
_COMPRESS_FROM: Final = 512  # bytes of JSON; below, zlib's header eats the gain


def encrypt_json(cipher: MessageCipher, value: Any) -> bytes:
    """``value`` as JSON, compressed when that is smaller, encrypted (Fernet)."""
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(raw) >= _COMPRESS_FROM:
        packed = _COMPRESSED + zlib.compress(raw, 6)
        if len(packed) < len(raw):
            return cipher.encrypt_bytes(packed)
    return cipher.encrypt_bytes(raw)


def decrypt_json(cipher: MessageCipher, token: bytes) -> Any:
    """What :func:`encrypt_json` stored (compressed or not)."""
    plain = cipher.decrypt_bytes(token)
    if plain.startswith(_COMPRESSED):
        plain = zlib.decompress(plain[1:])  # authenticated by the token's HMAC: ours
    return json.loads(plain)


def _label(value: Any, limit: int) -> str | None:
    """A provider's short label (model name, finish reason) fitted to its column."""
    if value is None:
        return None
    return clean_text(str(value))[:limit] or None


def _ledger_model(model: str | None) -> str | None:
    """A usage row's model name, composed (NFC) as ingested usage events' are: one name
    is one report row whichever form the provider or the caller spelled it in."""
    return nfc(model)[:255] if model else model  # the column holds 255 characters


def _tokens(value: int) -> int:
    return max(0, min(int(value), MAX_TOKEN_COUNT))


def fit_result(result: ChatResult) -> ChatResult:
    """What a provider answered, fitted to the columns it is stored in (in place): the
    model name to 255 characters, the finish reason to 50, without NUL or lone
    surrogates; token counts within 0..MAX_TOKEN_COUNT; text without lone surrogates
    (the HTTP providers refuse those already; this covers any provider).  A raw NUL in a
    tool call's arguments becomes the six characters ``\\u0000``: the arguments stay what
    the model sent (invalid JSON, or a JSON string holding a NUL, which the tool registry
    refuses as a failed step) and can be stored in JSONB, which holds no NUL."""
    result.model = _label(result.model, 255)
    result.finish_reason = _label(result.finish_reason, 50)
    result.tokens_in, result.tokens_out = _tokens(result.tokens_in), _tokens(result.tokens_out)
    result.content = SURROGATE.sub("\ufffd", result.content)
    for call in result.tool_calls:
        call.id, call.name = clean_text(call.id), clean_text(call.name)
        call.arguments = SURROGATE.sub("\ufffd", call.arguments.replace("\x00", "\\u0000"))
    return result


def strip_text(value: Any, depth: int = 0) -> Any:
    """The provider's raw answer without conversation text (that is stored encrypted), and
    without what JSONB cannot hold (NUL, lone surrogates) in the strings and keys left."""
    if depth > 16:
        return None
    if isinstance(value, dict):
        return {clean_text(str(k)): ("[encrypted]" if k in _TEXT_KEYS and v not in (None, "", [])
                                     else strip_text(v, depth + 1))
                for k, v in value.items()}
    if isinstance(value, list):
        return [strip_text(v, depth + 1) for v in value[:64]]
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or Infinity
    return value


def credits_for(gateway: LLMGateway, tokens: int) -> int:
    return credits.credits_for_tokens(gateway.settings, tokens)


def request_values(
    gateway: LLMGateway, principal: Principal, chat: ChatRequest, route: Route, *,
    request_type: str, session_id: uuid.UUID | None = None, running: bool = False,
) -> dict[str, Any]:
    """A new ``llm_requests`` row's columns (prompt and messages encrypted).  ``running``:
    stored as already started (a caller that goes straight on to the call saves the
    separate ``pending -> running`` transaction)."""
    return {
        "id": uuid7(), "created_at": utcnow(), "session_id": session_id,
        "user_id": principal.user_id, "request_type": request_type, "model": route.model,
        "prompt": gateway.cipher.encrypt(chat.prompt_text()),
        "messages": encrypt_json(gateway.cipher, [m.to_openai() for m in chat.messages]),
        "model_params": chat.model_params(), "ensemble_config": route.ensemble_config,
        "status": "running" if running else "pending",
        "started_at": utcnow() if running else None,
    }


async def mark_running(gateway: LLMGateway, principal: Principal, request_id: uuid.UUID) -> None:
    async with gateway.transaction(principal) as session:
        await session.execute(
            update(LLMRequest).where(LLMRequest.id == request_id, LLMRequest.status == "pending")
            .values(status="running", started_at=utcnow())
        )


def _response_row(
    gateway: LLMGateway, attempt: Attempt, request_id: uuid.UUID, user_id: uuid.UUID | None,
) -> LLMResponse:
    return LLMResponse(**_response_values(gateway, attempt, request_id, user_id))


def _response_values(
    gateway: LLMGateway, attempt: Attempt, request_id: uuid.UUID, user_id: uuid.UUID | None,
) -> dict[str, Any]:
    """One provider attempt's ``llm_responses`` columns (the answer encrypted), fitted to
    the columns (:func:`fit_result`)."""
    res = fit_result(attempt.result) if attempt.result is not None else None
    values = attempt.to_response_row()
    provider_id = values["provider_id"]
    return {
        "id": uuid7(), "created_at": utcnow(), "request_id": request_id, "user_id": user_id,
        "provider_id": provider_id if isinstance(provider_id, uuid.UUID) else None,
        "provider_name": values["provider_name"], "model": res.model if res else None,
        "content": gateway.cipher.encrypt(values["content"]),
        "raw_response": strip_text(values["raw_response"]),
        "tokens_prompt": values["tokens_prompt"],
        "tokens_completion": values["tokens_completion"], "tokens_total": values["tokens_total"],
        "confidence": Decimal(str(round(float(values["confidence"]), 4))),
        "response_time": values["response_time"], "finish_reason": values["finish_reason"],
        "selected": values["selected"], "outcome": values["outcome"],
        "error_kind": values["error_kind"],
        "error_message": clean_text(values["error_message"])
        if values["error_message"] is not None else None,
        "started_at": values["started_at"], "finished_at": values["finished_at"],
    }


@dataclass
class CallOutcome:
    """A finished, successful call."""

    request_id: uuid.UUID
    result: ChatResult
    winner: ProviderRef
    attempts: list[Attempt]
    latency_ms: int
    usage: UsageRecord | None = None  # set when the call is recorded
    votes: dict[str, float] = field(default_factory=dict)  # ensembles: weight per answer
    embedding: EmbeddingResult | None = None  # embeddings calls: the vectors
    reservation: Reservation | None = None  # the credits held for it, until settled


def _other_answers(outcome: CallOutcome) -> list[ChatResult]:
    """The answers of the ensemble members that answered but were not chosen (each was
    asked, and its provider paid, whichever answer won).  A fallback chain has none."""
    return [fit_result(attempt.result) for attempt in outcome.attempts
            if attempt.ok and not attempt.selected and attempt.result is not None
            and attempt.result is not outcome.result]


def billed_tokens(outcome: CallOutcome) -> tuple[int, int]:
    """The input and output tokens a call is billed for: its answer's plus those of every
    other ensemble member that answered."""
    result = outcome.result
    tokens_in, tokens_out = result.tokens_in, result.tokens_out
    for member in _other_answers(outcome):
        tokens_in += member.tokens_in
        tokens_out += member.tokens_out
    return min(tokens_in, MAX_TOKEN_COUNT), min(tokens_out, MAX_TOKEN_COUNT)


async def billed_cost(session: AsyncSession, outcome: CallOutcome,
                      model: str | None) -> tuple[Decimal, str]:
    """What a call cost: its answer's tokens at ``model``'s price, plus each other ensemble
    member's answer at the price of the model that member used (a cheap member that lost
    the vote is not billed at the dear winner's price, nor the other way round).  A member
    priced in another currency than the answer's is counted at the answer's price: no
    exchange rates are kept."""
    result = fit_result(outcome.result)
    cost, currency = await prices.cost_for(session, model, result.tokens_in, result.tokens_out)
    for member in _other_answers(outcome):
        own, own_currency = await prices.cost_for(session, member.model or model,
                                                  member.tokens_in, member.tokens_out)
        if own_currency != currency:
            own, _ = await prices.cost_for(session, model, member.tokens_in, member.tokens_out)
        cost += own
    return min(cost, MAX_MONEY), currency  # absurd prices times absurd counts still fit


async def record_success(
    session: AsyncSession, gateway: LLMGateway, principal: Principal, outcome: CallOutcome, *,
    request_type: str, session_id: uuid.UUID | None = None, audit_action: str | None = None,
    run_id: uuid.UUID | None = None, agent_id: uuid.UUID | None = None,
    reservation: Reservation | None = None, stream_metrics: Sequence[dict[str, Any]] = (),
) -> UsageRecord:
    """Responses, usage, status ``completed``; audited unless the caller audits itself.
    ``run_id``/``agent_id``: the agent run the call was made for (usage per run);
    ``reservation``: the credits held for the call (the usage row names its subscription;
    the caller settles it: ``roost.llm.calls``, after its own rows);
    ``stream_metrics``: a streamed answer's ``streaming_analytics`` rows
    (``StreamMeter.row_values``), written by the same statement."""
    user_id = principal.user_id
    await flush_pending(session)  # the caller's rows first
    result = fit_result(outcome.result)
    winner_id = outcome.winner.id if isinstance(outcome.winner.id, uuid.UUID) else None
    model = _ledger_model(result.model or outcome.winner.name)
    # The stream's metrics name the model as its usage row does (composed, fitted): one
    # model, one name, in /analytics/streaming as in the usage report.
    stream_metrics = [{**row, "model": model} for row in stream_metrics]
    tokens_in, tokens_out = billed_tokens(outcome)
    cost, currency = await billed_cost(session, outcome, model)
    used = credits_for(gateway, tokens_in + tokens_out)
    usage_values: dict[str, Any] = {
        "id": uuid7(), "created_at": utcnow(), "user_id": user_id,
        "request_type": request_type, "model": model, "tokens_input": tokens_in,
        "tokens_output": tokens_out, "credits_used": used,
        "latency_ms": outcome.latency_ms, "session_id": session_id,
        "llm_request_id": outcome.request_id, "provider_id": winner_id, "success": True,
        "run_id": run_id, "agent_id": agent_id, "idempotency_key": f"llm:{outcome.request_id}",
        "api_key_id": principal.api_key_id, "cost": cost, "currency": currency,
        "subscription_id": reservation.subscription_id if reservation else None,
    }
    usage = UsageRecord(**usage_values)  # as written (not attached to the session)
    responses = [_response_values(gateway, a, outcome.request_id, user_id)
                 for a in outcome.attempts]
    event = event_values("llm.call", _call_event(principal, usage, outcome.winner.name),
                         user_id=user_id, session_id=session_id)
    # The first attempt's answer, the usage row, the analytics event and the request's
    # status in one statement (an ORM flush of the three rows was most of the call's
    # recording time); further attempts (fallbacks, ensembles) in one more.
    first = responses[:1]
    await driver_fetch(session, _success_statement(usage_values, event, *first,
                                                   metered=bool(stream_metrics)), {
        **(prefixed("r_", first[0]) if first else {}), **prefixed("u_", usage_values),
        **prefixed("e_", event), **(streaming.rows_params(stream_metrics) if stream_metrics else {}),
        "q_id": outcome.request_id, "q_completed_at": utcnow()})
    if len(responses) > 1:
        await session.execute(_responses_statement(responses[0]),
                              [prefixed("r_", r) for r in responses[1:]])
    outcome.usage = usage
    if audit_action:
        await audit.record(
            session, audit_action, user_id=user_id, resource_type=REQUEST_RESOURCE,
            resource_id=outcome.request_id,
            metadata={"provider": outcome.winner.name, "model": usage.model,
                      "tokens_in": result.tokens_in, "tokens_out": result.tokens_out,
                      "attempts": len(outcome.attempts), "latency_ms": outcome.latency_ms},
        )
    return usage


# Built once per shape (bench/agents: building it per call costs).
_SUCCESS: dict[tuple[bool, bool], Update] = {}
_RESPONSES: list[Insert] = []


def _success_statement(usage: dict[str, Any], event: dict[str, Any],
                       response: dict[str, Any] | None = None, *, metered: bool = False) -> Update:
    """``WITH llm_response AS (INSERT ...), usage_record AS (INSERT ...), analytics_event
    AS (INSERT ...), stream_metrics AS (INSERT ...) UPDATE llm_requests SET status =
    'completed' ...`` (without the response when the call left no attempt, without the
    stream's metrics unless ``metered``)."""
    shape = (response is not None, metered)
    statement = _SUCCESS.get(shape)
    if statement is None:
        table = cast(Table, LLMRequest.__table__)
        ctes = [bound_insert(UsageRecord, "u_", usage).cte("usage_record"),
                bound_insert(AnalyticsEvent, "e_", event).cte("analytics_event")]
        if response is not None:
            ctes.insert(0, bound_insert(LLMResponse, "r_", response).cte("llm_response"))
        if metered:
            ctes.append(streaming.rows_insert().cte("stream_metrics"))
        statement = (update(table).where(table.c.id == bindparam("q_id"))
                     .values(status=literal_column("'completed'"),
                             completed_at=bindparam("q_completed_at"), error_message=null())
                     .add_cte(*ctes))
        _SUCCESS[shape] = statement
    return statement


def _responses_statement(response: dict[str, Any]) -> Insert:
    if not _RESPONSES:
        _RESPONSES.append(bound_insert(LLMResponse, "r_", response))
    return _RESPONSES[0]


async def record_failure(
    session: AsyncSession, gateway: LLMGateway, principal: Principal, request_id: uuid.UUID,
    error: BaseException, attempts: Sequence[Attempt], *, request_type: str, model: str | None,
    latency_ms: int, session_id: uuid.UUID | None = None, audit_action: str | None = None,
    run_id: uuid.UUID | None = None, agent_id: uuid.UUID | None = None,
    reservation: Reservation | None = None, partial: ChatResult | None = None,
    delivered: bool = True,
) -> str:
    """Failed attempts, a zero-credit usage row, status ``failed``; returns the message.
    ``partial``: what the call produced, its token counts filled in
    (``fill_missing_usage``): what a stream delivered before it broke off (the client
    went away), or an answer that could not be stored.  The usage row keeps its tokens,
    still ``success`` false, and bills them (:func:`partial_credits`) when ``delivered``
    (the caller received it), else not (credits and cost 0).  (The credits held for the
    call are settled for that amount, or given back, by the caller: ``roost.llm.calls``.)"""
    user_id = principal.user_id
    session.add_all([_response_row(gateway, a, request_id, user_id) for a in attempts])
    message = clean_text(failure_message(error, attempts))
    values = _failure_usage(
        principal, request_id, request_type=request_type, model=model, latency_ms=latency_ms,
        session_id=session_id, run_id=run_id, agent_id=agent_id)
    await _partial_usage(session, gateway, values, partial, delivered=delivered)
    # What the call produced came from its selected attempt's provider: the usage row
    # and the event name it (usage by provider keeps the tokens billed).
    producer = next((a.ref for a in attempts if a.selected), None) if partial else None
    if producer is not None and isinstance(producer.id, uuid.UUID):
        values["provider_id"] = producer.id
    usage = UsageRecord(**values,
                        subscription_id=reservation.subscription_id if reservation else None)
    session.add(usage)
    _emit_call(session, principal, usage, provider=producer.name if producer else None)
    await session.execute(
        update(LLMRequest).where(LLMRequest.id == request_id)
        .values(status="failed", completed_at=utcnow(), error_message=message[:4000])
    )
    await session.flush()
    if audit_action:
        await audit.record(
            session, audit_action, user_id=user_id, category="error",
            resource_type=REQUEST_RESOURCE, resource_id=request_id, success=False,
            error_message=message[:1000],
            metadata={"attempts": [{"provider": a.ref.name, "outcome": a.outcome,
                                    "error_kind": a.error_kind} for a in attempts]},
        )
    return message


def partial_credits(gateway: LLMGateway, partial: ChatResult | None, *,
                    delivered: bool = True) -> int:
    """The credits a failed call pays: those of the tokens its caller received
    (``partial`` when ``delivered``: a stream that broke off, an answer streamed whole
    that could not be stored), nothing when it received none."""
    if partial is None or not delivered:
        return 0
    return credits_for(gateway, _tokens(partial.tokens_in) + _tokens(partial.tokens_out))


def counts_only(partial: ChatResult | None) -> ChatResult | None:
    """``partial``'s token counts alone (in range), for a failure whose record the
    database refused a value of: the value may be ``partial``'s own (its model name)."""
    if partial is None:
        return None
    return ChatResult(content="", tokens_in=_tokens(partial.tokens_in),
                      tokens_out=_tokens(partial.tokens_out))


async def _partial_usage(
    session: AsyncSession, gateway: LLMGateway, values: dict[str, Any],
    partial: ChatResult | None, *, delivered: bool,
) -> None:
    """A failed call's usage row (``values``, in place) with the tokens of what it
    produced (``partial``): the ledger keeps what the provider consumed; credits and cost
    only for what its caller received (``delivered``)."""
    if partial is None:
        return
    result = fit_result(partial)
    values["model"] = _ledger_model(result.model) or values["model"]
    values["tokens_input"], values["tokens_output"] = result.tokens_in, result.tokens_out
    if delivered:
        values["credits_used"] = partial_credits(gateway, result)
        values["cost"], values["currency"] = await prices.cost_for(
            session, values["model"], result.tokens_in, result.tokens_out)


def _failure_usage(
    principal: Principal, request_id: uuid.UUID, *, request_type: str, model: str | None,
    latency_ms: int, session_id: uuid.UUID | None, run_id: uuid.UUID | None,
    agent_id: uuid.UUID | None,
) -> dict[str, Any]:
    """A failed call's usage row (no credits), but its subscription."""
    return {
        "id": uuid7(), "user_id": principal.user_id, "request_type": request_type,
        "model": _ledger_model(model), "tokens_input": 0, "tokens_output": 0,
        "credits_used": 0, "latency_ms": latency_ms, "session_id": session_id,
        "llm_request_id": request_id,
        "success": False, "run_id": run_id, "agent_id": agent_id,
        "idempotency_key": f"llm:{request_id}", "api_key_id": principal.api_key_id,
    }


async def record_usage_alone(
    session: AsyncSession, gateway: LLMGateway, principal: Principal, request_id: uuid.UUID,
    *, request_type: str, model: str | None, latency_ms: int,
    session_id: uuid.UUID | None = None, run_id: uuid.UUID | None = None,
    agent_id: uuid.UUID | None = None, reservation: Reservation | None = None,
    partial: ChatResult | None = None, delivered: bool = True,
) -> None:
    """The usage row :func:`record_failure` writes, alone: for a call whose failure could
    not be recorded because its request is gone (deleted with its user or chat session
    while the model answered: a foreign key refuses its responses), so the ledger, which
    outlives both (migrations 1090, 1100), still has the call, with the tokens of what it
    produced (``partial``, billed when ``delivered``, as :func:`record_failure` does).
    Its subscription only if that still exists; nothing when the row was written
    already.  With the row, its ``llm.call`` analytics event, as every call has one."""
    values: dict[str, Any] = _failure_usage(
        principal, request_id, request_type=request_type, model=model, latency_ms=latency_ms,
        session_id=session_id, run_id=run_id, agent_id=agent_id)
    await _partial_usage(session, gateway, values, partial, delivered=delivered)
    values["created_at"] = utcnow()
    if reservation is not None:
        values["subscription_id"] = select(Subscription.id).where(
            Subscription.id == reservation.subscription_id).scalar_subquery()
    written = (await session.execute(
        pg_insert(UsageRecord).values(**values)
        .on_conflict_do_nothing(index_elements=[UsageRecord.idempotency_key])
        .returning(UsageRecord))).scalars().first()
    if written is not None:  # its llm.call event too: ClickHouse's usage counts the call
        _emit_call(session, principal, written, provider=None)


def _emit_call(session: AsyncSession, principal: Principal, usage: UsageRecord,
               provider: str | None) -> None:
    """The call's analytics event (the ClickHouse outbox), in the same transaction."""
    emit(session, "llm.call", _call_event(principal, usage, provider),
         user_id=principal.user_id, session_id=usage.session_id)


def _call_event(principal: Principal, usage: UsageRecord, provider: str | None) -> dict[str, Any]:
    def ref(value: uuid.UUID | None) -> str | None:
        return str(value) if value is not None else None

    return {
        # provider_id keys the ClickHouse usage report as the ledger's; the name is kept
        # for readers of the event (and a provider deleted since).
        "request_id": ref(usage.llm_request_id), "model": usage.model, "provider": provider,
        "provider_id": ref(usage.provider_id),
        "request_type": usage.request_type, "tokens_input": usage.tokens_input,
        "tokens_output": usage.tokens_output, "credits": usage.credits_used,
        "cost": str(usage.cost if usage.cost is not None else Decimal(0)),
        "currency": usage.currency or "USD", "latency_ms": usage.latency_ms,
        "success": usage.success, "agent_id": ref(usage.agent_id), "run_id": ref(usage.run_id),
        "api_key_id": ref(usage.api_key_id),
    }


def failure_message(error: BaseException, attempts: Sequence[Attempt]) -> str:
    if isinstance(error, AllProvidersFailed):
        parts = [f"{a.ref.name}: {a.error or a.error_kind}" for a in attempts] or [error.detail]
        return "no provider answered (" + "; ".join(parts) + ")"
    if isinstance(error, RoostError):
        return error.detail
    if isinstance(error, BaseException) and type(error).__name__ in ("CancelledError", "GeneratorExit"):
        return "cancelled: the client went away before the answer was complete"
    return f"internal error ({type(error).__name__})"


def public_error(error: BaseException, attempts: Sequence[Attempt],
                 request_id: uuid.UUID | None = None) -> RoostError:
    """What the caller sees for a failed call (a 4xx/5xx problem, never a stack trace).
    ``request_id`` (the call's ``llm_requests`` row) is named in it as ``llm_request_id``,
    so its owner can read every attempt (``GET /api/v1/llm/requests/{id}``)."""
    answer = _public_error(error, attempts)
    if request_id is not None and answer is not error:
        answer.extra = {**answer.extra, "llm_request_id": str(request_id)}
    return answer


def _public_error(error: BaseException, attempts: Sequence[Attempt]) -> RoostError:
    if isinstance(error, ProviderRequestError):
        return UpstreamRejected(error.detail)
    # A 404 is the model's absence only when every provider asked said so (one may have
    # dropped it since the last sync while the next one serves it).
    if isinstance(error, ProviderModelMissing) or (
            isinstance(error, AllProvidersFailed) and error.errors
            and all(isinstance(e, ProviderModelMissing) for e in error.errors)):
        return ModelNotFound(failure_message(error, attempts))
    if isinstance(error, ProviderError):
        timeouts = bool(attempts) and all(a.outcome == "timeout" for a in attempts if not a.ok)
        is_timeout = isinstance(error, ProviderTimeout) or (
            isinstance(error, AllProvidersFailed) and timeouts)
        return GatewayFailed(failure_message(error, attempts), timeout=is_timeout, kind=error.kind)
    if isinstance(error, RoostError):
        return error
    return GatewayFailed(failure_message(error, attempts), timeout=False, kind="internal")


async def get_request(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, request_id: uuid.UUID
) -> tuple[LLMRequest, list[LLMResponse]]:
    row = await session.get(LLMRequest, request_id)
    if row is None or not (actor.is_admin or (row.user_id is not None and row.user_id == actor.user_id)):
        raise NotFound(f"no LLM request with id {request_id}")
    responses = list((await session.scalars(
        select(LLMResponse).where(LLMResponse.request_id == request_id)
        .order_by(LLMResponse.started_at, LLMResponse.id)
    )).all())
    return row, responses
