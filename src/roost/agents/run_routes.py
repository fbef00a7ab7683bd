"""HTTP routes of runs: start one (``POST /api/v1/agents/{id}/runs``), list, read, steps,
cancel, and the live events (server-sent, resumable with ``Last-Event-ID``)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final, Literal

from fastapi import FastAPI, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from roost import tracing
from roost.agents import catalog, events, memorytools, runs
from roost.agents.models import TERMINAL_RUN_STATUSES, Run
from roost.agents.schemas import MAX_RUN_INPUT_CHARS, RunCreate, RunOut, RunStepOut
from roost.context import current_context
from roost.db.engine import Database
from roost.errors import BadGateway, BadRequest, GatewayTimeout, NotFound, PayloadTooLarge, RoostError
from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit, get_database, get_settings_dep
from roost.http.routing import RoostRouter
from roost.http.streams import SSE_HEADERS
from roost.identity.deps import StreamSlots
from roost.identity.resolver import still_signed_in
from roost.identity.tenancy import apply_principal
from roost.llm.deps import CallerPrincipal, GatewayDep
from roost.llm.errors import ModelNotFound
from roost.llm.openai_routes import ChatCompletionBody, ModelDescriber, ModelHandler, error_code
from roost.llm.types import ChatMessage
from roost.pagination import DEFAULT_LIMIT, Page
from roost.principal import Principal

router = RoostRouter(prefix="/api/v1", tags=["runs"])
# How long past its timeout_s an "agent:<slug>" model waits for the run before 504 (a
# worker may pick it up late; the run goes on either way).
WAIT_GRACE_S: Final = 30.0


def trace_id_for(traceparent: str | None, run_hint: str) -> str:
    """A W3C ``traceparent`` naming the run as a span of the request's trace, or of a new
    one; unique per run.  Tracing on, that is the request's own span's trace (which took
    the caller's ``traceparent`` only when usable), so the run's spans join it; off, the
    caller's trace when its ``traceparent`` (given, else the request's) is usable by the
    same W3C rules: a chat with an agent and ``agent:<slug>`` on /v1 included."""
    found = tracing.header_trace(tracing.traceparent() or traceparent
                                 or current_context().traceparent)
    trace, sampled = found or (secrets.token_hex(16), True)
    # The caller's (or the request span's) sampling decision: a run of an unsampled trace
    # records no spans (tracing.run_parent reads the flag back).
    return f"00-{trace}-{run_hint}-{'01' if sampled else '00'}"


# The header as the document states it: any text.  An unusable traceparent is ignored (a
# new trace), as W3C Trace Context asks, never a reason to refuse the run; so are two of
# them.  Read from the request (every occurrence), not declared as a list parameter,
# which the document showed as an array a header cannot be.
_TRACEPARENT_DOC: Final = {"parameters": [{
    "name": "traceparent", "in": "header", "required": False, "schema": {"type": "string"},
    "description": "W3C Trace Context: the run joins the caller's trace; an unusable or "
                   "repeated one is ignored (a new trace)"}]}


@router.post("/agents/{agent_id}/runs", status_code=status.HTTP_202_ACCEPTED,
             response_model=RunOut, openapi_extra=_TRACEPARENT_DOC,
             summary="Start a run of an agent (queued; follow it with /runs/{id}/events)")
async def start_run(
    agent_id: uuid.UUID, body: RunCreate, request: Request, principal: CurrentPrincipal,
    db: DbSession,
) -> RunOut:
    agent = await catalog.get_agent(db, principal, agent_id)
    caller = tracing.sole_traceparent(request.headers.getlist("traceparent"))
    run, _created = await runs.create_run(
        db, principal, agent, body, trace_id=trace_id_for(caller, secrets.token_hex(8)))
    return RunOut.model_validate(run)


@router.get("/runs", response_model=Page[RunOut], summary="Runs you can see, newest first")
async def list_runs(
    principal: CurrentPrincipal, db: DbSession, agent_id: uuid.UUID | None = None,
    persona_id: uuid.UUID | None = None,
    status_: Annotated[Literal["pending", "running", "completed", "failed", "cancelled"] | None,
                       Query(alias="status")] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[RunOut]:
    rows, next_cursor = await runs.list_runs(db, principal, agent_id=agent_id, status=status_,
                                             persona_id=persona_id, limit=limit, cursor=cursor)
    return Page[RunOut](items=[RunOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/runs/{run_id}", response_model=RunOut)
async def get_run(run_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> RunOut:
    return RunOut.model_validate(await runs.get_run(db, principal, run_id))


@router.get("/runs/{run_id}/steps", response_model=list[RunStepOut],
            summary="The run's steps in order")
async def list_steps(run_id: uuid.UUID, principal: CurrentPrincipal,
                     db: DbSession) -> list[RunStepOut]:
    return [RunStepOut.model_validate(s) for s in await runs.list_steps(db, principal, run_id)]


@router.post("/runs/{run_id}/cancel", response_model=RunOut,
             summary="Cancel a run: it, its open steps and tool runs close at once")
async def cancel_run(run_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> RunOut:
    return RunOut.model_validate(await runs.cancel_run(db, principal, run_id))


class RunLearnOut(BaseModel):
    task_id: uuid.UUID
    run_id: uuid.UUID


@router.post("/runs/{run_id}/learn", response_model=RunLearnOut, status_code=status.HTTP_202_ACCEPTED,
             summary="Learn facts from a finished run (its input and answer) into its user's "
                     "(and persona's) memory: a memory.learn job, idempotent")
async def learn_from_run(run_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
                         gateway: GatewayDep) -> RunLearnOut:
    run = await runs.get_run(db, principal, run_id)
    task_id = await memorytools.learn_from_run(db, principal, run, cipher=gateway.cipher)
    return RunLearnOut(task_id=task_id, run_id=run.id)


@router.get("/runs/{run_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "step (started, finished) ... end"}},
            summary="The run's steps as server-sent events, then its end")
async def run_events(
    run_id: uuid.UUID, request: Request, principal: CallerPrincipal, slot: StreamSlots,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=4096)] = None,
) -> StreamingResponse:
    await slot.acquire()  # a concurrent-stream slot (roost.identity.ratelimits), else 429
    database = get_database(request)
    app_role = get_settings_dep(request).db_app_role
    # Set by the domain's start-up; without it (an app whose start-up did not run),
    # subscribers poll.
    listener: events.RunListener = getattr(request.app.state, "run_listener", None) \
        or events.RunListener(None)
    async with database.transaction() as session:  # 404 before the stream starts
        await apply_principal(session, principal, app_role=app_role)
        await runs.get_run(session, principal, run_id)
    cursor = events.parse_last_event_id(last_event_id)

    async def frames() -> AsyncIterator[str]:
        nonlocal cursor
        pending: list[tuple[int, str]] = []  # the model's text not sent yet
        async with listener.subscribe(run_id) as subscription:
            while True:
                try:
                    async with database.transaction() as session:
                        await apply_principal(session, principal, app_role=app_role)
                        # Never ends by itself: the caller's rights are checked whenever
                        # it wakes, as a new request's would be.
                        if not await still_signed_in(session, principal):
                            yield events.signed_out_frame()
                            return
                        run = await runs.get_run(session, principal, run_id)
                        steps = await runs.list_steps(session, principal, run_id,
                                                      after=cursor.first_unsent() - 1)
                except NotFound as exc:  # deleted since (with its user), or hidden now
                    yield events.gone_frame(exc.detail)
                    return
                batch, cursor = events.step_frames(steps, cursor)
                deltas, pending = events.sendable_deltas(
                    pending + subscription.take_deltas(), cursor)
                for frame in batch + deltas:
                    yield frame
                end = events.end_frame(run)
                if end is not None:
                    yield end
                    return
                # The model's text that woke it is sent at the top of the loop, after the
                # caller's rights are checked again (sent here, a member removed or
                # suspended meanwhile got the text written after their rights ended).
                woken = await subscription.wait()
                if not woken:
                    yield events.keepalive()

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


# --- agents as models on the OpenAI-compatible API: model "agent:<slug>" ---------------


def _run_input(messages: list[ChatMessage]) -> str:
    """The run's input: the last user message alone, or the conversation as a transcript
    when the client sends earlier turns (an agent run takes one text; an assistant turn's
    tool calls are written as such, so a tool's answer follows the call it answers).  The
    client's instructions (system and developer messages) are not part of it: the agent
    answers with its own system prompt, as it does everywhere else."""
    turns = [m for m in messages if m.role not in ("system", "developer")]
    if len(turns) == 1:
        return turns[0].text()
    lines = []
    for m in turns:
        said = m.text()
        if m.tool_calls:
            called = ", ".join(f"{c.name}({c.arguments})" for c in m.tool_calls)
            said = f"{said} [called {called}]" if said else f"[called {called}]"
        if said:
            lines.append(f"{m.role}: {said}")
    return "\n\n".join(lines)


async def _wait_terminal(database: Database, principal: Principal, app_role: str,
                         listener: events.RunListener, run_id: uuid.UUID,
                         deadline_s: float) -> Run:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    async with listener.subscribe(run_id) as subscription:
        while True:
            async with database.transaction() as session:
                await apply_principal(session, principal, app_role=app_role)
                run = await runs.get_run(session, principal, run_id)
            if run.status in TERMINAL_RUN_STATUSES or loop.time() >= deadline:
                return run
            await subscription.wait()


def openai_agent_describer(app: FastAPI) -> ModelDescriber:
    """``GET /v1/models/agent:<slug>``: the agent a chat completion of that model would run
    (found as the handler below finds it), None when the caller sees none."""

    async def describe(principal: Principal, model: str) -> dict[str, Any] | None:
        async with app.state.db.transaction() as session:
            await apply_principal(session, principal, app_role=app.state.settings.db_app_role)
            try:
                agent = await catalog.find_agent_by_slug(session, principal,
                                                         model.partition(":")[2])
            except NotFound:
                return None
            return {"id": model, "object": "model",
                    "created": int(agent.created_at.timestamp()), "owned_by": "roost-agent"}

    return describe


def openai_agent_handler(app: FastAPI) -> ModelHandler:
    """Answers ``/v1/chat/completions`` for ``model: "agent:<slug>"``: a run of the agent
    (queued like any other, so a worker executes it), the answer its output."""

    async def handle(principal: Principal, body: ChatCompletionBody) -> Response | dict[str, Any]:
        database: Database = app.state.db
        app_role: str = app.state.settings.db_app_role
        listener: events.RunListener = getattr(app.state, "run_listener", None) \
            or events.RunListener(None)
        slug = body.model.partition(":")[2]
        if not any(m.role == "user" for m in body.messages):  # nothing was asked of it
            raise BadRequest("the messages hold no user message for the agent")
        text = _run_input(body.messages)
        if not text.strip():
            raise BadRequest("the messages hold no text for the agent")
        if "\x00" in text:  # a run's input is stored as text, which holds no NUL
            raise BadRequest("the messages hold a NUL character, which an agent's input "
                             "cannot")
        if len(text) > MAX_RUN_INPUT_CHARS:
            raise PayloadTooLarge(f"the agent's input is {len(text)} characters; the limit "
                                  f"is {MAX_RUN_INPUT_CHARS}")
        async with database.transaction() as session:
            await apply_principal(session, principal, app_role=app_role)
            try:
                agent = await catalog.find_agent_by_slug(session, principal, slug)
            except NotFound:  # unknown or not visible alike: /v1's unknown model
                raise ModelNotFound(f"no model {body.model!r}: no agent {slug!r} is "
                                    "visible to you") from None
            run, _ = await runs.create_run(session, principal, agent, RunCreate(input=text),
                                           trace_id=trace_id_for(None, secrets.token_hex(8)),
                                           source="openai")
        limit_s = float(run.config.get("timeout_s", 600)) + WAIT_GRACE_S
        created = int(time.time())
        cid = f"chatcmpl-{run.id.hex}"

        def answer(done: Run) -> tuple[str, dict[str, int]]:
            # Not for an SDK's own retries (retry_helps=False): each would start another
            # run of the agent, its tools' side effects again (and a live run goes on).
            if done.status not in TERMINAL_RUN_STATUSES:  # the wait gave up: it goes on
                raise GatewayTimeout(f"the agent's run {run.id} is still {done.status}; "
                                     f"follow it at /api/v1/runs/{run.id}", retry_helps=False)
            if done.status != "completed":
                raise BadGateway(f"the agent's run {done.id} ended {done.status}"
                                 + (f": {done.error_message}" if done.error_message else ""),
                                 retry_helps=False)
            usage = {"prompt_tokens": done.tokens_in, "completion_tokens": done.tokens_out,
                     "total_tokens": done.tokens_in + done.tokens_out}
            return done.output or "", usage

        if not body.stream:
            done = await _wait_terminal(database, principal, app_role, listener, run.id, limit_s)
            content, usage = answer(done)
            return {"id": cid, "object": "chat.completion", "created": created,
                    "model": body.model, "choices": [{
                        "index": 0, "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop", "logprobs": None}],
                    "usage": usage, "system_fingerprint": None,
                    "roost": {"run_id": str(run.id), "stop_reason": done.stop_reason}}

        include_usage = bool((body.stream_options or {}).get("include_usage"))

        def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
            frame = {"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": body.model, "choices": [] if delta is None else [{
                         "index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish}], **extra}
            return f"data: {json.dumps(frame, separators=(',', ':'))}\n\n"

        async def stream() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            waiter = asyncio.ensure_future(
                _wait_terminal(database, principal, app_role, listener, run.id, limit_s))
            try:
                while not waiter.done():  # keep proxies from closing a quiet stream
                    await asyncio.wait({waiter}, timeout=events.KEEPALIVE_S)
                    if not waiter.done():
                        yield events.keepalive()
                done = waiter.result()
                content, usage = answer(done)
            except RoostError as err:
                payload = {"error": {"message": err.detail, "type": "api_error",
                                     "param": None, "code": error_code(err)}}
                yield f"data: {json.dumps(payload)}\n\n"
                return
            finally:
                waiter.cancel()
            yield chunk({"content": content})
            yield chunk({}, "stop")
            if include_usage:  # as the gateway's own streams: choices [] and the usage
                yield chunk(None, usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    return handle
