"""The caller's agents offered at Roost's own MCP endpoint ``/mcp``: one tool per active
agent the principal may run (their own, their personas', public ones), named
``agent__<slug>``, taking ``{"input": "..."}``.

A call starts a run (``source = "mcp"``) in a transaction of its own, so a worker can
pick it up at once, then waits for it up to ``WAIT_S`` and answers the run's output;
a run still going by then is answered with its id and status (follow it at
``/api/v1/runs/{id}``).  The provider's protocol is ``roost.mcpserver.tools.ToolProvider``
(this domain sits below ``mcpserver`` and never imports it)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from mcp import types
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents import runs
from roost.agents.catalog import offered_agents, slug_rank
from roost.agents.models import TERMINAL_RUN_STATUSES, Agent, Run
from roost.agents.schemas import MAX_RUN_INPUT_CHARS, RunCreate
from roost.context import inbound_run_trace
from roost.db.engine import Database
from roost.errors import RoostError
from roost.identity.tenancy import apply_principal
from roost.inputs import is_blank
from roost.principal import Principal

PREFIX: Final = "agent__"
# What a run started by a run's call adds to the caller's trace id (then a fresh uuid).
NESTED: Final = "/mcp-"
MAX_TRACE_CHARS: Final = 255  # runs.trace_id
WAIT_S: Final = 120.0
POLL_S: Final = 0.25
_INVALID = re.compile(r"[^A-Za-z0-9_.-]")

_SCHEMA: Final = {
    "type": "object", "additionalProperties": False, "required": ["input"],
    "properties": {"input": {"type": "string", "minLength": 1,
                             "maxLength": MAX_RUN_INPUT_CHARS,
                             "description": "The task or question for the agent"}},
}


def _text(payload: Mapping[str, Any], *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(payload, default=str))],
        structured_content=dict(payload), is_error=is_error)


async def _caller_ended(session: AsyncSession, trace: str) -> bool:
    """Whether the run that calls (when its user's scope sees it) has ended.  Its row is
    share-locked until the new run is stored, so a cancellation of the caller either
    comes first (and this says so) or waits, then finds the new run under the caller's
    trace id and cancels it too."""
    status = await session.scalar(
        select(Run.status).where(Run.trace_id == trace.rsplit(NESTED, 1)[0])
        .with_for_update(read=True))
    return status in TERMINAL_RUN_STATUSES


class AgentsProvider:
    """The agents domain's tools at ``/mcp``."""

    def __init__(self, database: Database, app_role: str, max_nesting: int = 3) -> None:
        self.database, self.app_role, self.max_nesting = database, app_role, max_nesting

    async def _agents(self, session: AsyncSession, principal: Principal) -> dict[str, Agent]:
        """Each tool name's agent, inactive ones included: a slug resolves as
        roost.agents.catalog.find_agent_by_slug does, so the caller's own inactive agent
        keeps its name (a stranger's public agent of that slug never takes it over)."""
        rows = (await session.scalars(
            select(Agent).where(offered_agents(principal))
            .order_by(Agent.slug, slug_rank(principal), Agent.created_at))).all()
        offered: dict[str, Agent] = {}
        for agent in rows:
            offered.setdefault(_INVALID.sub("_", PREFIX + agent.slug)[:128], agent)
        return offered

    async def list_tools(self, session: AsyncSession, principal: Principal) -> Sequence[types.Tool]:
        return [types.Tool(name=name, title=agent.name,
                           description=(agent.description or f"Run the agent {agent.name!r}")
                           [:1024], input_schema=_SCHEMA)
                for name, agent in (await self._agents(session, principal)).items()
                if agent.is_active]

    async def call_tool(
        self, session: AsyncSession, principal: Principal, name: str, arguments: Mapping[str, Any],
    ) -> types.CallToolResult | Callable[[], Awaitable[types.CallToolResult]] | None:
        if not name.startswith(PREFIX):
            return None
        agent = (await self._agents(session, principal)).get(name)
        if agent is None:
            return None
        if not agent.is_active:
            return _text({"error": f"the agent {agent.slug!r} is inactive"}, is_error=True)
        unknown = sorted(set(arguments) - {"input"})
        if unknown:  # the schema says additionalProperties: false (an ignored key misleads)
            return _text({"error": f"unknown arguments: {', '.join(unknown)[:500]}"}, is_error=True)
        text = arguments.get("input")
        # Blank as the REST API sees it: white space or invisible characters only.
        if not isinstance(text, str) or is_blank(text) or len(text) > MAX_RUN_INPUT_CHARS \
                or "\x00" in text:  # stored as text, which holds no NUL
            return _text({"error": f"'input' must be text of 1 to {MAX_RUN_INPUT_CHARS} "
                                   "characters without NUL"}, is_error=True)

        trace = self._chained_trace()
        if trace is None:
            return _text({"error": f"agents call agents through /mcp at most "
                                   f"{self.max_nesting} deep (ROOST_AGENTS_MAX_NESTING): "
                                   "this run was started that deep already"}, is_error=True)

        async def run_it() -> types.CallToolResult:
            # After /mcp's transaction committed: the run in a transaction of its own (a
            # worker picks it up at once), then the wait, with no transaction open.
            try:
                async with self.database.transaction() as own:
                    await apply_principal(own, principal, app_role=self.app_role)
                    if trace and await _caller_ended(own, trace):
                        return _text({"error": "the calling run has ended"}, is_error=True)
                    run, _ = await runs.create_run(own, principal, agent, RunCreate(input=text),
                                                   source="mcp", trace_id=trace or None)
            except RoostError as exc:
                return _text({"error": exc.detail}, is_error=True)
            except ValidationError as exc:  # what the REST API answers as a 422
                return _text({"error": "; ".join(e["msg"] for e in exc.errors())[:500]},
                             is_error=True)
            try:
                return await self._wait(principal, run.id)
            except asyncio.CancelledError:
                # The caller went away (its call timed out, its run was cancelled): the
                # run it started stops too, instead of going on for nobody.
                await asyncio.shield(self._cancel(principal, run.id))
                raise

        return run_it

    def _chained_trace(self) -> str | None:
        """The trace id of the run a call starts: under the calling run's when an agent
        run calls (``Roost-Run-Trace``), so that cancelling the caller reaches it; ``""``
        (a trace of its own) for any other caller; None when the chain is already
        ``max_nesting`` runs deep (or its trace id would not fit)."""
        calling = inbound_run_trace.get()
        if calling is None:
            return ""
        depth = calling.count(NESTED) + 1  # the new run's: a caller with no NESTED is 0
        # 16 hex digits (64 random bits; trace ids are unique) keep five levels under a
        # 55-character root within 255 characters: a whole UUID made the fifth not fit.
        trace = f"{calling}{NESTED}{uuid.uuid4().hex[:16]}"
        if depth > self.max_nesting or len(trace) > MAX_TRACE_CHARS:
            return None
        return trace

    async def _cancel(self, principal: Principal, run_id: uuid.UUID) -> None:
        try:
            async with self.database.transaction() as session:
                await apply_principal(session, principal, app_role=self.app_role)
                await runs.cancel_run(session, principal, run_id)
        except RoostError:  # finished meanwhile, or its user's account ended
            pass

    async def _wait(self, principal: Principal, run_id: uuid.UUID) -> types.CallToolResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while True:
            async with self.database.transaction() as session:
                await apply_principal(session, principal, app_role=self.app_role)
                run = await runs.get_run(session, principal, run_id)
            if run.status in TERMINAL_RUN_STATUSES:
                payload = {"run_id": str(run.id), "status": run.status,
                           "stop_reason": run.stop_reason, "output": run.output}
                if run.error_message:
                    payload["error"] = run.error_message
                return _text(payload, is_error=run.status != "completed")
            if loop.time() >= deadline:
                return _text({"run_id": str(run.id), "status": run.status,
                              "note": f"still running after {WAIT_S:g} s; follow it at "
                                      f"/api/v1/runs/{run.id}"})
            await asyncio.sleep(POLL_S)
