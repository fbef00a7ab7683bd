"""What the nodes that call something do: ``llm`` (the LLM gateway), ``agent`` (a run of
one of the owner's agents), ``tool`` (the tool registry) and ``knowledge`` (retrieval).

Each runs in a queue job, outside any transaction while it waits, in the run owner's
scope (row-level security: the workflow can use only what its owner may use, checked
when the node runs, not when the graph was saved).  Each returns the node's output, a
JSON object whose ``output`` is what templates downstream usually want
(``{{ ask.output }}``); it raises :class:`NodeFailed` for what retrying cannot fix (an
unknown tool, a template naming a missing variable, a 4xx from the model's provider), and
lets anything else propagate so the queue retries the job.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from roost.agents import catalog
from roost.agents.models import TERMINAL_RUN_STATUSES, Run, RunStep
from roost.agents.runner import RunEnv
from roost.agents.runs import RunFinished, cancel_run, child_trace_prefix, create_run
from roost.agents.schemas import MAX_RUN_INPUT_CHARS, RunCreate
from roost.errors import RoostError
from roost.identity.tenancy import apply_principal
from roost.inputs import strip_invisible
from roost.knowledge.schemas import SearchRequest
from roost.knowledge.search import search as knowledge_search
from roost.llm import calls
from roost.llm.routing import resolve_route
from roost.llm.types import ChatMessage, ChatRequest
from roost.principal import Principal
from roost.tools import calls as tool_calls
from roost.tools import registry
from roost.workflows.engine import Node
from roost.workflows.expressions import ExpressionError, TemplateRejected, render_template
from roost.workflows.graph import MAX_LLM_OUTPUT_TOKENS

REQUEST_TYPE: Final = "workflow_node"
AGENT_POLL_S: Final = 0.25


class NodeFailed(Exception):
    """The node cannot succeed as things are: the run fails (and may be resumed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@asynccontextmanager
async def scoped(env: RunEnv, principal: Principal) -> AsyncIterator[AsyncSession]:
    async with env.database.transaction() as session:
        await apply_principal(session, principal, app_role=env.tools.app_role)
        yield session


def render(node: Node, field: str, variables: Mapping[str, Any], *, required: bool = True,
           ) -> str | None:
    """``node.data[field]`` rendered in the sandbox; a refusal fails the node."""
    source = node.data.get(field)
    if not isinstance(source, str) or (not source and not required):
        if required:
            raise NodeFailed(f"node {node.id!r}: data.{field} is missing")
        return None
    try:
        return render_template(source, variables)
    except (TemplateRejected, ExpressionError) as exc:
        raise NodeFailed(f"node {node.id!r}: data.{field}: {exc}") from None


def _rendered_arguments(node: Node, value: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        try:
            return render_template(value, variables)
        except (TemplateRejected, ExpressionError) as exc:
            raise NodeFailed(f"node {node.id!r}: data.arguments: {exc}") from None
    if isinstance(value, dict):
        return {k: _rendered_arguments(node, v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_rendered_arguments(node, v, variables) for v in value]
    return value


def _refusal(node: Node, exc: RoostError) -> NodeFailed:
    return NodeFailed(f"node {node.id!r}: {exc.detail}")


async def run_llm(env: RunEnv, principal: Principal, run: Run, node: Node,
                  variables: Mapping[str, Any]) -> dict[str, Any]:
    prompt = render(node, "prompt", variables) or ""
    system = render(node, "system", variables, required=False)
    messages = ([ChatMessage(role="system", content=system)] if system else []) + [
        ChatMessage(role="user", content=prompt)]
    # A graph saved before max_tokens had its maximum may ask for more: held to it.
    chat = ChatRequest(model=node.data.get("model"), messages=messages,
                       temperature=node.data.get("temperature"),
                       max_tokens=min(int(node.data.get("max_tokens") or MAX_LLM_OUTPUT_TOKENS),
                                      MAX_LLM_OUTPUT_TOKENS))
    provider = node.data.get("provider")
    try:
        async with env.gateway.transaction(principal) as session:
            route = await resolve_route(session, env.gateway, chat.model)
            if provider:
                route.members = [m for m in route.members
                                 if m[0].name.lower() == str(provider).lower()]
                if not route.members:
                    raise NodeFailed(f"node {node.id!r}: provider {provider!r} is unknown, "
                                     f"disabled or does not serve {chat.model or 'a default model'}")
            call = await calls.add_request(session, env.gateway, principal, chat, route,
                                           request_type=REQUEST_TYPE, running=True,
                                           run_id=run.id)
    except RoostError as exc:  # routing: unknown model, no provider
        raise _refusal(node, exc) from None
    try:
        outcome = await calls.run(env.gateway, call)
    except RoostError as exc:
        if exc.status >= 500:
            raise  # the provider failed: the queue retries the job
        raise _refusal(node, exc) from None
    result = outcome.result
    return {"output": result.content or "", "model": result.model,
            "provider": outcome.winner.name, "finish_reason": result.finish_reason,
            "tokens_in": result.tokens_in, "tokens_out": result.tokens_out,
            # the credits its usage record charged: the step's cost, summed into the run's
            "cost": outcome.usage.credits_used if outcome.usage else 0,
            "llm_request_id": str(outcome.request_id)}


async def run_tool(env: RunEnv, principal: Principal, run: Run, node: Node,
                   variables: Mapping[str, Any]) -> dict[str, Any]:
    ref = str(node.data.get("tool", ""))
    arguments = _rendered_arguments(node, node.data.get("arguments") or {}, variables)
    try:
        async with scoped(env, principal) as session:
            tool_id = _uuid(ref)
            if tool_id is None:
                tool_id = (await registry.find_tool(session, principal, ref)).id
            prepared = await tool_calls.prepare_call(
                session, principal, env.tools, env.box, tool_id=tool_id, name=None,
                server=None, arguments=arguments, database=env.database)
    except RoostError as exc:
        raise _refusal(node, exc) from None
    result = await tool_calls.execute_call(
        prepared, env.database, principal, env.tools, arguments, knowledge=env.knowledge,
        hosted=env.hosted, run_id=run.id)
    async with scoped(env, principal) as session:
        tool_run = await tool_calls.record_call(session, principal, prepared, arguments, result,
                                                trace_id=run.trace_id, run_id=run.id)
    if result.failure is not None:
        if result.failure.status >= 500 and result.status != "timeout":
            raise result.failure  # the tool's server failed: the queue retries
        raise _refusal(node, result.failure)
    output = result.output or {}
    texts = [c.get("text", "") for c in output.get("content") or []
             if isinstance(c, dict) and c.get("type") == "text"]
    structured = output.get("structuredContent")
    return {"output": structured if structured is not None else
            ("\n".join(texts) if texts else output),
            "result": output, "tool": prepared.name, "tool_run_id": str(tool_run.id)}


async def run_knowledge(env: RunEnv, principal: Principal, run: Run, node: Node,
                        variables: Mapping[str, Any]) -> dict[str, Any]:
    if env.knowledge is None:
        raise NodeFailed(f"node {node.id!r}: retrieval is not configured on this server")
    # Invisible characters around it dropped (a query of only those is no query: the
    # search refuses it as blank).
    query = strip_invisible(render(node, "query", variables) or "")[:2000]
    if not query:
        raise NodeFailed(f"node {node.id!r}: the query rendered empty")
    try:
        ids = [uuid.UUID(str(d)) for d in node.data.get("document_ids") or []] or None
    except ValueError:  # a graph saved before the ids' pattern was strict: no retry fixes it
        raise NodeFailed(f"node {node.id!r}: data.document_ids holds a malformed id") from None
    request = SearchRequest(query=query, k=int(node.data.get("top_k") or 5), document_ids=ids)
    try:
        async with scoped(env, principal) as session:
            found = await knowledge_search(session, principal, env.knowledge, request)
    except RoostError as exc:
        raise _refusal(node, exc) from None
    passages = [{"document_id": str(h.document_id), "chunk_index": h.chunk_index,
                 "content": h.content, "score": h.score} for h in found.results]
    return {"output": "\n\n".join(h.content for h in found.results), "passages": passages,
            "query": query}


def agent_run_key(step_id: uuid.UUID, task_id: uuid.UUID | None) -> str:
    """The idempotency key of the agent run a step's job starts: the same for the job's
    retries (a job resumed after a crash finds its run), new for the job a resume gives
    the step (the agent runs again rather than handing back the failed run)."""
    return f"workflow-step:{step_id}:{task_id}"


async def _cancel_child(env: RunEnv, principal: Principal, child_id: uuid.UUID) -> None:
    try:
        async with scoped(env, principal) as session:
            await cancel_run(session, principal, child_id)
    except RunFinished:  # it finished meanwhile
        pass


async def run_agent(env: RunEnv, principal: Principal, run: Run, node: Node,
                    variables: Mapping[str, Any], *, step_id: uuid.UUID) -> dict[str, Any]:
    """A run of the agent, started once per step and job (:func:`agent_run_key`), then
    waited for: its own job executes it.  The workflow run cancelled meanwhile, the agent
    run is cancelled too (when the cancel did not already catch it: started just after)."""
    text = (render(node, "input", variables) or "").strip()[:MAX_RUN_INPUT_CHARS]
    if not text:
        raise NodeFailed(f"node {node.id!r}: the agent's input rendered empty")
    ref = str(node.data.get("agent", ""))
    try:
        async with scoped(env, principal) as session:
            task_id = await session.scalar(select(RunStep.task_id).where(RunStep.id == step_id))
            agent = await catalog.find_agent(session, principal, ref)
            child, _ = await create_run(
                session, principal, agent,
                RunCreate(input=text, idempotency_key=agent_run_key(step_id, task_id)),
                # unique like the key: each job's agent run is a run of its own; the node's
                # id (up to 255 characters) cut so that the whole fits runs.trace_id's 255
                trace_id=f"{child_trace_prefix(run)}{node.id[:64]}/{step_id}/{task_id}",
                source="workflow")
    except RoostError as exc:
        raise _refusal(node, exc) from None
    parent = aliased(Run)
    parent_status = select(parent.status).where(parent.id == run.id).scalar_subquery()
    while True:
        async with env.database.transaction() as session:
            status, output, error, parent_now = (await session.execute(
                select(Run.status, Run.output, Run.error_message, parent_status)
                .where(Run.id == child.id))).one()
        # Cancelled, or deleted with its workflow (no row): the agent run stops too.
        if parent_now in ("cancelled", None) and status not in TERMINAL_RUN_STATUSES:
            await _cancel_child(env, principal, child.id)
            raise NodeFailed(f"node {node.id!r}: the workflow run was cancelled")
        if status in TERMINAL_RUN_STATUSES:
            break
        await asyncio.sleep(AGENT_POLL_S)
    if status != "completed":
        raise NodeFailed(f"node {node.id!r}: the agent's run {child.id} {status}"
                         + (f": {error}" if error else ""))
    return {"output": output or "", "run_id": str(child.id), "agent_id": str(agent.id)}


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def execute(env: RunEnv, principal: Principal, run: Run, node: Node,
                  variables: Mapping[str, Any], *, step_id: uuid.UUID) -> dict[str, Any]:
    """Run one calling node; its output."""
    if node.type == "llm":
        return await run_llm(env, principal, run, node, variables)
    if node.type == "tool":
        return await run_tool(env, principal, run, node, variables)
    if node.type == "knowledge":
        return await run_knowledge(env, principal, run, node, variables)
    if node.type == "agent":
        return await run_agent(env, principal, run, node, variables, step_id=step_id)
    raise NodeFailed(f"node {node.id!r}: type {node.type!r} does not run in a job")
