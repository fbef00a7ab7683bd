"""HTTP routes of the chat API: ``/api/v1/chat/...``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from roost.chat import history, messages, sessions, summaries
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
    SummaryRequested,
    SummaryUpdate,
)
from roost.http.auth import CurrentPrincipal, scoped_request_transaction
from roost.http.deps import Cursor, DbSession, Limit, get_database
from roost.http.reads import ReadSession, read_session, replica_fallback
from roost.http.responses import page_response
from roost.http.routing import RoostRouter
from roost.http.streams import SSE_HEADERS, until_disconnected
from roost.identity.deps import StreamSlots
from roost.identity.resolver import known_caller
from roost.llm.deps import CallerPrincipal, GatewayDep
from roost.llm.gateway import LLMGateway
from roost.pagination import DEFAULT_LIMIT, Page
from roost.principal import Principal

router = RoostRouter(prefix="/api/v1/chat", tags=["chat"])


ChatModelHandler = Callable[[Principal, uuid.UUID, MessageCreate], Awaitable[Any]]
"""A higher domain's answerer for messages whose model is ``<prefix>:...`` (``agent:<slug>``:
roost.agents), registered at start-up in ``app.state.chat_model_handlers``; it answers in
this route's shapes (the exchange as JSON, or the same server-sent events)."""


async def model_handler(
    request: Request, body: MessageCreate, db: AsyncSession, principal: Principal,
    session_id: uuid.UUID,
) -> tuple[ChatModelHandler, MessageCreate] | None:
    """The handler that answers ``body`` and the body naming its model: the model the post
    names, else the session's (docs/chat.md), which may be an ``agent:<slug>`` too."""
    handlers: dict[str, ChatModelHandler] = getattr(request.app.state, "chat_model_handlers", {})
    if not body.reply or not handlers:
        return None
    model = body.model
    if model is None:
        model = (await sessions.get_session(db, principal, session_id)).model
    if model is None or ":" not in model:
        return None  # a provider's model names may hold ':' too ("llama3:8b"): no handler
    handler = handlers.get(model.partition(":")[0])
    return None if handler is None else (handler, body.model_copy(update={"model": model}))


def sse_frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@router.post("/sessions", status_code=status.HTTP_201_CREATED, response_model=SessionOut)
async def create_session(body: SessionCreate, principal: CurrentPrincipal, db: DbSession) -> SessionOut:
    return sessions.session_out(await sessions.create_session(db, principal, body))


@router.get("/sessions", response_model=Page[SessionOut])
@replica_fallback
async def list_sessions(
    principal: CurrentPrincipal, db: ReadSession, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
    external_id: Annotated[str | None, Query(max_length=64)] = None,
    user_id: uuid.UUID | None = None, project_id: uuid.UUID | None = None,
) -> Page[SessionOut]:
    rows, next_cursor = await sessions.list_sessions(
        db, principal, limit=limit, cursor=cursor, external_id=external_id, user_id=user_id,
        project_id=project_id,
    )
    return Page(items=[sessions.session_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/sessions/{session_id}", response_model=SessionOut)
async def get_session(session_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> SessionOut:
    return sessions.session_out(await sessions.get_session(db, principal, session_id))


@router.patch("/sessions/{session_id}", response_model=SessionOut)
async def update_session(
    session_id: uuid.UUID, body: SessionUpdate, principal: CurrentPrincipal, db: DbSession
) -> SessionOut:
    return sessions.session_out(await sessions.update_session(db, principal, session_id, body))


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(session_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> Response:
    await sessions.delete_session(db, principal, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/sessions/{session_id}/messages", response_model=Page[MessageOut])
async def list_messages(
    session_id: uuid.UUID, request: Request, gateway: GatewayDep, limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Newest first; follow ``next_cursor`` to go back in time.

    The hot read: a caller this process knows, without read replicas, is one statement
    with no transaction around it (``messages.read_confirming``: the database confirms
    the caller in it); otherwise the request's transaction, or a replica's."""
    database = get_database(request)
    if database.replicas is None and (caller := await known_caller(request)) is not None:
        page = await caller.run(lambda confirmation, scope: messages.read_confirming(
            database, gateway, caller.principal, session_id, limit=limit, cursor=cursor,
            confirmation=confirmation, scope=scope))
        if page is not None:
            return page_response(*page)  # no model per message
    async with scoped_request_transaction(request) as (primary, principal):
        db = await read_session(request, principal, primary)
        return await _read_messages(session_id=session_id, principal=principal, db=db,
                                    gateway=gateway, limit=limit, cursor=cursor)


@replica_fallback
async def _read_messages(
    *, session_id: uuid.UUID, principal: Principal, db: AsyncSession, gateway: LLMGateway,
    limit: int, cursor: str | None,
) -> Response:
    items, next_cursor = await messages.list_message_values(
        db, gateway, principal, session_id, limit=limit, cursor=cursor)
    return page_response(items, next_cursor)


@router.post(
    "/sessions/{session_id}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=ExchangeOut,
    responses={
        201: {"content": {"text/event-stream": {}},
              "description": "The exchange (JSON), or with stream=true server-sent events: "
                             "start, delta..., done (or error)"},
        409: {"description": "No LLM provider is configured (the problem says how to add one)"},
        413: {"description": "Content longer than ROOST_CHAT_MAX_MESSAGE_CHARS"},
        502: {"description": "The provider failed or answered junk (the message is kept)"},
        504: {"description": "Every provider timed out (the message is kept)"},
    },
)
async def post_message(
    session_id: uuid.UUID, body: MessageCreate, gateway: GatewayDep, request: Request,
    slot: StreamSlots,
) -> Any:
    """Store a message and, unless ``reply`` is false, the model's answer; with ``model:
    "agent:<slug>"`` that agent answers (a run of it; docs/agents.md).

    No database transaction stays open while the model works: the user's message is
    committed first (the request's transaction, which authenticated the caller in its
    first round trip) and survives any provider failure.  A message only recorded, from a
    caller this process knows, is one statement with no transaction around it
    (``messages.record_confirming``: the database confirms the caller in it).
    """
    if not body.reply and (caller := await known_caller(request)) is not None:
        database = get_database(request)
        stored = await caller.run(lambda confirmation, scope: messages.record_confirming(
            database, gateway, caller.principal, session_id, body,
            confirmation=confirmation, scope=scope))
        if stored is not None:
            request.state.principal = caller.principal  # whose write (read replicas)
            return ExchangeOut(user_message=stored)
    async with scoped_request_transaction(request) as (db, principal):
        if body.stream and body.reply:  # a concurrent-stream slot first (429: nothing stored)
            await slot.acquire()
        handled = await model_handler(request, body, db, principal, session_id)
        if handled is None:
            exchange = await messages.post_message(gateway, principal, session_id, body,
                                                   session=db)
    # Committed (and its connection released) before any model or agent is asked.
    if handled is not None:
        handler, named = handled
        return await handler(principal, session_id, named)
    if exchange.request_id is None:
        return ExchangeOut(user_message=exchange.user_message)
    if not body.stream:
        return await messages.answer(gateway, principal, exchange)
    # A client that gives up before the first chunk frees its stream slot at once.
    stream = await until_disconnected(request, messages.start_stream(gateway, principal,
                                                                     exchange))
    events = messages.stream_events(exchange, stream)

    async def body_iter() -> AsyncIterator[bytes]:
        try:
            async for name, data in events:
                yield sse_frame(name, data)
        finally:
            await events.aclose()

    return StreamingResponse(body_iter(), status_code=status.HTTP_201_CREATED,
                             media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/sessions/{session_id}/state", response_model=StateOut)
async def get_state(session_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> StateOut:
    return await sessions.get_state(db, principal, session_id)


@router.put("/sessions/{session_id}/state", response_model=StateOut)
async def put_state(
    session_id: uuid.UUID, body: StatePut, principal: CurrentPrincipal, db: DbSession
) -> StateOut:
    return await sessions.put_state(db, principal, session_id, body)


@router.get("/sessions/{session_id}/history", response_model=Page[HistoryEventOut])
@replica_fallback
async def list_history(
    session_id: uuid.UUID, principal: CurrentPrincipal, db: ReadSession, gateway: GatewayDep,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
    event_type: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[HistoryEventOut]:
    """The session's event log, oldest first."""
    items, next_cursor = await history.list_events(
        db, gateway, principal, session_id, limit=limit, cursor=cursor, event_type=event_type
    )
    return Page(items=items, next_cursor=next_cursor)


@router.post("/sessions/{session_id}/history", status_code=status.HTTP_201_CREATED,
             response_model=HistoryEventOut)
async def add_history(
    session_id: uuid.UUID, body: HistoryEventCreate, principal: CurrentPrincipal, db: DbSession,
    gateway: GatewayDep,
) -> HistoryEventOut:
    return await history.add_event(db, gateway, principal, session_id, body)


@router.get("/sessions/{session_id}/summary", response_model=SummaryOut)
async def get_summary(
    session_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession, gateway: GatewayDep
) -> SummaryOut:
    return await summaries.get_summary(db, gateway, principal, session_id)


@router.patch("/sessions/{session_id}/summary", response_model=SummaryOut)
async def update_summary(
    session_id: uuid.UUID, body: SummaryUpdate, principal: CurrentPrincipal, db: DbSession,
    gateway: GatewayDep,
) -> SummaryOut:
    return await summaries.update_summary(db, gateway, principal, session_id, body)


@router.post("/sessions/{session_id}/summary", status_code=status.HTTP_202_ACCEPTED,
             response_model=SummaryRequested)
async def request_summary(
    session_id: uuid.UUID, principal: CallerPrincipal, gateway: GatewayDep,
    model: Annotated[str | None, Query(max_length=255)] = None,
) -> SummaryRequested:
    """Queue a summary of the session by the configured model (job ``chat.summarize``);
    ``GET .../summary`` returns it once a worker has written it."""
    from roost.chat.jobs import enqueue_summary

    task_id, state = await enqueue_summary(gateway, principal, session_id, model=model)
    return SummaryRequested(session_id=session_id, task_id=task_id, status=state)
