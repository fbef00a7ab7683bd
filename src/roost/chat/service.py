"""Chat sessions and their encrypted messages, state, event history and summaries.

Access: a session is visible to its owner and to administrators; anyone else gets a 404
(never a 403 that would confirm the id exists).  Row-level security repeats the check in
PostgreSQL for every transaction that acts for a principal.

Posting a message that the model answers takes three short transactions (see
``roost.llm.service``): the user's message and the ``pending`` LLM request are committed
before any provider is asked, so a failed or cancelled call leaves the user's message
stored and the request marked ``failed``; the answer is stored with its responses, usage
and audit record in the last one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import TypeAdapter
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit import service as audit
from roost.chat.models import (
    ChatHistoryEvent,
    ChatMessage,
    ChatSession,
    ChatSessionSummary,
    SessionState,
)
from roost.chat.schemas import (
    ExchangeOut,
    HistoryEventCreate,
    HistoryEventOut,
    MessageCreate,
    MessageOut,
    SessionCreate,
    SessionOut,
    SessionUpdate,
    StateOut,
    StatePut,
    SummaryOut,
    SummaryUpdate,
)
from roost.db.base import uuid7
from roost.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, RoostError
from roost.http.auth import Principal
from roost.llm import service as llm
from roost.llm.errors import ProviderError
from roost.llm.gateway_core import response_confidence
from roost.llm.models import UsageRecord
from roost.llm.runtime import Runtime
from roost.llm.schemas import UsageOut
from roost.llm.types import ChatMessage as LLMMessage
from roost.llm.types import ChatRequest, ToolCall
from roost.pagination import DEFAULT_LIMIT, decode_cursor, encode_cursor
from roost.security.crypto import DecryptionError, MessageCipher

log = structlog.get_logger(__name__)

SESSION = "chat_session"
MESSAGE = "chat_message"
_TOOL_CALLS = TypeAdapter(list[ToolCall])
_MAX_STATE_BYTES = 256 * 1024
_MAX_EVENT_BYTES = 256 * 1024


class MessageKeysMismatch(RoostError):
    """Stored ciphertext does not open with the configured keys: an operator problem."""

    status, title, type_slug = 500, "Message keys do not match", "message-keys-mismatch"


def now() -> datetime:
    return datetime.now(UTC)


def decrypt(cipher: MessageCipher, token: bytes) -> str:
    try:
        return cipher.decrypt(token)
    except DecryptionError:
        log.error("chat.decrypt_failed")
        raise MessageKeysMismatch(
            "stored message content cannot be decrypted with the configured message keys; "
            "an operator must restore the missing key in ROOST_MESSAGE_KEYS"
        ) from None


# --- sessions ---------------------------------------------------------------------------


def session_out(row: ChatSession) -> SessionOut:
    return SessionOut.model_validate(row)


async def get_session(
    session: AsyncSession, actor: Principal, session_id: uuid.UUID, *, lock: bool = False
) -> ChatSession:
    stmt = select(ChatSession).where(ChatSession.id == session_id)
    if lock:
        stmt = stmt.with_for_update()
    row = (await session.scalars(stmt)).one_or_none()
    if row is None or not (actor.is_admin or row.user_id == actor.user_id):
        raise NotFound(f"no chat session with id {session_id}")
    return row


async def create_session(session: AsyncSession, actor: Principal, data: SessionCreate) -> ChatSession:
    owner = data.owner_id or actor.user_id
    if data.owner_id is not None and data.owner_id != actor.user_id and not actor.is_admin:
        raise NotFound("owner_id: only administrators may create sessions for someone else")
    if owner is None:
        raise BadRequest("the operator token has no user: pass owner_id to name the session's owner")
    row = ChatSession(
        id=uuid7(), user_id=owner, title=data.title, model=data.model,
        enable_tools=data.enable_tools, external_id=data.external_id, expires_at=data.expires_at,
        status="active", message_count=0, request_count=0,
    )
    session.add(row)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise _session_conflict(exc, data.external_id) from None
    await audit.record(
        session, "chat.session.create", user_id=actor.user_id, resource_type=SESSION,
        resource_id=row.id,
        changes={"owner_id": str(owner), "title": data.title, "model": data.model,
                 "enable_tools": data.enable_tools, "external_id": data.external_id},
    )
    return row


def _session_conflict(exc: IntegrityError, external_id: str | None) -> RoostError:
    text = str(exc.orig)
    if "uq_chat_sessions_user_id_external_id" in text:
        return Conflict(f"you already have a session with external_id {external_id!r}")
    if "fk_chat_sessions_user_id_users" in text:
        return NotFound("owner_id names no user")
    return Conflict("the session conflicts with data already stored")


async def list_sessions(
    session: AsyncSession, actor: Principal, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
    external_id: str | None = None, user_id: uuid.UUID | None = None,
) -> tuple[list[ChatSession], str | None]:
    """Newest first (created_at, id); the caller's own unless an admin asks for a user's."""
    stmt = select(ChatSession)
    if user_id is not None:
        if user_id != actor.user_id and not actor.is_admin:
            return [], None
        stmt = stmt.where(ChatSession.user_id == user_id)
    elif actor.user_id is not None:
        stmt = stmt.where(ChatSession.user_id == actor.user_id)
    if external_id is not None:
        stmt = stmt.where(ChatSession.external_id == external_id)
    if cursor is not None:
        after = decode_cursor(cursor)
        try:
            at = datetime.fromisoformat(str(after["created_at"]))
            last_id = uuid.UUID(str(after["id"]))
        except (KeyError, ValueError) as exc:
            raise BadRequest("cursor is malformed: pass the next_cursor of a previous page") from exc
        stmt = stmt.where(
            (ChatSession.created_at < at)
            | ((ChatSession.created_at == at) & (ChatSession.id < last_id))
        )
    stmt = stmt.order_by(ChatSession.created_at.desc(), ChatSession.id.desc()).limit(limit + 1)
    rows = list((await session.scalars(stmt)).all())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor({"created_at": last.created_at.isoformat(), "id": str(last.id)})
    return rows[:limit], next_cursor


async def update_session(
    session: AsyncSession, actor: Principal, session_id: uuid.UUID, data: SessionUpdate
) -> ChatSession:
    row = await get_session(session, actor, session_id, lock=True)
    changes: dict[str, Any] = {}
    for name, value in data.model_dump(exclude_unset=True).items():
        if value is None and name in ("enable_tools", "status"):
            continue  # not nullable: an explicit null means "leave it"
        if getattr(row, name) != value:
            changes[name] = [_jsonable(getattr(row, name)), _jsonable(value)]
            setattr(row, name, value)
    if changes:
        row.updated_at = now()
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as exc:
            raise _session_conflict(exc, data.external_id) from None
        await audit.record(session, "chat.session.update", user_id=actor.user_id,
                           resource_type=SESSION, resource_id=row.id, changes=changes)
    return row


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def delete_session(session: AsyncSession, actor: Principal, session_id: uuid.UUID) -> None:
    row = await get_session(session, actor, session_id, lock=True)
    await session.execute(delete(ChatSession).where(ChatSession.id == row.id))
    await audit.record(
        session, "chat.session.delete", user_id=actor.user_id, resource_type=SESSION,
        resource_id=row.id, changes={"owner_id": str(row.user_id), "messages": row.message_count},
    )


# --- messages ---------------------------------------------------------------------------


# What a message answer shows: read as plain rows on the history path (no ORM entities,
# identity map or change tracking for what is only decrypted and returned).
_MESSAGE_COLUMNS = tuple(
    getattr(ChatMessage, name) for name in (
        "id", "session_id", "seq", "role", "content", "tool_call_name", "tool_call_id",
        "tool_calls", "tokens_in", "tokens_out", "model", "llm_request_id",
        "conversation_domain", "plan_step", "confidence_score", "embedding_model_used",
        "created_at",
    )
)


def message_out(cipher: MessageCipher, row: Any) -> MessageOut:
    """``row``: a :class:`ChatMessage` or a row of :data:`_MESSAGE_COLUMNS`.

    Built without validation: every value is already of its field's type (database
    columns, the decrypted text, tool calls validated just here)."""
    tool_calls = None
    if row.tool_calls is not None:
        tool_calls = _TOOL_CALLS.validate_json(decrypt(cipher, row.tool_calls))
    return MessageOut.model_construct(
        id=row.id, session_id=row.session_id, seq=row.seq, role=row.role,
        content=decrypt(cipher, row.content), tool_call_name=row.tool_call_name,
        tool_call_id=row.tool_call_id, tool_calls=tool_calls, tokens_in=row.tokens_in,
        tokens_out=row.tokens_out, model=row.model, llm_request_id=row.llm_request_id,
        conversation_domain=row.conversation_domain, plan_step=row.plan_step,
        confidence_score=row.confidence_score, embedding_model_used=row.embedding_model_used,
        created_at=row.created_at,
    )


async def list_messages(
    session: AsyncSession, runtime: Runtime, actor: Principal, session_id: uuid.UUID, *,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[MessageOut], str | None]:
    """Newest first.  The cursor is the last ``seq`` seen: later pages only go back in
    time, so messages posted meanwhile neither repeat nor shift what is left to read."""
    await get_session(session, actor, session_id)
    stmt = select(*_MESSAGE_COLUMNS).where(ChatMessage.session_id == session_id)
    if cursor is not None:
        before = decode_cursor(cursor).get("seq")
        if not isinstance(before, int):
            raise BadRequest("cursor is malformed: pass the next_cursor of a previous page")
        stmt = stmt.where(ChatMessage.seq < before)
    rows = list((await session.execute(stmt.order_by(ChatMessage.seq.desc()).limit(limit + 1))).all())
    next_cursor = encode_cursor({"seq": rows[limit - 1].seq}) if len(rows) > limit else None
    return [message_out(runtime.cipher, r) for r in rows[:limit]], next_cursor


def _check_content(runtime: Runtime, data: MessageCreate) -> None:
    limit = runtime.settings.chat_max_message_chars
    if len(data.content) > limit:
        raise PayloadTooLarge(
            f"message content is {len(data.content)} characters; the limit is {limit} "
            "(ROOST_CHAT_MAX_MESSAGE_CHARS)"
        )
    if data.role in ("user", "system", "developer") and not data.content.strip():
        raise BadRequest("message content must not be empty")
    if data.reply and data.role != "user":
        raise BadRequest(
            f"only a user message can be answered by the model; send role {data.role!r} "
            "with reply=false to record it"
        )
    if data.role == "tool" and not data.tool_call_id:
        raise BadRequest("a tool message needs the tool_call_id it answers")
    if data.tool_calls and data.role != "assistant":
        raise BadRequest("only an assistant message carries tool_calls")
    if "\x00" in data.content:
        raise BadRequest("message content must not contain NUL characters")


def _check_open(row: ChatSession) -> None:
    if row.status != "active":
        raise Conflict(f"the session is {row.status}; set its status to 'active' to post to it")
    if row.expires_at is not None and row.expires_at <= now():
        raise Conflict("the session has expired; extend expires_at to post to it")


async def _next_seq(session: AsyncSession, session_id: uuid.UUID, *, request: bool = False) -> int:
    """Allocate the next message position under the session row's lock (held to commit)."""
    values: dict[str, Any] = {
        "message_count": ChatSession.message_count + 1, "last_activity_at": func.now(),
    }
    if request:
        values["request_count"] = ChatSession.request_count + 1
    seq = await session.scalar(
        update(ChatSession).where(ChatSession.id == session_id).values(**values)
        .returning(ChatSession.message_count)
    )
    assert seq is not None
    return int(seq)


async def _insert_message(
    session: AsyncSession, runtime: Runtime, owner_id: uuid.UUID, session_id: uuid.UUID, *,
    role: str, content: str, bump_requests: bool = False, tool_calls: list[ToolCall] | None = None,
    **fields: Any,
) -> ChatMessage:
    seq = await _next_seq(session, session_id, request=bump_requests)
    row = ChatMessage(
        id=uuid7(), session_id=session_id, user_id=owner_id, seq=seq, role=role,
        content=runtime.cipher.encrypt(content),
        tool_calls=(runtime.cipher.encrypt(_TOOL_CALLS.dump_json(tool_calls).decode())
                    if tool_calls else None),
        **fields,
    )
    session.add(row)
    await session.flush()
    return row


async def _context(
    session: AsyncSession, runtime: Runtime, session_id: uuid.UUID
) -> list[LLMMessage]:
    """The last messages of the session, oldest first, as the model will see them."""
    limit = runtime.settings.chat_context_messages
    rows = list((await session.scalars(
        select(ChatMessage).where(ChatMessage.session_id == session_id)
        .order_by(ChatMessage.seq.desc()).limit(limit)
    )).all())
    out: list[LLMMessage] = []
    if runtime.settings.chat_system_prompt:
        out.append(LLMMessage(role="system", content=runtime.settings.chat_system_prompt))
    for row in reversed(rows):
        tool_calls = None
        if row.tool_calls is not None:
            tool_calls = _TOOL_CALLS.validate_json(decrypt(runtime.cipher, row.tool_calls))
        out.append(LLMMessage(
            role=row.role,  # type: ignore[arg-type]
            content=decrypt(runtime.cipher, row.content) or (None if tool_calls else ""),
            tool_call_id=row.tool_call_id if row.role == "tool" else None,
            tool_calls=tool_calls,
        ))
    return out


@dataclass
class Exchange:
    """A stored user message whose answer is being produced."""

    session_id: uuid.UUID
    owner_id: uuid.UUID
    user_message: MessageOut
    request_id: uuid.UUID | None = None
    route: llm.Route | None = None
    chat: ChatRequest | None = None
    request_type: str = "chat"


async def post_message(
    runtime: Runtime, actor: Principal, session_id: uuid.UUID, data: MessageCreate
) -> Exchange:
    """Transaction 1: store the message (and, to be answered, the pending LLM request).

    Routing happens first, so "no provider" (409) and "unknown model" (404) store nothing.
    """
    _check_content(runtime, data)
    async with runtime.transaction(actor) as session:
        chat_session = await get_session(session, actor, session_id, lock=True)
        _check_open(chat_session)
        route = chat = None
        history: list[LLMMessage] = []
        if data.reply:
            route = await llm.resolve_route(
                session, runtime, data.model or chat_session.model, data.ensemble
            )
            history = await _context(session, runtime, session_id)
        row = await _insert_message(
            session, runtime, chat_session.user_id, session_id, role=data.role,
            content=data.content, bump_requests=data.reply, tool_calls=data.tool_calls,
            tool_call_name=data.tool_call_name, tool_call_id=data.tool_call_id,
            conversation_domain=data.conversation_domain, plan_step=data.plan_step,
            confidence_score=data.confidence_score, embedding_model_used=data.embedding_model_used,
        )
        exchange = Exchange(session_id=session_id, owner_id=chat_session.user_id,
                            user_message=message_out(runtime.cipher, row))
        metadata: dict[str, Any] = {"seq": row.seq, "role": row.role, "reply": data.reply}
        if route is not None:
            chat = ChatRequest(
                messages=[*history, LLMMessage(role="user", content=data.content)],
                temperature=data.temperature, max_tokens=data.max_tokens, top_p=data.top_p,
                stop=data.stop,
            )
            exchange.request_type = (
                "ensemble" if route.mode == "ensemble" else "chat_stream" if data.stream else "chat"
            )
            request = llm.new_request(
                runtime, _owner_principal(actor, chat_session.user_id), chat, route,
                request_type=exchange.request_type, session_id=session_id,
            )
            session.add(request)
            await session.flush()
            exchange.request_id, exchange.route, exchange.chat = request.id, route, chat
            metadata.update(request_id=str(request.id), mode=route.mode,
                            providers=[r.name for r in route.refs()])
        await audit.record(session, "chat.message.create", user_id=actor.user_id,
                           resource_type=MESSAGE, resource_id=row.id, metadata=metadata)
    return exchange


def _owner_principal(actor: Principal, owner_id: uuid.UUID) -> Principal:
    """LLM records of a session belong to its owner, even when an admin posts."""
    if actor.user_id == owner_id:
        return actor
    return Principal(user_id=owner_id, is_admin=actor.is_admin, kind=actor.kind,
                     group_ids=actor.group_ids)


async def _store_answer(
    runtime: Runtime, actor: Principal, exchange: Exchange, outcome: llm.CallOutcome
) -> ExchangeOut:
    """Transaction 3 (success): the assistant message, responses, usage, audit."""
    owner = _owner_principal(actor, exchange.owner_id)
    result = outcome.result
    async with runtime.transaction(actor) as session:
        row = await _insert_message(
            session, runtime, exchange.owner_id, exchange.session_id, role="assistant",
            content=result.content, tool_calls=result.tool_calls or None,
            tool_call_name=result.tool_calls[0].name if result.tool_calls else None,
            tool_call_id=result.tool_calls[0].id if result.tool_calls else None,
            tokens_in=result.tokens_in, tokens_out=result.tokens_out,
            model=result.model or outcome.winner.name, llm_request_id=outcome.request_id,
            confidence_score=float(response_confidence(result)),
        )
        usage = await llm.record_success(
            session, runtime, owner, outcome, request_type=exchange.request_type,
            session_id=exchange.session_id,
        )
        await audit.record(
            session, "chat.message.reply", user_id=actor.user_id, resource_type=MESSAGE,
            resource_id=row.id,
            metadata={"request_id": str(outcome.request_id), "provider": outcome.winner.name,
                      "model": row.model, "tokens_in": result.tokens_in,
                      "tokens_out": result.tokens_out, "attempts": len(outcome.attempts),
                      "seq": row.seq},
        )
        message = message_out(runtime.cipher, row)
    return ExchangeOut(
        user_message=exchange.user_message, assistant_message=message,
        request_id=outcome.request_id, provider=outcome.winner.name, usage=usage_out(usage),
    )


def usage_out(usage: UsageRecord) -> UsageOut:
    return UsageOut(tokens_input=usage.tokens_input, tokens_output=usage.tokens_output,
                    credits_used=usage.credits_used, latency_ms=usage.latency_ms,
                    model=usage.model)


async def _store_failure(
    runtime: Runtime, actor: Principal, exchange: Exchange, error: BaseException,
    attempts: list[Any], latency_ms: int,
) -> None:
    """Transaction 3 (failure): the request is ``failed``; the user's message stays."""
    assert exchange.request_id is not None
    owner = _owner_principal(actor, exchange.owner_id)
    async with runtime.transaction(actor) as session:
        message = await llm.record_failure(
            session, runtime, owner, exchange.request_id, error, attempts,
            request_type=exchange.request_type,
            model=exchange.route.model if exchange.route else None, latency_ms=latency_ms,
            session_id=exchange.session_id,
        )
        await audit.record(
            session, "chat.message.reply", user_id=actor.user_id, category="error",
            resource_type=MESSAGE, resource_id=exchange.user_message.id, success=False,
            error_message=message[:1000],
            metadata={"request_id": str(exchange.request_id),
                      "attempts": [{"provider": a.ref.name, "outcome": a.outcome,
                                    "error_kind": a.error_kind} for a in attempts]},
        )


async def answer(runtime: Runtime, actor: Principal, exchange: Exchange) -> ExchangeOut:
    """Ask the model (no transaction open meanwhile) and store the answer or the failure."""
    if exchange.request_id is None or exchange.route is None or exchange.chat is None:
        return ExchangeOut(user_message=exchange.user_message)
    owner = _owner_principal(actor, exchange.owner_id)
    await llm.mark_running(runtime, owner, exchange.request_id)
    started = time.perf_counter()
    try:
        outcome = await llm.execute(runtime, exchange.route, exchange.chat, exchange.request_id)
    except ProviderError as exc:
        await llm.shielded(_store_failure(runtime, actor, exchange, exc, exc.attempts,
                                      _ms(started)))
        raise llm.public_error(exc, exc.attempts) from exc
    except BaseException as exc:  # cancelled (client gone, shutdown) or a bug
        await llm.shielded(_store_failure(runtime, actor, exchange, exc, [], _ms(started)))
        raise
    return await llm.shielded(_store_answer(runtime, actor, exchange, outcome))


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def start_stream(runtime: Runtime, actor: Principal, exchange: Exchange) -> llm.CallStream:
    """Mark the request running and wait for the first chunk (fallback happens here).

    A failure before any output is stored and raised as an ordinary error answer.
    """
    assert exchange.request_id is not None and exchange.route is not None and exchange.chat
    owner = _owner_principal(actor, exchange.owner_id)
    await llm.mark_running(runtime, owner, exchange.request_id)
    stream = llm.CallStream(runtime, exchange.route, exchange.chat, exchange.request_id)
    try:
        await stream.start()
    except ProviderError as exc:
        await llm.shielded(_store_failure(runtime, actor, exchange, exc, exc.attempts,
                                      stream.latency_ms()))
        raise llm.public_error(exc, exc.attempts) from exc
    except BaseException as exc:
        await llm.shielded(_store_failure(runtime, actor, exchange, exc, stream.attempts,
                                      stream.latency_ms()))
        await stream.aclose()
        raise
    return stream


async def stream_events(
    runtime: Runtime, actor: Principal, exchange: Exchange, stream: llm.CallStream
) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
    """Server-sent events: ``start``, ``delta``..., then ``done`` (or ``error``)."""
    yield "start", {"request_id": str(exchange.request_id),
                    "user_message": exchange.user_message.model_dump(mode="json")}
    try:
        async for chunk in stream.chunks():
            if chunk.delta:
                yield "delta", {"content": chunk.delta}
    except Exception as exc:
        attempts = stream.attempts
        await llm.shielded(_store_failure(runtime, actor, exchange, exc, attempts,
                                      stream.latency_ms()))
        problem = llm.public_error(exc, attempts)
        yield "error", {"status": problem.status, "title": problem.title, "detail": problem.detail}
        return
    except BaseException as exc:  # client went away: keep the message, fail the request
        await llm.shielded(_store_failure(runtime, actor, exchange, exc, stream.attempts,
                                      stream.latency_ms()))
        raise
    finally:
        await stream.aclose()
    result = await llm.shielded(_store_answer(runtime, actor, exchange, stream.outcome()))
    yield "done", result.model_dump(mode="json")


# --- session state ----------------------------------------------------------------------


async def get_state(session: AsyncSession, actor: Principal, session_id: uuid.UUID) -> StateOut:
    await get_session(session, actor, session_id)
    row = await session.get(SessionState, session_id)
    if row is None:
        return StateOut(session_id=session_id, state={}, version=0, updated_at=None)
    return StateOut(session_id=session_id, state=row.state, version=row.version,
                    updated_at=row.updated_at)


async def put_state(
    session: AsyncSession, actor: Principal, session_id: uuid.UUID, data: StatePut
) -> StateOut:
    chat_session = await get_session(session, actor, session_id, lock=True)
    if len(json.dumps(data.state)) > _MAX_STATE_BYTES:
        raise PayloadTooLarge(f"session state is larger than {_MAX_STATE_BYTES} bytes")
    row = await session.get(SessionState, session_id, with_for_update=True)
    current = row.version if row is not None else 0
    if data.expected_version is not None and data.expected_version != current:
        raise Conflict(
            f"session state is at version {current}, not {data.expected_version}: "
            "read it again and retry", extra={"version": current},
        )
    if row is None:
        row = SessionState(session_id=session_id, user_id=chat_session.user_id, state=data.state,
                           version=1, updated_at=now())
        session.add(row)
    else:
        row.state, row.version, row.updated_at = data.state, row.version + 1, now()
    await session.flush()
    await audit.record(session, "chat.state.put", user_id=actor.user_id, resource_type=SESSION,
                       resource_id=session_id, metadata={"version": row.version,
                                                         "keys": sorted(data.state)[:50]})
    return StateOut(session_id=session_id, state=row.state, version=row.version,
                    updated_at=row.updated_at)


# --- chat_history (AIWE's event log) ----------------------------------------------------


def event_out(cipher: MessageCipher, row: ChatHistoryEvent) -> HistoryEventOut:
    try:
        message = json.loads(decrypt(cipher, row.message))
    except ValueError:
        message = {}
    return HistoryEventOut(id=row.id, session_id=row.session_id, event_type=row.event_type,
                           message=message, created_at=row.created_at)


async def add_event(
    session: AsyncSession, runtime: Runtime, actor: Principal, session_id: uuid.UUID,
    data: HistoryEventCreate,
) -> HistoryEventOut:
    chat_session = await get_session(session, actor, session_id)
    raw = json.dumps(data.message, separators=(",", ":"), ensure_ascii=False)
    if len(raw) > _MAX_EVENT_BYTES:
        raise PayloadTooLarge(f"history event is larger than {_MAX_EVENT_BYTES} bytes")
    row = ChatHistoryEvent(id=uuid7(), session_id=session_id, user_id=chat_session.user_id,
                           event_type=data.event_type, message=runtime.cipher.encrypt(raw),
                           created_at=now())
    session.add(row)
    await session.flush()
    await audit.record(session, "chat.history.create", user_id=actor.user_id,
                       resource_type=SESSION, resource_id=session_id,
                       metadata={"event_id": str(row.id), "event_type": data.event_type})
    return event_out(runtime.cipher, row)


async def list_events(
    session: AsyncSession, runtime: Runtime, actor: Principal, session_id: uuid.UUID, *,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None, event_type: str | None = None,
) -> tuple[list[HistoryEventOut], str | None]:
    """Oldest first (the log replays a conversation); keyset on (created_at, id)."""
    await get_session(session, actor, session_id)
    stmt = select(ChatHistoryEvent).where(ChatHistoryEvent.session_id == session_id)
    if event_type is not None:
        stmt = stmt.where(ChatHistoryEvent.event_type == event_type)
    if cursor is not None:
        after = decode_cursor(cursor)
        try:
            at = datetime.fromisoformat(str(after["created_at"]))
            last_id = uuid.UUID(str(after["id"]))
        except (KeyError, ValueError) as exc:
            raise BadRequest("cursor is malformed: pass the next_cursor of a previous page") from exc
        stmt = stmt.where(
            (ChatHistoryEvent.created_at > at)
            | ((ChatHistoryEvent.created_at == at) & (ChatHistoryEvent.id > last_id))
        )
    stmt = stmt.order_by(ChatHistoryEvent.created_at, ChatHistoryEvent.id).limit(limit + 1)
    rows = list((await session.scalars(stmt)).all())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor({"created_at": last.created_at.isoformat(), "id": str(last.id)})
    return [event_out(runtime.cipher, r) for r in rows[:limit]], next_cursor


# --- summaries --------------------------------------------------------------------------

SUMMARY_PROMPT = (
    "Summarise the conversation below in a few sentences for the user's records. "
    "Then, on a line starting with 'Topics:', list its main topics separated by commas."
)
SUMMARY_MAX_MESSAGES = 200
SUMMARY_MAX_CHARS = 24_000


def summary_out(cipher: MessageCipher, row: ChatSessionSummary) -> SummaryOut:
    return SummaryOut(
        id=row.id, session_id=row.session_id, started_at=row.started_at, ended_at=row.ended_at,
        message_count=row.message_count, total_tokens_used=row.total_tokens_used,
        conversation_domain=row.conversation_domain, summary=decrypt(cipher, row.summary),
        key_topics=row.key_topics, decisions_made=row.decisions_made,
        user_preferences=row.user_preferences, tools_used=row.tools_used,
        plans_created=row.plans_created, expert_questions_asked=row.expert_questions_asked,
        session_rating=row.session_rating, complexity_level=row.complexity_level,
        resolution_status=row.resolution_status, search_keywords=row.search_keywords,
        follow_up_suggested=row.follow_up_suggested, follow_up_tasks=row.follow_up_tasks,
        model=row.model, llm_request_id=row.llm_request_id, created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def get_summary(
    session: AsyncSession, runtime: Runtime, actor: Principal, session_id: uuid.UUID
) -> SummaryOut:
    await get_session(session, actor, session_id)
    row = (await session.scalars(
        select(ChatSessionSummary).where(ChatSessionSummary.session_id == session_id)
    )).one_or_none()
    if row is None:
        raise NotFound("this session has no summary yet: POST .../summary to make one")
    return summary_out(runtime.cipher, row)


async def update_summary(
    session: AsyncSession, runtime: Runtime, actor: Principal, session_id: uuid.UUID,
    data: SummaryUpdate,
) -> SummaryOut:
    await get_session(session, actor, session_id)
    row = (await session.scalars(
        select(ChatSessionSummary).where(ChatSessionSummary.session_id == session_id)
        .with_for_update()
    )).one_or_none()
    if row is None:
        raise NotFound("this session has no summary yet: POST .../summary to make one")
    changes = {}
    for name, value in data.model_dump(exclude_unset=True).items():
        if value is None and name not in ("session_rating", "conversation_domain"):
            continue  # not nullable: an explicit null means "leave it"
        if getattr(row, name) != value:
            changes[name] = [getattr(row, name), value]
            setattr(row, name, value)
    row.updated_at = now()
    await session.flush()
    await audit.record(session, "chat.summary.update", user_id=actor.user_id,
                       resource_type=SESSION, resource_id=session_id, changes=changes)
    return summary_out(runtime.cipher, row)


def _parse_summary(text: str) -> tuple[str, list[str]]:
    """The model's text and the topics of its 'Topics:' line (if it wrote one)."""
    lines = text.strip().splitlines()
    topics: list[str] = []
    kept: list[str] = []
    for line in lines:
        head, sep, rest = line.partition(":")
        if sep and head.strip().strip("*#- ").lower() in ("topics", "key topics"):
            topics.extend(t.strip(" .*-") for t in rest.split(",") if t.strip(" .*-"))
        else:
            kept.append(line)
    summary = "\n".join(kept).strip() or text.strip()
    return summary, topics[:20]


async def summarize_session(
    runtime: Runtime, session_id: uuid.UUID, *, model: str | None = None
) -> ChatSessionSummary:
    """Write (or rewrite) the session's summary with the configured model.

    Runs as the session's owner (its LLM request and usage are theirs).  Called by the
    ``chat.summarize`` job (``roost.chat.jobs``), or inline when no queue is wanted.
    """
    async with runtime.db.transaction() as session:
        chat_session = await session.get(ChatSession, session_id)
        if chat_session is None:
            raise NotFound(f"no chat session with id {session_id}")
        owner = Principal(user_id=chat_session.user_id, is_admin=False, kind="system")
    async with runtime.transaction(owner) as session:
        rows = list((await session.scalars(
            select(ChatMessage).where(ChatMessage.session_id == session_id)
            .order_by(ChatMessage.seq.desc()).limit(SUMMARY_MAX_MESSAGES)
        )).all())
        if not rows:
            raise Conflict("the session has no messages to summarise")
        rows.reverse()
        stats = (await session.execute(
            select(func.count(), func.min(ChatMessage.created_at), func.max(ChatMessage.created_at),
                   func.coalesce(func.sum(ChatMessage.tokens_in), 0)
                   + func.coalesce(func.sum(ChatMessage.tokens_out), 0))
            .where(ChatMessage.session_id == session_id)
        )).one()
        tools = sorted({r.tool_call_name for r in rows if r.tool_call_name})
        transcript = "\n".join(
            f"{r.role}: {decrypt(runtime.cipher, r.content)}" for r in rows
        )[-SUMMARY_MAX_CHARS:]
        chat = ChatRequest(messages=[LLMMessage(role="system", content=SUMMARY_PROMPT),
                                     LLMMessage(role="user", content=transcript)],
                           temperature=0.2, max_tokens=300)
        route = await llm.resolve_route(session, runtime, model or chat_session.model)
        request = llm.new_request(runtime, owner, chat, route, request_type="summary",
                                  session_id=session_id)
        session.add(request)
        await session.flush()
        await audit.record(session, "llm.request.create", user_id=owner.user_id,
                           category="system", resource_type=llm.REQUEST_RESOURCE,
                           resource_id=request.id,
                           metadata={"type": "summary", "session_id": str(session_id)})
    await llm.mark_running(runtime, owner, request.id)
    started = time.perf_counter()
    try:
        outcome = await llm.execute(runtime, route, chat, request.id)
    except ProviderError as exc:
        await llm.finish_failed(runtime, owner, request.id, exc, exc.attempts,
                                request_type="summary", model=route.model,
                                latency_ms=_ms(started), session_id=session_id)
        raise llm.public_error(exc, exc.attempts) from exc
    except BaseException as exc:  # cancelled (job timeout, shutdown) or a bug
        await llm.shielded(llm.finish_failed(
            runtime, owner, request.id, exc, [], request_type="summary", model=route.model,
            latency_ms=_ms(started), session_id=session_id))
        raise
    text, topics = _parse_summary(outcome.result.content)
    async with runtime.transaction(owner) as session:
        await llm.record_success(session, runtime, owner, outcome, request_type="summary",
                                 session_id=session_id)
        row = (await session.scalars(
            select(ChatSessionSummary).where(ChatSessionSummary.session_id == session_id)
            .with_for_update()
        )).one_or_none()
        values = dict(
            started_at=stats[1], ended_at=stats[2], message_count=int(stats[0]),
            total_tokens_used=int(stats[3] or 0), summary=runtime.cipher.encrypt(text),
            key_topics=topics, search_keywords=[t.lower() for t in topics], tools_used=tools,
            model=outcome.result.model or outcome.winner.name, llm_request_id=request.id,
        )
        if row is None:
            row = ChatSessionSummary(id=uuid7(), session_id=session_id,
                                     user_id=chat_session.user_id, **values)
            session.add(row)
        else:
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = now()
        await session.flush()
        await audit.record(session, "chat.summary.write", user_id=owner.user_id,
                           category="system", resource_type=SESSION, resource_id=session_id,
                           metadata={"request_id": str(request.id), "messages": int(stats[0])})
    return row

