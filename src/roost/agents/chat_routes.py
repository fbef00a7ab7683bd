"""Agents answering in chat sessions: ``POST /api/v1/chat/sessions/{id}/messages`` with
``model: "agent:<slug>"`` (the chat domain's ``chat_model_handlers`` hook, filled at
start-up).

The user's message is stored in the session first (as any message), then a run of the agent
is queued with the conversation as its input; its answer is stored as the session's
assistant message.  With ``stream: true`` the route answers with chat's own events
(``start``, ``delta`` with the model's text as the run streams it, ``done`` or ``error``),
so a chat client needs nothing new; the run is also at ``/api/v1/runs/{run_id}``.  If the
client goes away the run goes on, and its answer is still stored when it ends.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, status
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy import text

from roost.agents import catalog, events, runs
from roost.agents.models import TERMINAL_RUN_STATUSES, Run
from roost.agents.run_routes import trace_id_for
from roost.agents.schemas import MAX_RUN_INPUT_CHARS, RunCreate
from roost.chat import messages as chat_messages
from roost.chat import runtime_settings as chat_settings
from roost.chat.routes import sse_frame
from roost.chat.schemas import ExchangeOut, MessageCreate, MessageOut
from roost.db.engine import Database
from roost.errors import BadGateway, GatewayTimeout, PayloadTooLarge, RoostError, Unprocessable
from roost.http.streams import SSE_HEADERS
from roost.identity.tenancy import apply_principal
from roost.llm.deps import app_gateway
from roost.llm.schemas import UsageOut
from roost.principal import Principal
from roost.system_settings import runtime

ChatHandler = Callable[[Principal, uuid.UUID, MessageCreate], Awaitable[Any]]


def _transcript(history: list[MessageOut], extra: str) -> str:
    """The run's input: the newest message alone, or the conversation as a transcript
    (oldest turns dropped first to fit the run's input limit); retrieved excerpts first."""
    turns = [m for m in reversed(history) if m.role in ("user", "assistant") and m.content]
    text = turns[-1].content if len(turns) == 1 else ""
    while len(turns) > 1:
        text = "\n\n".join(f"{m.role}: {m.content}" for m in turns)
        if len(_with_excerpts(extra, text)) <= MAX_RUN_INPUT_CHARS:
            break
        turns = turns[1:]
        text = turns[-1].content if len(turns) == 1 else ""
    return _with_excerpts(extra, text)


def _with_excerpts(extra: str, text: str) -> str:
    """``text`` after the retrieved excerpts (their separator counts toward the limit).
    A NUL is left out: chat keeps messages encrypted, with any character, but a run's
    input is text, which holds none."""
    return (f"{extra}\n\n{text}" if extra else text).replace("\x00", "")


def _check_input(extra: str, content: str) -> None:
    """The run's input at its shortest (the message alone after its excerpts; more turns
    are added only while they fit) is refused before anything is stored."""
    try:
        RunCreate(input=_with_excerpts(extra, content))
    except ValidationError as exc:
        if any(e["type"] == "string_too_long" for e in exc.errors()):
            raise PayloadTooLarge(f"an agent's input (the message after its context "
                                  f"excerpts) may hold {MAX_RUN_INPUT_CHARS} characters") from None
        raise Unprocessable("the message is not a valid input for an agent's run",
                            extra={"field": "content"}) from None


def chat_agent_handler(app: FastAPI) -> ChatHandler:
    async def handle(principal: Principal, session_id: uuid.UUID, body: MessageCreate) -> Any:
        database: Database = app.state.db
        app_role: str = app.state.settings.db_app_role
        gateway = app_gateway(app)
        listener: events.RunListener = getattr(app.state, "run_listener", None) \
            or events.RunListener(None)
        assert body.model is not None
        slug = body.model.partition(":")[2]
        if body.role != "user":
            raise Unprocessable("an agent answers user messages only", extra={"field": "role"})
        if body.ensemble is not None:
            raise Unprocessable("an agent cannot answer as an ensemble", extra={"field": "ensemble"})
        if "\x00" in body.content:  # refused before anything is stored, as a run's input is
            raise Unprocessable("a message to an agent must not contain a NUL character",
                                extra={"field": "content"})
        excerpts = "\n\n".join(m.text() for m in chat_messages.context_messages(body))
        _check_input(excerpts, body.content)
        async with database.transaction() as session:  # an unknown agent stores nothing
            await apply_principal(session, principal, app_role=app_role)
            await catalog.require_runnable(
                session, principal, await catalog.find_agent_by_slug(session, principal, slug))
        stored = await chat_messages.post_message(
            gateway, principal, session_id,
            body.model_copy(update={"reply": False, "stream": False, "context": None}))
        async with gateway.transaction(principal) as session:
            # The message just stored and the setting's number of earlier ones (as a
            # plain chat reply sends them; the new message took one of their places).
            history, _ = await chat_messages.list_messages(
                session, gateway, principal, session_id,
                limit=1 + await runtime.get(session, chat_settings.CONTEXT_MESSAGES,
                                            gateway.settings.chat_context_messages))
            agent = await catalog.find_agent_by_slug(session, principal, slug)
            run, _ = await runs.create_run(
                session, principal, agent, RunCreate(input=_transcript(history, excerpts)),
                trace_id=trace_id_for(None, secrets.token_hex(8)), source="chat")
        limit_s = float(run.config.get("timeout_s", 600)) + 30
        user_message = stored.user_message

        async def finish(done: Run) -> ExchangeOut:
            """The run's answer, stored as the session's assistant message."""
            if done.status not in TERMINAL_RUN_STATUSES:
                raise GatewayTimeout(f"the agent's run {done.id} is still {done.status}; "
                                     f"follow it at /api/v1/runs/{done.id}")
            if done.status != "completed":
                raise BadGateway(f"the agent's run {done.id} ended {done.status}"
                                 + (f": {done.error_message}" if done.error_message else ""))
            # As a model's answer: not a user's message (no length limit), and kept if
            # the session was closed while the agent worked (docs/chat.md).
            answer = await chat_messages.store_answer(
                gateway, principal, session_id, content=done.output or "",
                fields={"conversation_domain": "agent"},
                metadata={"run_id": str(run.id), "agent": slug})
            async with database.transaction() as session:
                await apply_principal(session, principal, app_role=app_role)
                # What the run's model calls were charged (its usage rows): it said 0.
                credits = int(await session.scalar(text(
                    "SELECT coalesce(sum(credits_used), 0) FROM usage_records "
                    "WHERE run_id = :r"), {"r": run.id}) or 0)
            return ExchangeOut(
                user_message=user_message, assistant_message=answer,
                provider=f"agent:{slug}", run_id=run.id,
                usage=UsageOut(tokens_input=done.tokens_in, tokens_output=done.tokens_out,
                               credits_used=credits, latency_ms=None, model=body.model))

        async def wait_for_end(on_delta: Callable[[str], None] | None = None) -> Run:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limit_s
            async with listener.subscribe(run.id) as subscription:
                while True:
                    async with database.transaction() as session:
                        await apply_principal(session, principal, app_role=app_role)
                        current = await runs.get_run(session, principal, run.id)
                    if current.status in TERMINAL_RUN_STATUSES or loop.time() >= deadline:
                        return current
                    await subscription.wait()
                    for _, text in subscription.take_deltas():
                        if on_delta is not None:
                            on_delta(text)

        if not body.stream:
            return await finish(await wait_for_end())

        async def frames() -> AsyncIterator[bytes]:
            yield sse_frame("start", {"request_id": None, "run_id": str(run.id),
                                      "user_message": user_message.model_dump(mode="json")})
            deltas: asyncio.Queue[str] = asyncio.Queue()
            # The run and its storing go on if the client leaves (a task of their own).
            ending = asyncio.ensure_future(_ended(wait_for_end(deltas.put_nowait), finish))
            try:
                while not ending.done():
                    getter = asyncio.ensure_future(deltas.get())
                    await asyncio.wait({getter, ending}, timeout=events.KEEPALIVE_S,
                                       return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield sse_frame("delta", {"content": getter.result()})
                    else:
                        getter.cancel()
                        if not ending.done():
                            yield events.keepalive().encode()
                while not deltas.empty():
                    yield sse_frame("delta", {"content": deltas.get_nowait()})
                exchange = ending.result()
            except RoostError as err:
                yield sse_frame("error", {"status": err.status, "title": err.title,
                                          "detail": err.detail})
                return
            yield sse_frame("done", exchange.model_dump(mode="json"))

        return StreamingResponse(frames(), status_code=status.HTTP_201_CREATED,
                                 media_type="text/event-stream", headers=SSE_HEADERS)

    return handle


async def _ended(waiting: Awaitable[Run], finish: Callable[[Run], Awaitable[ExchangeOut]]) -> ExchangeOut:
    return await finish(await waiting)


