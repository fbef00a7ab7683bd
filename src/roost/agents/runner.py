"""The agent loop: executes a run on the task queue, one committed step at a time.

A run is a job (``agents.run``).  The worker calls :func:`execute`, which loops:

1. the context: the persona's and the agent's instructions, chunks retrieved from the
   agent's documents (a ``rag_retrieval`` step, once), the run's input, then every step
   so far turned back into messages;
2. a model call through the LLM gateway (``llm_call`` step) with the permitted tools in
   OpenAI's tool-calling form;
3. each tool call the model asked for, through the tool registry (``tool_call`` steps,
   each with its ``tool_runs`` row and audit record);
4. again, until the model answers without tool calls (``final``) or a limit stops it:
   ``max_steps`` (model calls), ``budget`` (tokens or credits), ``timeout`` (wall time
   since the run started), ``cancelled``.

**Durability.**  Every step is committed as ``running`` before its call starts and
finished (``completed``/``failed``) in the transaction that records its result, with the
run's totals.  A worker killed mid-run leaves its job's lease to expire; the queue gives
the job to another worker, whose :func:`execute` rebuilds the conversation from the
committed steps and goes on: a completed step is never repeated.  A step left
``running`` by the dead worker is an ``llm_call`` (marked ``interrupted`` and asked
again: a model call has no side effects) or a ``tool_call``, retried in place only when
the tool is idempotent (MCP ``idempotentHint``/``readOnlyHint``, or a built-in) and
otherwise marked ``interrupted`` and given to the model as that tool's error.  A run
whose job is out of retries is failed by the job itself or, when its last worker died,
by the periodic sweep (:func:`roost.agents.jobs.sweep_runs`): no run stays ``running``.

**Cancellation.**  ``roost.agents.runs.cancel_run`` closes the run in one transaction;
the loop checks the run's status between steps and, while a call is in flight, once a
second (:func:`_watch_cancel`), and stops.  Nothing it finishes afterwards changes a
cancelled run (every write is conditional on ``status = 'running'``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, cast

import structlog
from sqlalchemy import (
    Insert,
    Select,
    String,
    Table,
    Update,
    Uuid,
    and_,
    any_,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from roost import tracing
from roost.agents import memorytools
from roost.agents.catalog import split_tool_refs, visible_agents
from roost.agents.grants import Grant, grants_of, still_granted
from roost.agents.models import Agent, Persona, Run, RunStep
from roost.agents.personas import role_of
from roost.agents.runs import AGENT_INACTIVE, EVENTS_CHANNEL
from roost.agents.schemas import STORED, AgentConfig
from roost.agents.secrets import resolve_reference
from roost.analytics.models import AnalyticsEvent
from roost.analytics.outbox import event_values
from roost.audit.models import AuditLog
from roost.audit.service import entry_values, record
from roost.billing.models import UsageRecord
from roost.context import outgoing_run_trace
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from roost.db.statements import bound_insert, bound_insert_from, flush_pending, prefixed
from roost.db.transaction import driver_fetch, fetch_on
from roost.errors import Forbidden, LimitReached, PaymentRequired, RoostError
from roost.identity.common import is_admin_user
from roost.identity.models import User, UserGroupMembership
from roost.identity.tenancy import apply_principal
from roost.inputs import strip_invisible
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.models import Document
from roost.knowledge.schemas import SearchRequest
from roost.knowledge.search import search as knowledge_search
from roost.llm import calls, routing
from roost.llm.gateway import LLMGateway
from roost.llm.models import LLMRequest
from roost.llm.orchestration import Attempt
from roost.llm.records import CallOutcome
from roost.llm.routing import Route
from roost.llm.types import ChatMessage, ChatRequest, ChatResult, ToolCall
from roost.principal import SYSTEM, Principal
from roost.prompts import service as prompts
from roost.prompts.models import SystemPrompt
from roost.security.crypto import SecretBox
from roost.tools import builtins
from roost.tools import calls as tool_calls
from roost.tools.config import ToolsConfig
from roost.tools.models import Tool, ToolDependency
from roost.tools.registry import shown_name
from roost.tools.secretrefs import SecretResolver

log = structlog.get_logger(__name__)

REQUEST_TYPE: Final = "agent_step"
CANCEL_POLL_S: Final = 1.0
MAX_TOOL_RESULT_CHARS: Final = 16_000  # a tool's output as the model sees it
DELTA_FLUSH_S: Final = 0.1  # streamed model text goes to listeners at most this often
DELTA_MAX_CHARS: Final = 1500  # NOTIFY payloads stop at 8000 bytes (4 bytes a character)
# The tool calls of one model answer that run; those after are failed steps the model is
# told of (max_steps counts model calls: without this one answer could ask for thousands).
MAX_TOOL_CALLS_PER_TURN: Final = 32
TOOL_CALL_ID_MAX_CHARS: Final = 255  # run_steps.tool_call_id
_FUNCTION_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class RunEnv:
    """What the loop needs from its process: the database, the LLM gateway, the tools'
    settings and secret box, the knowledge settings (retrieval, the search tool)."""

    database: Database
    gateway: LLMGateway
    tools: ToolsConfig
    box: SecretBox
    knowledge: KnowledgeConfig | None
    # Built-in tools this domain implements (send_email: roost.agents.mail.builtin_tools).
    hosted: Mapping[uuid.UUID, tool_calls.HostedBuiltin] = field(default_factory=dict)


@dataclass(frozen=True)
class Offered:
    """A tool offered to the model under ``function`` (OpenAI's function-name rules)."""

    tool_id: uuid.UUID
    name: str
    function: str
    description: str
    schema: dict[str, Any]
    idempotent: bool
    grant: Grant | None = None  # the persona's grant of it: its constraints apply
    visible: bool = True  # the runner may use it without the grant


@dataclass(slots=True)
class _Step:
    """A step as the runner keeps it in memory: its ``run_steps`` row's values (a plain
    object: the runner writes steps by statements, never through the ORM).  Its fields
    are the table's columns (``_STEP_COLUMNS``; a column added to RunStep and not here
    fails every run's load), like the API's RunStepOut, which is read-only and validated."""

    id: uuid.UUID
    created_at: datetime
    run_id: uuid.UUID
    user_id: uuid.UUID
    persona_id: uuid.UUID | None
    step_number: int
    step_type: str
    status: str
    tool_id: uuid.UUID | None
    tool_name: str | None
    tool_call_id: str | None
    tool_run_id: uuid.UUID | None
    llm_request_id: uuid.UUID | None
    input: dict[str, Any] | None
    output: dict[str, Any] | None
    error: str | None
    tokens_in: int
    tokens_out: int
    cost: Decimal
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    node_id: str | None
    iteration: int | None
    task_id: uuid.UUID | None


@dataclass
class _State:
    run: Run
    agent: Agent | None
    persona: Persona | None
    principal: Principal
    config: AgentConfig
    steps: list[_Step] = field(default_factory=list)
    tools: dict[str, Offered] = field(default_factory=dict)
    route: Route | None = None  # the model's providers, resolved at the first model step
    grants: dict[uuid.UUID, Grant] = field(default_factory=dict)  # the persona's tool grants
    member: bool = False  # the run's user is a member of its persona (grants, secrets)
    user_active: bool = True  # the run's user's account, when the run was loaded
    prompt_text: str = ""  # config.system_prompt_key's version, rendered (_use_prompt)
    # Finished calls' records, written by the runner's next transaction (the next step's
    # start or the run's end), before that step starts: one transaction less per call.
    pending: list[Callable[[AsyncSession], Awaitable[None]]] = field(default_factory=list)
    # Tool steps begun (committed running, checked) and not yet run.
    ready: list[tuple[_Step, tool_calls.PreparedCall, dict[str, Any]]] = field(
        default_factory=list)

    @property
    def next_number(self) -> int:
        return max((s.step_number for s in self.steps), default=0) + 1

    @property
    def stranger(self) -> bool:
        """A run of a (public) agent by someone who neither owns it (an agent of no
        persona) nor is a member of its persona: the agent's author wrote its prompt and
        the persona's members read the run, so it is offered none of the runner's own
        tools and no built-in acting on the runner's data (``_offered_tools``)."""
        if self.run.persona_id is not None:
            return not self.member
        return self.agent is None or self.agent.user_id != self.run.user_id


INACTIVE_USER: Final = ("the account that started this run is suspended or deactivated: "
                       "the run was not started (or resumed)")
AGENT_DELETED: Final = ("the agent was deleted (with its persona, or alone) before the run "
                        "started (or resumed): the model was not asked without its "
                        "instructions")

AGENT_MOVED: Final = ("the agent was moved to another persona (or out of its persona) before "
                      "the run started: the run was not started (run it again)")
AGENT_UNSHARED: Final = ("the agent is no longer shared with you (made private, or you are "
                         "no longer a member of its persona) since the run was queued: the "
                         "run was not started")


class _Stop(Exception):  # control flow: the run stops for this reason
    def __init__(self, reason: str, status: str = "completed", error: str | None = None):
        super().__init__(reason)
        self.reason, self.status, self.error = reason, status, error


class _Cancelled(Exception):  # control flow: the run was cancelled meanwhile
    pass


# --- traces (roost.tracing) ---------------------------------------------------------------


def _step_span(state: _State, step_type: str,
               attributes: Mapping[str, tracing.AttributeValue] | None = None
               ) -> tracing.SpanHandle:
    """A step's span: a child of the run's (whose trace is the run's ``trace_id``)."""
    if not tracing.enabled():
        return tracing.NOOP
    return tracing.span(f"agent.step {step_type}", attributes={
        "roost.run.id": str(state.run.id), "roost.trace_id": state.run.trace_id,
        "roost.run.step_type": step_type, **(attributes or {})})


# --- transactions -------------------------------------------------------------------------


@asynccontextmanager
async def _scoped(env: RunEnv, principal: Principal) -> AsyncIterator[AsyncSession]:
    """A transaction in the run's scope.  Finding the run cancelled (:class:`_Cancelled`)
    still commits what was written before (a finished call's records), then stops."""
    cancelled = False
    async with env.database.transaction() as session:
        await apply_principal(session, principal, app_role=env.tools.app_role)
        try:
            yield session
        except _Cancelled:
            cancelled = True
    if cancelled:
        raise _Cancelled


async def _load(env: RunEnv, run_id: uuid.UUID) -> _State | None:
    """The run, its agent and persona, its steps, the tools it may use and the runner's
    principal (as the system: the run's row decides whose scope the rest runs in).  The
    run, agent, persona and the user's groups are one statement; a run not started yet
    has no steps to read (its first claim stores started_at) and, without a persona, no
    grants: its two reads go without a transaction around them (``Database.autocommit``:
    a snapshot shared between them is not needed, a tool changed in between is seen by
    the next step's call anyway).  A resumed run, or a persona's, reads in a transaction."""
    async with env.database.autocommit() as driver:
        found = await fetch_on(driver, _load_statement(), {"run_id": run_id})
        if not found:
            return None
        state = _loaded(found[0])
        run = state.run
        fresh = run.started_at is None and run.persona_id is None
        if fresh and run.status in ("pending", "running"):
            state.tools = await _offered_tools(
                lambda statement, params: fetch_on(driver, statement, params), state)
    if not fresh:
        async with env.database.transaction() as session:
            if run.started_at is not None:
                state.steps = [
                    _Step(**{key: getattr(row, key) for key in _STEP_COLUMNS})
                    for row in (await session.scalars(
                        select(RunStep).where(RunStep.run_id == run_id)
                        .order_by(RunStep.step_number))).all()]
            if run.persona_id is not None:  # a public persona agent run by a non-member:
                # neither the persona's grants nor its secrets (members' runs only)
                state.member = await role_of(session, run.persona_id, run.user_id) is not None
            if run.status in ("pending", "running"):  # grants and tools: see _offered_tools
                if state.member and run.persona_id is not None:
                    state.grants = await grants_of(session, run.persona_id)
                state.tools = await _offered_tools(
                    lambda statement, params: driver_fetch(session, statement, params), state)
    # The run row's totals may lag its last finished step (see _claim_step): count the steps.
    steps = state.steps
    run.tokens_in = sum(s.tokens_in for s in steps)
    run.tokens_out = sum(s.tokens_out for s in steps)
    run.cost = sum((s.cost for s in steps), Decimal(0))
    return state


def _loaded(row: Any) -> _State:
    """A :func:`_load_statement` row as the run's state: the run, agent and persona as
    objects attached to no session (nothing the runner changes on them is written back)."""
    run = cast(Run, _entity(Run, "r_", row))
    agent = cast(Agent | None, _entity(Agent, "a_", row))
    persona = cast(Persona | None, _entity(Persona, "p_", row))
    principal = Principal(user_id=run.user_id, is_admin=False, kind="job",
                          group_ids=frozenset(row["group_ids"] or ()))
    return _State(run=run, agent=agent, persona=persona, principal=principal,
                  config=AgentConfig.model_validate(run.config or {}, context=STORED), steps=[],
                  user_active=bool(row["user_active"]))


_LOADED: Final = ((Run, "r_"), (Agent, "a_"), (Persona, "p_"))


def _entity(model: Any, prefix: str, row: Any) -> Any:
    """``model``'s columns from ``row`` (``prefix`` + attribute name; the engine's
    connections decode JSON); None when the outer join found none."""
    if row[prefix + "id"] is None:
        return None
    return model(**{key: row[prefix + key] for key in model.__mapper__.columns.keys()})


@functools.cache
def _load_statement() -> Select[Any]:
    """The run (``r_`` columns), its agent (``a_``), its persona (``p_``) and its user's
    group ids, by ``run_id``."""
    runs, agents, personas = (cast(Table, m.__table__) for m, _ in _LOADED)
    groups = (select(func.array_agg(UserGroupMembership.group_id))
              .where(UserGroupMembership.user_id == runs.c.user_id)
              .correlate(runs).scalar_subquery())
    active = (select(and_(User.status == literal_column("'active'"), User.is_active))
              .where(User.id == runs.c.user_id).correlate(runs).scalar_subquery())
    columns = [column.label(prefix + key) for model, prefix in _LOADED
               for key, column in model.__mapper__.columns.items()]
    return (select(*columns, groups.label("group_ids"), active.label("user_active"))
            .select_from(runs.outerjoin(agents, agents.c.id == runs.c.agent_id)
                         .outerjoin(personas, personas.c.id == runs.c.persona_id))
            .where(runs.c.id == bindparam("run_id")))


async def _claim_step(session: AsyncSession, state: _State, *,
                      request: Mapping[str, Any] | None = None, **values: Any) -> _Step:
    """In the caller's transaction: the run's next step (``running`` unless ``status``
    says), claimed and inserted by one statement.  The claim marks the run running at this
    step with its totals so far and tells listeners (``step:<n>:<status>``); it takes the
    run's row lock, which orders the step against a concurrent cancel.  Raises
    :class:`_Cancelled` (nothing inserted) when the run was cancelled or finished
    meanwhile.  (Finishing a step writes only the step: the run's totals follow here, at
    its end, and when it is cancelled or failed, from the steps.)  ``request``: a model
    call's ``llm_requests`` row (``calls.prepare_request``), written by the same statement
    when the step is."""
    run, number = state.run, state.next_number
    row: dict[str, Any] = dict.fromkeys(_STEP_COLUMNS)
    now = utcnow()
    row.update(id=uuid7(), created_at=now, started_at=now, run_id=run.id,
               user_id=run.user_id, persona_id=run.persona_id, step_number=number,
               status="running", tokens_in=0, tokens_out=0, cost=Decimal(0))
    row.update(values)
    inserted = await driver_fetch(
        session, _claim_step_statement(tuple(request) if request is not None else ()), {
            "run_id": run.id, "updated_at": now, "started_at": run.started_at,
            "steps_count": number, "tokens_in": run.tokens_in, "tokens_out": run.tokens_out,
            "cost": run.cost, "channel": EVENTS_CHANNEL,
            "event": f"{run.id}:step:{number}:{row['status']}", **prefixed("s_", row),
            **(prefixed("q_", request) if request is not None else {})})
    if not inserted:
        raise _Cancelled
    groups = frozenset(inserted[0]["group_ids"] or ())
    if groups != state.principal.group_ids:
        state.principal = dataclasses.replace(state.principal, group_ids=groups)
    step = _Step(**row)
    state.steps.append(step)
    return step


# The runner's own statements, built once and sent on the transaction's driver connection
# (roost.db.transaction.driver_fetch): a step's rows are written a few times a step, and
# the ORM's unit of work and statement building around them cost more than the writes
# (bench/agents, docs/benchmarks.md "Agent runs").  The step objects the runner keeps in
# memory (_State.steps) are plain _Step objects with the values written.
_OPEN = "status IN ('pending', 'running')"


@functools.cache
def _claim_step_statement(request_keys: tuple[str, ...] = ()) -> Insert:
    """``WITH claimed AS (UPDATE runs ... WHERE <open> RETURNING pg_notify(...)) INSERT
    INTO run_steps SELECT <the step> FROM claimed``: no open run, no step.  With
    ``request_keys``, also ``llm_request AS (INSERT INTO llm_requests SELECT <q_
    parameters> FROM claimed)``: the model call's request with its step, or neither."""
    runs = cast(Table, Run.__table__)
    steps = cast(Table, RunStep.__table__)
    claimed = (update(runs).where(runs.c.id == bindparam("run_id"), text(_OPEN))
               .values({"status": literal_column("'running'"),
                        "started_at": func.coalesce(runs.c.started_at, bindparam("started_at")),
                        **{name: bindparam(name) for name in (
                            "updated_at", "steps_count", "tokens_in", "tokens_out", "cost")}})
               .returning(func.pg_notify(bindparam("channel"), bindparam("event"))
                          .label("notified"))
               .cte("claimed"))
    step = select(*(bindparam("s_" + key, type_=steps.c[key].type) for key in _STEP_COLUMNS))
    # The user's groups as they are now, with the claim (no extra round trip): a member
    # removed from a group mid-run stops seeing its documents from the next step on.
    groups = (select(func.array_agg(UserGroupMembership.group_id))
              .where(UserGroupMembership.user_id == bindparam("s_user_id")).scalar_subquery())
    statement = (insert(steps).from_select(list(_STEP_COLUMNS), step.select_from(claimed))
                 .returning(steps.c.id, groups.label("group_ids")))
    if request_keys:
        statement = statement.add_cte(
            bound_insert_from(LLMRequest, "q_", request_keys, claimed).cte("llm_request"))
    return statement


@functools.cache
def _run_finish_statement() -> Select[Any]:
    """``WITH finished AS (UPDATE runs ... WHERE <open>), closed AS (UPDATE run_steps
    <still running> ...), run_record AS (INSERT INTO audit_logs ... FROM finished),
    run_event AS (INSERT INTO analytics_events ... FROM finished) SELECT pg_notify(...)
    FROM finished``: an open run ends, a step a timeout cut off is closed with it, the
    end's audit record (``a_`` parameters) and analytics event (``e_``) are written, and
    listeners hear ``end:<status>`` — or, for a run ended meanwhile (cancelled), nothing
    happens and no row comes back."""
    runs = cast(Table, Run.__table__)
    steps = cast(Table, RunStep.__table__)
    finished = (update(runs).where(runs.c.id == bindparam("run_id"), text(_OPEN))
                .values({name: bindparam(name) for name in (
                    "status", "stop_reason", "output", "error_message", "completed_at",
                    "updated_at", "tokens_in", "tokens_out", "cost", "steps_count")})
                .returning(runs.c.id).cte("finished"))
    closed = (update(steps)
              .where(steps.c.run_id.in_(select(finished.c.id)), text("status = 'running'"))
              .values(status=literal_column("'interrupted'"),
                      finished_at=bindparam("closed_at"), error=bindparam("closed_error"))
              .cte("closed"))
    audit = bound_insert_from(AuditLog, "a_", _AUDIT_KEYS, finished).cte("run_record")
    event = bound_insert_from(AnalyticsEvent, "e_", _EVENT_KEYS, finished).cte("run_event")
    return (select(func.pg_notify(bindparam("channel"), bindparam("event")).label("notified"))
            .select_from(finished).add_cte(closed).add_cte(audit).add_cte(event))


_STEP_COLUMNS: Final = tuple(RunStep.__mapper__.columns.keys())


@functools.cache
def _step_finish(extra: frozenset[str], audited: bool = False) -> Update:
    """``UPDATE run_steps ... WHERE <running> RETURNING pg_notify(...)``; ``audited``: with
    ``WITH audit_record AS (INSERT INTO audit_logs ...)`` (``a_`` parameters), inserted
    whether or not the step was still running, as a separate record would be."""
    steps = cast(Table, RunStep.__table__)
    names = ("status", "output", "error", "tokens_in", "tokens_out", "cost", "finished_at",
             "duration_ms", *sorted(extra))
    statement = (update(steps)
                 .where(steps.c.id == bindparam("step_id"), text("status = 'running'"))
                 .values({steps.c[name]: bindparam(name) for name in names})
                 .returning(func.pg_notify(bindparam("channel"), bindparam("event"))))
    if audited:
        statement = statement.add_cte(
            bound_insert(AuditLog, "a_", _AUDIT_KEYS).cte("audit_record"))
    return statement


_RECORDED: dict[Update, Update] = {}


def _recorded_step_finish(statement: Update, record: tool_calls.CallRecord) -> Update:
    """``statement`` with a tool call's ``tool_runs`` row, analytics event and audit
    record as its CTEs (``tool_calls.CallRecord.ctes``): the tool's record and the step's
    result in one round trip.  Built once per step-finish shape."""
    recorded = _RECORDED.get(statement)
    if recorded is None:
        recorded = _RECORDED[statement] = statement.add_cte(*record.ctes())
    return recorded


_AUDIT_KEYS: Final = tuple(entry_values("agent.step"))  # every record has the same columns
_EVENT_KEYS: Final = tuple(event_values("agent.run", {}))  # so has every event


# --- the tools offered --------------------------------------------------------------------


def _idempotent(tool: Any) -> bool:  # a Tool, or a row of _OFFER_COLUMNS
    """Safe to call again after a crash cut it off: the tool says so (MCP annotations), or
    it is a built-in that does not say otherwise (they read; send_email says it is not)."""
    hints = tool.annotations or {}
    if "idempotentHint" in hints:
        return bool(hints["idempotentHint"]) or bool(hints.get("readOnlyHint"))
    return bool(hints.get("readOnlyHint")) or tool.kind == "builtin"


# Runs a built statement with named parameters (driver_fetch's or fetch_on's rows).
_Fetch = Callable[[Any, Mapping[str, Any]], Awaitable[list[Any]]]


async def _offered_tools(fetch: _Fetch, state: _State) -> dict[str, Offered]:
    """The agent's permitted tools (ids or names) the runner may use — global ones, the
    runner's own, and those granted to the agent's persona (``persona_tools``) — with the
    tools they require (``tool_dependencies``), keyed by the function name the model
    sees.  Read as the system (a granted tool is another user's row), so the rule is
    spelled out here: a tool the runner may not use is never offered.  A stranger's run
    (``_State.stranger``) is offered global tools only, built-ins acting on the runner's
    own data left out (``roost.tools.builtins.personal``)."""
    wanted = [str(t) for t in (state.agent.tool_permissions if state.agent else [])]
    if not wanted:
        return {}
    ids, names = split_tool_refs(wanted)
    stranger = state.stranger
    # A stranger's run resolves ids and names to global tools only (its grants are none):
    # never to the runner's own tool the agent's author happened to name.
    rows = await fetch(_offered_tools_statement(), {
        "runner_id": None if stranger else state.run.user_id, "granted": list(state.grants),
        "ids": ids, "names": names})
    offered: dict[str, Offered] = {}
    for row in rows:
        tool = _OfferRow(**{key: row[key] for key in _OFFER_COLUMNS})
        if stranger and builtins.personal(tool.id, tool.kind):
            continue  # the model is not told: the agent runs with the rest
        base = _FUNCTION_NAME.sub("_", tool.name)[:60] or "tool"
        function, n = base, 2
        while function in offered:
            function, n = f"{base[:57]}_{n}", n + 1
        offered[function] = Offered(
            tool_id=tool.id, name=tool.name, function=function,
            description=(tool.description or tool.title or tool.name)[:1024],
            schema=tool.input_schema or {"type": "object"}, idempotent=_idempotent(tool),
            grant=state.grants.get(tool.id),
            visible=tool.user_id is None or tool.user_id == state.run.user_id)
    return offered


def _usable(tools: Any) -> Any:
    """A tool the runner may use: global, the runner's own, or granted to the persona."""
    return or_(tools.c.user_id.is_(None), tools.c.user_id == bindparam("runner_id"),
               tools.c.id == any_(bindparam("granted", type_=ARRAY(Uuid))))


# What an offer needs of a tool: rows of these, not Tool entities (no identity map, and
# not the description's embedding or the code).
_OFFER_COLUMNS: Final = ("id", "name", "title", "description", "input_schema", "annotations",
                         "kind", "user_id")


@dataclass(frozen=True)
class _OfferRow:  # a row of _OFFER_COLUMNS
    id: uuid.UUID
    name: str
    title: str | None
    description: str | None
    input_schema: dict[str, Any] | None
    annotations: dict[str, Any] | None
    kind: str
    user_id: uuid.UUID | None


_MAX_DEPENDENCY_DEPTH: Final = 32  # the graph has no cycles; this bounds the walk anyway


@functools.cache
def _offered_tools_statement() -> Select[Any]:
    """The agent's permitted tools (by ``ids`` or ``names``) the runner may use, then the
    usable tools they require, transitively (``WITH RECURSIVE``), nearest first: one
    statement, parameters as arrays (built once, no IN-list expansion per call)."""
    tools = cast(Table, Tool.__table__)
    deps = cast(Table, ToolDependency.__table__)
    # Constants as SQL literals: the driver is sent the named parameters only.
    offered = (select(tools.c.id, literal_column("0").label("depth")).where(
        tools.c.enabled, tools.c.available, _usable(tools),
        or_(tools.c.id == any_(bindparam("ids", type_=ARRAY(Uuid))),
            tools.c.name == any_(bindparam("names", type_=ARRAY(String)))))
        .cte("offered", recursive=True))
    required = tools.alias("required")
    # UNION, not UNION ALL: one row per (tool, depth).  The graph has no cycles but may
    # have diamonds, and UNION ALL walked every path: layers of two tools each requiring
    # both of the next made 2 ** depth rows.
    offered = offered.union(
        select(required.c.id, offered.c.depth + literal_column("1"))
        .join_from(offered, deps, deps.c.tool_id == offered.c.id)
        .join(required, required.c.id == deps.c.depends_on_tool_id)
        .where(deps.c.dependency_type == literal_column("'requires'"),
               # a user's edges are that user's graph (tool_dependencies is owned)
               or_(deps.c.user_id.is_(None), deps.c.user_id == bindparam("runner_id")),
               required.c.enabled,
               required.c.available, _usable(required),
               offered.c.depth < literal_column(str(_MAX_DEPENDENCY_DEPTH))))
    nearest = (select(offered.c.id, func.min(offered.c.depth).label("depth"))
               .group_by(offered.c.id).subquery("nearest"))
    return (select(*(tools.c[name] for name in _OFFER_COLUMNS))
            .join(nearest, nearest.c.id == tools.c.id)
            .order_by(nearest.c.depth, tools.c.created_at, tools.c.id))


def _tool_specs(tools: dict[str, Offered]) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    return [{"type": "function",
             "function": {"name": t.function, "description": t.description,
                          "parameters": t.schema}} for t in tools.values()]


# --- the conversation, rebuilt from the steps --------------------------------------------


def _system_prompt(state: _State) -> str:
    persona_prompt = (state.persona.system_prompt or "").strip() if state.persona else ""
    agent_prompt = (state.agent.system_prompt or "").strip() if state.agent else ""
    parts = [state.prompt_text, agent_prompt]
    if not state.config.replace_persona_prompt:
        parts.insert(0, persona_prompt)
    retrieved = next((s for s in state.steps if s.step_type == "rag_retrieval"
                      and s.status == "completed"), None)
    if retrieved is not None and (retrieved.output or {}).get("results"):
        passages = "\n\n".join(
            f"[{i}] {r['content']}" for i, r in enumerate(retrieved.output["results"], 1))  # type: ignore[index]
        parts.append("Passages from your documents that may help:\n\n" + passages)
    recalled = next((s for s in state.steps if s.step_type == "memory_recall"
                     and s.status == "completed"), None)
    if recalled is not None and (recalled.output or {}).get("memories"):
        facts = "\n".join(f"- {m['content']} (since {str(m['valid_from'])[:10]})"
                          for m in recalled.output["memories"])  # type: ignore[index]
        parts.append("What you remember about the user (what is true now; a newer fact "
                     "replaces an older one):\n" + facts)
    return "\n\n".join(p for p in parts if p)


def _stored_call_id(call_id: str) -> str:
    """A model's tool call id as ``run_steps.tool_call_id`` holds it: a longer one (the
    model's choice) is cut and made unique again by its hash; the model is answered with
    its own id (``_messages`` maps it back from the model step's output)."""
    if len(call_id) <= TOOL_CALL_ID_MAX_CHARS:
        return call_id
    return f"{call_id[:TOOL_CALL_ID_MAX_CHARS - 65]}#{hashlib.sha256(call_id.encode()).hexdigest()}"


def _tool_message(step: _Step, call_id: str | None) -> ChatMessage:
    if step.status == "completed":
        content = _result_text(step.output or {})
    else:
        content = json.dumps({"error": step.error or step.status}, ensure_ascii=False)
    return ChatMessage(role="tool", tool_call_id=call_id,
                       content=content[:MAX_TOOL_RESULT_CHARS])


def _result_text(output: dict[str, Any]) -> str:
    texts = [c.get("text", "") for c in output.get("content", []) if isinstance(c, dict)
             and c.get("type") == "text"]
    if texts and not output.get("structuredContent"):
        return "\n".join(texts)
    return json.dumps(output.get("structuredContent", output), ensure_ascii=False, default=str)


def _messages(state: _State) -> list[ChatMessage]:
    messages = [ChatMessage(role="user", content=state.run.input)]
    system = _system_prompt(state)
    if system:
        messages.insert(0, ChatMessage(role="system", content=system))
    asked: dict[str, str] = {}  # the last model step's call ids, by their stored form
    for step in state.steps:
        if step.step_type == "llm_call" and step.status == "completed":
            out = step.output or {}
            calls_ = [ToolCall(**c) for c in out.get("tool_calls", [])]
            asked = {_stored_call_id(c.id): c.id for c in calls_}
            messages.append(ChatMessage(role="assistant", content=out.get("content") or None,
                                        tool_calls=calls_ or None))
        elif step.step_type == "tool_call" and step.status in ("completed", "failed",
                                                               "interrupted"):
            stored = step.tool_call_id
            messages.append(_tool_message(step, asked.get(stored or "", stored)))
    return messages


def _pending_tool_calls(state: _State) -> list[tuple[int, ToolCall]]:
    """Tool calls of the last completed model step that have no step yet, with their
    places in that step's answer."""
    last = next((s for s in reversed(state.steps)
                 if s.step_type == "llm_call" and s.status == "completed"), None)
    if last is None:
        return []
    done = {s.tool_call_id for s in state.steps
            if s.step_type == "tool_call" and s.step_number > last.step_number}
    asked = [ToolCall(**c) for c in (last.output or {}).get("tool_calls", [])]
    return [(place, call) for place, call in enumerate(asked)
            if _stored_call_id(call.id) not in done]


def _asked_call(state: _State, step: _Step) -> ToolCall:
    """The model's call a tool step was begun for, as the model sent it: from the answer
    of the model step before it, matched by call id (the step's input keeps the arguments
    cut to MAX_TOOL_RESULT_CHARS: not a call to retry); from that input when none matches."""
    asker = next((s for s in reversed(state.steps) if s.step_type == "llm_call"
                  and s.status == "completed" and s.step_number < step.step_number), None)
    if asker is not None:
        answer = [ToolCall(**c) for c in (asker.output or {}).get("tool_calls", [])]
        asked = [c for c in answer if _stored_call_id(c.id) == step.tool_call_id]
        # One id twice in an answer (the model's choice): its steps took them in order.
        earlier = sum(1 for s in state.steps if s.step_type == "tool_call"
                      and asker.step_number < s.step_number < step.step_number
                      and s.tool_call_id == step.tool_call_id)
        if earlier < len(asked):
            return asked[earlier]
    given = step.input or {}
    return ToolCall(id=step.tool_call_id or "", name=str(given.get("function", "")),
                    arguments=str(given.get("arguments", "{}")))


# --- steps ------------------------------------------------------------------------------------


async def _apply_pending(session: AsyncSession, state: _State) -> None:
    pending, state.pending = state.pending, []
    for write in pending:
        await write(session)


async def _start_step(env: RunEnv, state: _State, **values: Any) -> _Step:
    """Commit a ``running`` step (and ``running`` run) before its call starts."""
    async with _scoped(env, state.principal) as session:
        step = await _add_step(session, state, **values)
    return step


async def _add_step(session: AsyncSession, state: _State, **values: Any) -> _Step:
    """In the caller's transaction: the next step (``running`` unless ``status`` says)."""
    await _apply_pending(session, state)  # the records of calls finished since, first
    return await _claim_step(session, state, **values)


def _settle(state: _State, step: _Step, *, status: str, output: dict[str, Any] | None,
            error: str | None, tokens_in: int = 0, tokens_out: int = 0,
            cost: Decimal = Decimal(0)) -> None:
    """The step's result in the run's memory (what the next model call is told)."""
    step.status, step.output, step.error = status, output, error
    step.tokens_in, step.tokens_out, step.cost = tokens_in, tokens_out, cost
    state.run.tokens_in += tokens_in
    state.run.tokens_out += tokens_out
    state.run.cost += cost


async def _write_finish(
    session: AsyncSession, state: _State, step: _Step, *, status: str,
    output: dict[str, Any] | None = None, error: str | None = None, tokens_in: int = 0,
    tokens_out: int = 0, cost: Decimal = Decimal(0), finished_at: datetime | None = None,
    audit: Mapping[str, Any] | None = None, record: tool_calls.CallRecord | None = None,
    **values: Any,
) -> bool:
    """In the caller's transaction: the step's result, only while it is still running (a
    cancelled run keeps what cancelling wrote); false when it was not.  ``audit``: an
    audit record's values (``entry_values``); ``record``: a tool call's rows (its ledger
    written first: ``tool_calls.write_ledger``); either written by the same statement
    either way."""
    now = finished_at or utcnow()
    started = step.started_at or now
    params = {
        "step_id": step.id, "status": status, "output": output, "error": error,
        "tokens_in": tokens_in, "tokens_out": tokens_out, "cost": cost, "finished_at": now,
        "duration_ms": int((now - started).total_seconds() * 1000), **values,
        "channel": EVENTS_CHANNEL,
        "event": f"{state.run.id}:step:{step.step_number}:{status}"}
    if audit is not None:
        await flush_pending(session)  # as audit.record would: the record may name them
        params.update(prefixed("a_", audit))
    if record is not None:
        params.update(record.params)
    statement = _step_finish(frozenset(values), audit is not None)
    if record is not None:
        statement = _recorded_step_finish(statement, record)
    changed = await driver_fetch(session, statement, params)
    return bool(changed)


async def _finish_step(
    session: AsyncSession, state: _State, step: _Step, *, status: str,
    output: dict[str, Any] | None = None, error: str | None = None, tokens_in: int = 0,
    tokens_out: int = 0, cost: Decimal = Decimal(0), audit: Mapping[str, Any] | None = None,
    **values: Any,
) -> None:
    """The step's result, now, in the caller's transaction; :class:`_Cancelled` when the
    run was cancelled meanwhile (the step is no longer running; ``audit`` is written)."""
    if not await _write_finish(session, state, step, status=status, output=output, error=error,
                               tokens_in=tokens_in, tokens_out=tokens_out, cost=cost,
                               audit=audit, **values):
        raise _Cancelled
    _settle(state, step, status=status, output=output, error=error, tokens_in=tokens_in,
            tokens_out=tokens_out, cost=cost)


async def _recover(env: RunEnv, state: _State) -> list[_Step]:
    """Steps a dead worker left ``running``: model calls are interrupted (asked again),
    tool calls retried in place when idempotent, else interrupted.  Returns the tool
    steps to retry."""
    retry: list[_Step] = []
    for step in [s for s in state.steps if s.status == "running"]:
        offered = next((t for t in state.tools.values() if t.tool_id == step.tool_id), None)
        if step.step_type == "tool_call" and offered is not None and offered.idempotent:
            retry.append(step)
            continue
        reason = ("interrupted: the worker stopped during this call"
                  + ("; not retried because the tool is not marked idempotent"
                     if step.step_type == "tool_call" else ""))
        async with _scoped(env, state.principal) as session:
            await _finish_step(session, state, step, status="interrupted", error=reason)
            await record(session, "agent.step.interrupt", user_id=state.run.user_id,
                         resource_type="run", resource_id=state.run.id,
                         trace_id=state.run.trace_id,
                         metadata={"step_number": step.step_number, "type": step.step_type})
    return retry


# --- cancellation while a call is in flight ---------------------------------------------


async def _watch_cancel(env: RunEnv, run_id: uuid.UUID, task: asyncio.Task[Any]) -> None:
    while not task.done():
        await asyncio.sleep(CANCEL_POLL_S)
        async with env.database.transaction() as session:
            status = await session.scalar(select(Run.status).where(Run.id == run_id))
        if status not in ("pending", "running"):
            task.cancel()
            return


async def _guarded(env: RunEnv, state: _State, coro: Any) -> Any:
    """Run one call bounded by the run's remaining time, cancelled with the run."""
    remaining = state.config.timeout_s - _elapsed_s(state)
    if remaining <= 0:
        coro.close()
        raise _Stop("timeout")
    task = asyncio.ensure_future(coro)
    watcher = asyncio.ensure_future(_watch_cancel(env, state.run.id, task))
    try:
        async with asyncio.timeout(remaining):
            return await task
    except TimeoutError:
        raise _Stop("timeout") from None
    except asyncio.CancelledError:
        # The watcher cancelled the call because the run was cancelled; anything else
        # (the job itself cancelled: shutdown, its own timeout) goes on up.
        if task.cancelled() and watcher.done() and not watcher.cancelled():
            raise _Cancelled from None
        raise
    finally:
        watcher.cancel()
        with suppress(asyncio.CancelledError):
            await watcher


def _elapsed_s(state: _State) -> float:
    started = state.run.started_at or utcnow()
    return (utcnow() - started).total_seconds()


# --- the loop -----------------------------------------------------------------------------


def _check_limits(state: _State) -> None:
    cfg = state.config
    model_steps = sum(1 for s in state.steps if s.step_type == "llm_call"
                      and s.status == "completed")
    if model_steps >= cfg.max_steps:
        raise _Stop("max_steps")
    if cfg.max_tokens is not None and state.run.tokens_in + state.run.tokens_out >= cfg.max_tokens:
        raise _Stop("budget")
    if cfg.max_cost is not None and state.run.cost >= Decimal(str(cfg.max_cost)):
        raise _Stop("budget")
    if _elapsed_s(state) >= cfg.timeout_s:
        raise _Stop("timeout")


def _done_once(state: _State, step_type: str) -> bool:
    """Whether the run's once-per-run read (retrieval, memory recall) was done: finished
    or failed.  One a dead worker left running, recovered as interrupted, is done again
    (it only reads): the resumed run's model was asked without the passages."""
    return any(s.step_type == step_type and s.status != "interrupted" for s in state.steps)


async def _retrieve(env: RunEnv, state: _State) -> None:
    """Once per run: the agent's documents' best chunks for the input, as a step."""
    ids = [uuid.UUID(str(d)) for d in (state.agent.document_ids if state.agent else [])]
    if not ids or state.config.retrieval_k == 0 or env.knowledge is None \
            or _done_once(state, "rag_retrieval"):
        return
    with _step_span(state, "rag_retrieval"):
        await _retrieve_step(env, state, env.knowledge, ids)


async def _retrieve_step(env: RunEnv, state: _State, knowledge: KnowledgeConfig,
                         ids: list[uuid.UUID]) -> None:
    # Stripped first: a run's input may start with more than 2,000 blanks.
    request = SearchRequest(query=strip_invisible(state.run.input)[:2000], k=state.config.retrieval_k,
                            document_ids=ids)
    step = await _start_step(env, state, step_type="rag_retrieval",
                             input={"query": request.query, "k": request.k,
                                    "document_ids": [str(i) for i in ids]})
    try:
        async with _scoped(env, state.principal) as session:
            if state.stranger and state.agent is not None:
                request = request.model_copy(update={"document_ids": await _still_the_authors(
                    session, state.agent.user_id, ids)})
            found = await _guarded(env, state, knowledge_search(session, state.principal,
                                                                knowledge, request)) \
                if request.document_ids else None
        output = {"results": [{"document_id": str(h.document_id), "chunk_index": h.chunk_index,
                               "content": h.content, "score": h.score}
                              for h in (found.results if found is not None else [])]}
        status, error = "completed", None
    except RoostError as exc:
        output, status, error = None, "failed", exc.detail
    async with _scoped(env, state.principal) as session:
        await _finish_step(session, state, step, status=status, output=output, error=error)


async def _still_the_authors(session: AsyncSession, author: uuid.UUID,
                             ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Of ``ids``, the documents the agent's author reads now: their own, or a shared one
    of a group they are still in.  A stranger's run searches only those (and, in its own
    scope, only as far as the runner reads them): the runner's documents are not the
    author's to show the persona's members, who read the run's steps (an author who left
    a group kept reading its documents through strangers' runs of their public agent)."""
    groups = select(UserGroupMembership.group_id).where(UserGroupMembership.user_id == author)
    return list(await session.scalars(select(Document.id).where(
        Document.id.in_(ids),
        or_(Document.user_id == author, Document.group_id.in_(groups) & ~Document.is_private))))


async def _remember(env: RunEnv, state: _State) -> None:
    """Once per run, when the agent asks for it (``memory_k``): the memories of the run's
    user and persona that best fit the input, as a step (roost.memory)."""
    k = state.config.memory_k
    # Not in a stranger's run: the runner's memories would be in a step the persona's
    # members read (state.stranger).
    if k == 0 or state.stranger or _done_once(state, "memory_recall"):
        return
    with _step_span(state, "memory_recall"):
        await _remember_step(env, state, k)


async def _remember_step(env: RunEnv, state: _State, k: int) -> None:
    query = memorytools.recall_query(state.run.input)
    step = await _start_step(env, state, step_type="memory_recall", input={"query": query, "k": k})
    try:
        async with _scoped(env, state.principal) as session:
            found = await _guarded(env, state, memorytools.remember(
                session, state.principal, state.run, query, knowledge=env.knowledge, k=k))
        output: dict[str, Any] | None = {"memories": found}
        status, error = "completed", None
    except RoostError as exc:
        output, status, error = None, "failed", exc.detail
    async with _scoped(env, state.principal) as session:
        await _finish_step(session, state, step, status=status, output=output, error=error)


def _preferred_providers(state: _State) -> list[str]:
    """The providers the run's model calls go to first, in order: the agent's, then its
    persona's default and fallbacks (docs/agents.md, "Providers"); the others follow."""
    persona = state.persona
    names = [state.agent.preferred_provider if state.agent else None,
             persona.default_provider if persona else None,
             *(persona.fallback_providers or [] if persona else [])]
    return list(dict.fromkeys(n.strip() for n in names if isinstance(n, str) and n.strip()))


async def _model_step(env: RunEnv, state: _State) -> list[ToolCall]:
    """One model call as a step; returns its tool calls (none: the final answer)."""
    agent = state.agent
    model = (agent.preferred_model if agent else None) or \
        (state.persona.default_model if state.persona else None)
    chat = ChatRequest(messages=_messages(state), tools=_tool_specs(state.tools),
                       temperature=state.config.temperature,
                       max_tokens=state.config.max_output_tokens)
    call: calls.PendingCall | None = None
    try:
        async with _scoped(env, state.principal) as session:
            # Once per run, and again after an administrator edited or removed one of
            # its providers (the old instance is retired: later steps use the new one).
            if state.route is None or state.route.stale():
                state.route = await routing.resolve_route(session, env.gateway, model,
                                                          prefer=_preferred_providers(state))
            # A metered user's credits are held first, before this transaction writes
            # anything (402/403 ends the run, nothing called; the records of calls
            # finished since stay pending for the run's end).
            call, request = await calls.prepare_request(
                session, env.gateway, state.principal, chat, state.route,
                request_type=REQUEST_TYPE, running=True, run_id=state.run.id,
                agent_id=state.run.agent_id)
            await _apply_pending(session, state)  # the records of calls finished since
            # The step and its request, stored as running, by one statement.
            step = await _claim_step(session, state, step_type="llm_call",
                                     llm_request_id=call.request_id, request=request,
                                     input={"model": model, "messages": len(chat.messages),
                                            "tools": sorted(state.tools)})
            number = step.step_number
            tracing.current().set("roost.run.step_number", number)  # the step's span
    except (PaymentRequired, LimitReached) as exc:
        raise _Stop("error", status="failed", error=f"billing: {exc.detail}") from None
    except RoostError as exc:
        # No provider serves the model (any more), or none is left: the call cannot be
        # made, and the job's retries would not change that (a 5xx may pass: retried).
        # Nothing is held: the transaction rolled back gives a hold back by itself.
        if exc.status >= 500:
            raise
        raise _Stop("error", status="failed",
                    error=f"the model call failed: {exc.detail}") from None
    except _Cancelled:
        if call is not None:  # held, never written: the run was cancelled meanwhile
            await calls.give_back(env.gateway, call)
        raise
    request_id = call.request_id

    async def save(session: AsyncSession, outcome: CallOutcome) -> ChatResult:
        result = outcome.result
        usage = outcome.usage
        output = {"content": result.content,
                  "tool_calls": [c.model_dump() for c in result.tool_calls],
                  "finish_reason": result.finish_reason, "model": result.model}
        # The step's audit record goes with its result (one statement, either way).
        audit = entry_values(
            "agent.step.complete", user_id=state.run.user_id, resource_type="run",
            resource_id=state.run.id, trace_id=state.run.trace_id,
            metadata={"step_number": number, "type": "llm_call",
                      "llm_request_id": str(outcome.request_id),
                      "tool_calls": len(result.tool_calls)})
        with suppress(_Cancelled):  # cancelled meanwhile: the call's records still count
            await _finish_step(session, state, step, status="completed", output=output,
                               tokens_in=result.tokens_in, tokens_out=result.tokens_out,
                               cost=Decimal(usage.credits_used if usage else 0), audit=audit)
            # The tool calls it asks for begin in the same transaction (one less a call),
            # their holds after this call's credits are settled (no request holds a run's
            # rows while it holds credits on a side connection: no lock cycle).
            await calls.settle(session, outcome)
            await _begin_tool_steps(session, env, state, result.tool_calls)
        return result

    async def failed(session: AsyncSession, message: str, attempts: Sequence[Attempt]) -> None:
        # What a stream delivered before it broke off is billed: its usage row, written
        # first in this transaction, gives the step's tokens and cost (so the run's).
        spent = (await session.execute(
            select(UsageRecord.tokens_input, UsageRecord.tokens_output,
                   UsageRecord.credits_used)
            .where(UsageRecord.llm_request_id == request_id))).first()
        tokens_in, tokens_out, used = spent or (0, 0, 0)
        with suppress(_Cancelled):
            await _finish_step(session, state, step, status="failed", error=message[:4000],
                               tokens_in=tokens_in, tokens_out=tokens_out, cost=Decimal(used))
        await record(session, "agent.step.fail", user_id=state.run.user_id, category="error",
                     resource_type="run", resource_id=state.run.id, trace_id=state.run.trace_id,
                     success=False, error_message=message[:1000],
                     metadata={"step_number": number, "type": "llm_call"})

    opened = False  # once streamed() begins, open_stream records the call's end itself

    async def streamed() -> ChatResult:
        nonlocal opened
        opened = True
        stream = await calls.open_stream(env.gateway, call, on_success=save, on_failure=failed)
        pending, flushed_at = "", time.monotonic()
        async with stream:
            async for chunk in stream.chunks():
                pending += chunk.delta or ""
                if pending and time.monotonic() - flushed_at >= DELTA_FLUSH_S:
                    await _send_delta(env, state.run.id, number, pending)
                    pending, flushed_at = "", time.monotonic()
            if pending:  # before the step is recorded finished (listeners stop there)
                await _send_delta(env, state.run.id, number, pending)
        saved: ChatResult | None = stream.saved
        assert saved is not None
        return saved

    try:
        result = await _guarded(env, state, streamed())
    except RoostError as exc:
        raise _Stop("error", status="failed",
                    error=f"the model call of step {number} failed: {exc.detail}") from None
    except BaseException as exc:
        if not opened:  # out of time or cancelled before the model was asked: the request
            # is closed (failed, its credits given back) as a call that fails to start is
            await calls.close_unasked(env.gateway, call, _unasked(exc), failed)
        raise
    return list(result.tool_calls)


def _unasked(exc: BaseException) -> BaseException:
    """Why a model step's call was never made, as its request's error."""
    if isinstance(exc, _Stop):
        return RoostError(f"not asked: the run stopped ({exc.reason}) before the call")
    if isinstance(exc, _Cancelled):
        return RoostError("not asked: the run was cancelled before the call")
    return exc


async def _send_delta(env: RunEnv, run_id: uuid.UUID, number: int, text: str) -> None:
    """The model's text so far to the run's event listeners (a notification, not a row:
    the finished step stores the whole text).  Split to fit NOTIFY's payload limit; one
    statement a part, outside any transaction (its own implicit one sends it).  A NUL,
    which no NOTIFY payload holds, is left out (the step's record decides about it)."""
    text = text.replace("\x00", "")
    if not text:
        return
    async with env.database.autocommit() as driver:
        for start in range(0, len(text), DELTA_MAX_CHARS):
            await driver.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL,
                                 f"{run_id}:delta:{number}:{text[start:start + DELTA_MAX_CHARS]}")


def _secret_resolver(env: RunEnv, state: _State) -> SecretResolver | None:
    """The persona's secrets, resolved when a tool's server names one (at call time only,
    as the system: the run's persona decides, not who started the run)."""
    persona_id = state.run.persona_id
    if persona_id is None or not state.member:
        return None

    async def resolve(server_owner: uuid.UUID | None, secret_type: str | None,
                      key_name: str) -> str:
        return await resolve_reference(env.database, env.box, persona_id, server_owner,
                                       secret_type, key_name, runner=state.run.user_id)

    return resolve


def _parse_call(state: _State, call: ToolCall,
                place: int = 0) -> tuple[Offered | None, dict[str, Any], str | None]:
    """The offered tool and the arguments of a model's tool call (at ``place`` in its
    model step's answer), or what is wrong with it (one call too many, an unknown or
    unpermitted tool, arguments that are not a JSON object; arguments PostgreSQL could not
    store, a NUL in one, are the tool registry's 422, roost.tools.calls)."""
    if place >= MAX_TOOL_CALLS_PER_TURN:
        return None, {}, (f"not run: one answer may ask for at most "
                          f"{MAX_TOOL_CALLS_PER_TURN} tool calls")
    offered = state.tools.get(call.name)
    if offered is None:
        return None, {}, (f"unknown tool {shown_name(call.name)!r}: this agent may call "
                          f"{', '.join(sorted(state.tools)) or 'no tools'}")
    try:
        parsed = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as exc:
        return offered, {}, f"the arguments are not valid JSON: {exc.msg} at {exc.pos}"
    if not isinstance(parsed, dict):
        return offered, {}, "the arguments must be a JSON object"
    return offered, parsed, None


async def _check_still_granted(env: RunEnv, state: _State, offered: Offered) -> None:
    """Before each call a persona's grant allows: the run's user still a member and the
    grant still in force (read now, as the system: the run read its grants when it
    started).  Else the run keeps neither the persona's grants nor its secrets, and a
    tool it could use only through the grant is refused (the model is told)."""
    assert state.run.persona_id is not None
    member, granted = await still_granted(env.database, state.run.persona_id,
                                          state.run.user_id, offered.tool_id)
    if not member:
        state.member, state.grants = False, {}
    if member and granted:
        return
    state.tools = {name: dataclasses.replace(tool, grant=None) if not member
                   or tool.tool_id == offered.tool_id else tool
                   for name, tool in state.tools.items()}
    if not offered.visible:
        raise Forbidden(f"the persona's grant of tool {offered.name!r} was revoked, or this "
                        "run's user left the persona, while the run went on")


async def _prepare(session: AsyncSession, env: RunEnv, state: _State, offered: Offered,
                   arguments: dict[str, Any]) -> tool_calls.PreparedCall:
    """The registry's checks of a call, and the persona grant's constraints.  A tool the
    runner may use only through the grant is another user's row: checked as the system
    (the grant was made by someone who may use it; ``_offered_tools`` chose it).  A metered
    user's credits are held in ``session``'s transaction: after a model call's result it
    holds the payer's row already (the call's settlement), which a hold on another
    connection would wait for."""
    if offered.grant is not None:
        await _check_still_granted(env, state, offered)
        offered.grant.check_arguments(arguments)
    if offered.visible:
        prepared = await tool_calls.prepare_call(
            session, state.principal, env.tools, env.box, tool_id=offered.tool_id,
            name=None, server=None, arguments=arguments, hold=False)
    else:
        async with env.database.transaction() as system:
            prepared = await tool_calls.prepare_call(
                system, SYSTEM, env.tools, env.box, tool_id=offered.tool_id, name=None,
                server=None, arguments=arguments, hold=False)
    reservation = await tool_calls.hold_credits(session, state.principal, env.tools,
                                                prepared.tool_id, state.principal.user_id)
    return dataclasses.replace(prepared, reservation=reservation)


async def _begin_tool_steps(session: AsyncSession, env: RunEnv, state: _State,
                            tool_calls_: Sequence[ToolCall], first_place: int = 0) -> None:
    """In the caller's transaction (the model step's result, or a transaction of its own):
    a step per tool call, committed ``running`` with the tool registry's checks (the tool
    is usable, the arguments match its schema), ready to run once it commits.  A call the
    model got wrong is written as a failed step at once; the model is told of it.  A run
    cancelled meanwhile gets no new steps.  ``first_place``: the first call's place in
    its model step's answer."""
    for place, call in enumerate(tool_calls_, start=first_place):
        offered, arguments, problem = _parse_call(state, call, place)
        prepared: tool_calls.PreparedCall | None = None
        if problem is None and offered is not None:
            try:
                prepared = await _prepare(session, env, state, offered, arguments)
            except RoostError as exc:
                problem = exc.detail
        failed = {"status": "failed", "error": problem, "finished_at": utcnow(),
                  "duration_ms": 0} if problem is not None else {"status": "running"}
        try:
            step = await _claim_step(
                session, state, step_type="tool_call",
                tool_id=offered.tool_id if offered else None,
                tool_name=offered.name if offered else call.name[:256],
                tool_call_id=_stored_call_id(call.id),
                input={"function": call.name[:256],  # as tool_name: a model's is unbounded
                       "arguments": call.arguments[:MAX_TOOL_RESULT_CHARS]}, **failed)
        except _Cancelled:
            return
        if prepared is not None:
            state.ready.append((step, prepared, arguments))


class _Refused(Exception):  # a retried tool call the model can no longer make
    pass


async def _tool_step(env: RunEnv, state: _State, call: ToolCall,
                     step: _Step | None = None, place: int = 0) -> None:
    """A tool call whose step was not begun with its model step's result (a run resumed
    after a crash; ``place`` in that step's answer): begun in a transaction of its own (or,
    for a step being retried, its checks made again), then run."""
    if step is None:
        async with _scoped(env, state.principal) as session:
            await _apply_pending(session, state)
            await _begin_tool_steps(session, env, state, [call], first_place=place)
    else:
        offered, arguments, problem = _parse_call(state, call)
        async with _scoped(env, state.principal) as session:
            try:
                if problem is not None or offered is None:
                    raise _Refused(problem or "unknown tool")
                prepared = await _prepare(session, env, state, offered, arguments)
                state.ready.append((step, prepared, arguments))
            except (RoostError, _Refused) as exc:  # a retried step whose tool went away
                detail = exc.detail if isinstance(exc, RoostError) else str(exc)
                await _finish_step(session, state, step, status="failed", error=detail)
    await _run_ready(env, state)


async def _run_ready(env: RunEnv, state: _State) -> None:
    """Run the begun tool steps, one after the other; each one's records are written by
    the runner's next transaction (:attr:`_State.pending`)."""
    while state.ready:
        step, prepared, arguments = state.ready.pop(0)
        refusal = _grant_refusal(state, step)
        if refusal is not None:  # counted as the calls run, not when they were begun
            _settle(state, step, status="failed", output=None, error=refusal)
            state.pending.append(_refused_finish(state, step, refusal))
            continue
        try:
            with _step_span(state, "tool_call", {"roost.run.step_number": step.step_number,
                                                 "gen_ai.tool.name": prepared.name}):
                result = await _guarded(env, state, tool_calls.execute_call(
                    prepared, env.database, state.principal, env.tools, arguments,
                    knowledge=env.knowledge, hosted=env.hosted, run_id=state.run.id,
                    secrets=_secret_resolver(env, state)))
        except Exception:  # cancelled or out of time while it ran: no record will settle it
            await _give_back_holds(env, state, [prepared])
            raise
        state.pending.append(_tool_finish(state, step, prepared, arguments, result))


async def _give_back_holds(env: RunEnv, state: _State,
                           prepared: Sequence[tool_calls.PreparedCall]) -> None:
    """The credits held for tool calls begun but never recorded (the run ended before or
    while they ran): given back at once (a failure here leaves them to the sweeper)."""
    for call in prepared:
        try:
            await tool_calls.give_back(env.database, state.principal, env.tools, call)
        except Exception as exc:  # the sweeper releases it later
            log.warning("agents.hold_not_given_back", run_id=str(state.run.id),
                        error=type(exc).__name__)


def _grant_refusal(state: _State, step: _Step) -> str | None:
    offered = next((t for t in state.tools.values() if t.tool_id == step.tool_id), None)
    if offered is None or offered.grant is None:
        return None
    return offered.grant.refusal(sum(1 for s in state.steps if s.step_type == "tool_call"
                                     and s.tool_id == step.tool_id and s.status == "completed"))


def _refused_finish(state: _State, step: _Step,
                    refusal: str) -> Callable[[AsyncSession], Awaitable[None]]:
    async def write(session: AsyncSession) -> None:
        await _write_finish(session, state, step, status="failed", error=refusal)
    return write


def _tool_finish(state: _State, step: _Step, prepared: tool_calls.PreparedCall,
                 arguments: dict[str, Any],
                 result: tool_calls.CallResult) -> Callable[[AsyncSession], Awaitable[None]]:
    failure = result.failure
    status = "completed" if failure is None else "failed"
    error = failure.detail if failure else None
    finished_at = utcnow()
    # What the call's ledger row charges (tools.calls.write_ledger): the run's cost, and so
    # its max_cost budget, counts paid tool calls as well as model calls.
    held = prepared.reservation
    cost = Decimal(held.amount) if held is not None and failure is None else Decimal(0)
    _settle(state, step, status=status, output=result.output, error=error, cost=cost)

    async def write(session: AsyncSession) -> None:
        # The tool run and its audit record (whatever happened to the run meanwhile) and
        # the step's result: one statement, the record's rows its CTEs.
        record = tool_calls.CallRecord(
            state.principal, prepared, arguments, result, trace_id=state.run.trace_id,
            run_id=state.run.id, run_step_id=step.id)
        await tool_calls.write_ledger(session, record)
        await _write_finish(session, state, step, status=status, output=result.output,
                            error=error, cost=cost, tool_run_id=record.run.id,
                            finished_at=finished_at, record=record)

    return write


async def _finish_run(env: RunEnv, state: _State, stop: _Stop) -> str:
    """The run's terminal state (unless it was cancelled meanwhile)."""
    last = next((s for s in reversed(state.steps) if s.step_type == "llm_call"
                 and s.status == "completed"), None)
    output = ((last.output or {}).get("content") or None) if last is not None else None
    audit = entry_values(
        f"agent.run.{'complete' if stop.status == 'completed' else 'fail'}",
        user_id=state.run.user_id, resource_type="run", resource_id=state.run.id,
        trace_id=state.run.trace_id, success=stop.status == "completed",
        error_message=stop.error,
        metadata={"stop_reason": stop.reason, "steps": len(state.steps),
                  "tokens": state.run.tokens_in + state.run.tokens_out})
    event = event_values("agent.run", {
        "run_id": str(state.run.id), "agent_id": str(state.run.agent_id),
        "status": stop.status, "stop_reason": stop.reason, "steps": len(state.steps),
        "tokens_input": state.run.tokens_in, "tokens_output": state.run.tokens_out,
        "cost": str(state.run.cost or 0)}, user_id=state.run.user_id)
    async with _scoped(env, state.principal) as session:
        await _apply_pending(session, state)
        await flush_pending(session)  # as audit.record would: the record may name them
        now = utcnow()
        changed = await driver_fetch(session, _run_finish_statement(), {
            "run_id": state.run.id, "status": stop.status, "stop_reason": stop.reason,
            "output": output, "error_message": stop.error, "completed_at": now,
            "updated_at": now, "tokens_in": state.run.tokens_in,
            "tokens_out": state.run.tokens_out, "cost": state.run.cost,
            "steps_count": len(state.steps), "closed_at": now,
            "closed_error": f"stopped: {stop.reason}", "channel": EVENTS_CHANNEL,
            "event": f"{state.run.id}:end:{stop.status}",
            **prefixed("a_", audit), **prefixed("e_", event)})
        if not changed:
            return "cancelled"
        if state.run.system_prompt_id is not None:  # the prompt version's success rate
            await prompts.record_outcome(session, state.run.system_prompt_id,
                                         stop.status == "completed")
        if stop.status == "completed" and output and state.config.learn:
            # Learned from after the run, by a job (the model's extraction is not the run's).
            state.run.output = output
            await memorytools.learn_from_run(session, state.principal, state.run,
                                             cipher=env.gateway.cipher)
    return stop.status


async def _use_prompt(env: RunEnv, state: _State) -> None:
    """The agent's prompt by key (``config.system_prompt_key``), resolved once for the
    run's user, recorded on the run and counted; a resumed run renders the version it
    recorded, so a publish during a run does not change it halfway."""
    key = state.config.system_prompt_key
    if key is None:
        return
    values = {"agent_name": state.agent.name if state.agent else "assistant",
              "date": utcnow().date().isoformat()}
    try:
        if state.run.system_prompt_id is not None:
            # The run is bound to the version it recorded, read as the system: under the
            # user's row-level security a group's version is gone once they leave the
            # group, and the run resolved the key again (another version, counted twice).
            async with env.database.transaction() as session:
                recorded = await session.get(SystemPrompt, state.run.system_prompt_id)
            if recorded is None:
                raise _Stop("error", status="failed", error=(
                    f"the version of system prompt {key!r} this run recorded was deleted"))
            state.prompt_text = prompts.render_row(recorded, values, ignore_unknown=True)
            return
        async with _scoped(env, state.principal) as session:
            used = await prompts.use(session, state.run.user_id, key,
                                     state.config.system_prompt_label, values)
            if used is None:
                raise _Stop("error", status="failed", error=(
                    f"no active version of system prompt {key!r} has the label "
                    f"{state.config.system_prompt_label!r} for the run's user"))
            await session.execute(update(Run).where(Run.id == state.run.id)
                                  .values(system_prompt_id=used.prompt_id)
                                  .execution_options(synchronize_session=False))
    except RoostError as exc:  # a required variable Roost cannot supply, a text too long
        # The version's failure: recorded on the run and its use counted (in a transaction
        # of their own, the failed one rolled back), so its success rate counts the run.
        async with _scoped(env, state.principal) as session:
            found = await prompts.resolve_cached(session, state.run.user_id, key,
                                                 state.config.system_prompt_label)
            if found is not None:
                await session.execute(update(Run).where(Run.id == state.run.id)
                                      .values(system_prompt_id=found.id)
                                      .execution_options(synchronize_session=False))
                await prompts.record_use(session, found.id)
                state.run.system_prompt_id = found.id
        raise _Stop("error", status="failed",
                    error=f"system prompt {key!r}: {exc.detail}") from None
    state.prompt_text, state.run.system_prompt_id = used.text, used.prompt_id


async def execute(env: RunEnv, run_id: uuid.UUID) -> str:
    """Run (or resume) the run to a terminal state; returns that state.  Exceptions other
    than the run's own outcomes propagate, so the queue retries the job (and the next
    attempt resumes from the committed steps)."""
    state = await _load(env, run_id)
    if state is None or state.run.status not in ("pending", "running"):
        return state.run.status if state else "missing"
    # Its MCP calls name it (roost.context.RUN_TRACE_HEADER): a run it starts through
    # Roost's own /mcp is chained under it.
    token = outgoing_run_trace.set(state.run.trace_id)
    try:
        if not tracing.enabled():
            return await _execute(env, state, run_id)
        # The run's spans are in the trace its trace_id names (roost.tracing.trace_ids),
        # linked to the job that runs them (each attempt is a job span of its own trace).
        with tracing.span("agent.run", parent=tracing.run_parent(state.run.trace_id),
                          link_current=True, attributes={
                              "roost.run.id": str(run_id), "roost.trace_id": state.run.trace_id,
                              "roost.agent.id": str(state.run.agent_id)}) as span:
            outcome = await _execute(env, state, run_id)
            span.set("roost.run.outcome", outcome)
            return outcome
    finally:
        outgoing_run_trace.reset(token)


async def _give_back_unrun(env: RunEnv, state: _State) -> None:
    """The tool calls begun (their steps written, credits held) that the run ended before
    running: their holds go back; their steps are closed with the run."""
    unrun, state.ready = [prepared for _, prepared, _ in state.ready], []
    await _give_back_holds(env, state, unrun)


async def _no_longer_runnable(env: RunEnv, state: _State) -> str | None:
    """Why the run's user may no longer run its agent (an edit while the run was queued:
    moved to another persona, made private), else None.  The catalog's rule
    (``visible_agents``, which ``require_runnable`` applied when the run was created), read
    as the system; an administrator runs any agent."""
    agent = state.agent
    assert agent is not None
    if agent.persona_id != state.run.persona_id:  # its prompt, grants and secrets: another's
        return AGENT_MOVED
    async with env.database.transaction() as session:
        if await session.scalar(select(Agent.id).where(
                Agent.id == agent.id, visible_agents(state.principal))) is not None:
            return None
        user = await session.get(User, state.run.user_id)
    return None if user is not None and is_admin_user(user) else AGENT_UNSHARED


async def _execute(env: RunEnv, state: _State, run_id: uuid.UUID) -> str:
    started = time.perf_counter()
    if state.run.started_at is None:  # stored by the first step's claim, which listeners hear
        state.run.started_at = utcnow()
    try:
        if not state.user_active:  # suspended or deactivated since the run was queued
            raise _Stop("error", status="failed", error=INACTIVE_USER)
        # An agent's run always names its agent when created; deleting the agent (or its
        # persona) sets agent_id NULL (runs stay): nothing left to run it as.
        if state.agent is None and state.run.kind == "agent":
            raise _Stop("error", status="failed", error=AGENT_DELETED)
        # Deactivating is "stop running this agent": what was queued does not start, a
        # run already going (it has steps) finishes or is cancelled by its owner.
        if state.agent is not None and not state.agent.is_active and not state.steps:
            raise _Stop("error", status="failed", error=AGENT_INACTIVE)
        # Likewise an agent moved or made private while its run was queued: the run's user
        # may no longer run it (a run under way keeps the agent it started with).
        if state.agent is not None and not state.steps:
            refusal = await _no_longer_runnable(env, state)
            if refusal is not None:
                raise _Stop("error", status="failed", error=refusal)
        for step in await _recover(env, state):  # idempotent tool calls, again in place
            await _tool_step(env, state, _asked_call(state, step), step=step)
        await _use_prompt(env, state)
        await _retrieve(env, state)
        await _remember(env, state)
        while True:
            await _run_ready(env, state)
            for place, call in _pending_tool_calls(state):
                await _tool_step(env, state, call, place=place)
            _check_limits(state)
            with _step_span(state, "llm_call") as span:
                asked = await _model_step(env, state)
                span.set("roost.tool_calls", len(asked))
            if not asked:
                raise _Stop("final")
    except _Stop as stop:
        await _give_back_unrun(env, state)
        outcome = await _finish_run(env, state, stop)
    except _Cancelled:
        await _give_back_unrun(env, state)
        outcome = "cancelled"
        if state.pending:  # a call finished as the run was cancelled: its records stay
            async with _scoped(env, state.principal) as session:
                await _apply_pending(session, state)
    log.info("agents.run_finished", run_id=str(run_id), outcome=outcome,
             steps=len(state.steps), seconds=round(time.perf_counter() - started, 3))
    return outcome

