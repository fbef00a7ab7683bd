"""``roost workflows ls|validate|publish|run|resume``: workflows from the command line.

``ls`` and ``publish`` act for one user, ``--user`` (username or e-mail; default: the root
user), in that user's row-level-security scope, through the same services as the API.
``validate`` checks a JSON file (``-``: standard input) holding ``{nodes, edges,
viewport}`` as an XYFlow canvas exports it, without a database; or, given a workflow
(id, a unique start of one, or its exact name), that workflow's draft.  ``run`` starts a
run of a published version and follows it node by node (a worker executes the calling
nodes: ``roost serve`` runs one, or ``roost worker``); ``resume`` goes on with a failed run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.models import OPEN_STEP_STATUSES
from roost.clitools import (
    MAX_INT32,
    MAX_LIST,
    MAX_SECONDS,
    fail,
    id_table,
    load_json,
    parse_input,
    print_table,
    printable,
    read_text,
    when,
)
from roost.db.lookup import id_starts_with
from roost.errors import BadRequest, NotFound
from roost.identity.cliscope import Env, UserOpt
from roost.identity.cliscope import run_as as _run
from roost.principal import Principal
from roost.workflows import graph, runs, service
from roost.workflows.models import WORKFLOW_STATUSES, Workflow, WorkflowVersion
from roost.workflows.schemas import PublishIn, WorkflowRunCreate, WorkflowRunOut

console = Console()
T = TypeVar("T")

workflows_app = typer.Typer(help="Workflows: list, validate, publish, run, resume.",
                             no_args_is_help=True)



async def _workflow(session: AsyncSession, actor: Principal, ref: str) -> Workflow:
    """A workflow the actor can see, by exact name or id (or a unique start of one: hex
    digits and dashes only, so ``%`` or ``_`` is never a pattern matching any id)."""
    named = or_(Workflow.name == ref, id_starts_with(Workflow.id, ref))
    rows = (await session.scalars(select(Workflow).where(service.visible(actor), named)
                                  .limit(3))).all()
    if not rows:
        raise NotFound(f"no workflow you can see is named {ref!r} or has an id starting with it")
    if len(rows) > 1:
        raise BadRequest(f"{ref!r} names several workflows; use the full id")
    return rows[0]



@workflows_app.command("ls")
def workflows_ls(
    user: UserOpt = None,
    status: Annotated[str | None, typer.Option(help="draft, active or archived.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST, help="How many.")] = 50,
) -> None:
    """Your workflows, newest first."""
    if status is not None and status not in WORKFLOW_STATUSES:
        raise fail("Invalid --status", f"must be one of {', '.join(WORKFLOW_STATUSES)}")

    async def go(env: Env) -> list[Workflow]:
        async with env.scoped() as session:
            rows, _ = await service.list_workflows(session, env.principal, status=status,
                                                   limit=limit)
            return rows

    table = id_table("id", "name", "status", "version", "nodes", "edges", "updated",
                     wrap=("name",))
    for w in _run(user, go):
        table.add_row(str(w.id), Text(printable(w.name)), w.status, str(w.latest_version or "-"),
                      str(len(w.nodes)), str(len(w.edges)), when(w.updated_at, seconds=True))
    print_table(console, table)


def _read_graph(source: str) -> dict[str, Any]:
    value = load_json(read_text(source), "Not JSON", source)
    if not isinstance(value, dict) or not isinstance(value.get("nodes", []), list) \
            or not isinstance(value.get("edges", []), list):
        raise fail("Not a workflow graph",
                   f"{source}: expected an object {{nodes: [...], edges: [...], viewport}}")
    return value


def _report(issues: list[graph.Issue], nodes: int, edges: int) -> None:
    if not issues:
        console.print(Text(f"valid: {nodes} nodes, {edges} edges"))
        return
    table = id_table("code", "node", "edge", "problem", wrap=("problem",))
    for i in issues:
        table.add_row(i.code, Text(printable(i.node_id or "-")), Text(printable(i.edge_id or "-")),
                      Text(printable(i.message)))
    print_table(console, table)
    raise fail("Invalid", f"{len(issues)} problem(s)")


@workflows_app.command("validate")
def workflows_validate(
    target: Annotated[str, typer.Argument(
        help="A JSON file ({nodes, edges, viewport}; - for standard input), or a workflow "
             "(id, start of one, or name) whose draft to check; a name ending in .json is "
             "a file.")],
    user: UserOpt = None,
) -> None:
    """Check a graph: every problem, naming its node or edge; exit 1 if there is any."""
    if target == "-" or Path(target).is_file() or target.lower().endswith(".json"):
        found = _read_graph(target)
        nodes, edges = found.get("nodes", []), found.get("edges", [])
        too_big = graph.size_problem(nodes, edges)
        if too_big is not None:
            raise fail("Too large", too_big.message)
        issues = asyncio.run(asyncio.to_thread(graph.validate_graph, nodes, edges,
                                               found.get("viewport")))
        _report(issues, len(nodes), len(edges))
        return

    async def go(env: Env) -> tuple[list[graph.Issue], int, int]:
        async with env.scoped() as session:
            w = await _workflow(session, env.principal, target)
            issues = await service.check_graph(w.nodes, w.edges, w.viewport)
            return issues, len(w.nodes), len(w.edges)

    _report(*_run(user, go))


@workflows_app.command("publish")
def workflows_publish(
    workflow: Annotated[str, typer.Argument(help="Id (or a unique start of one) or name.")],
    user: UserOpt = None,
    note: Annotated[str | None, typer.Option(help="What changed, kept with the version.")] = None,
) -> None:
    """Publish the workflow's draft as its next immutable version."""
    body = parse_input(PublishIn, {"note": note})  # the API's limits on a note

    async def go(env: Env) -> tuple[Workflow, WorkflowVersion]:
        async with env.scoped() as session:
            w = await _workflow(session, env.principal, workflow)
            version = await service.publish(session, env.principal, w.id, note=body.note)
            return w, version

    w, version = _run(user, go)
    console.print(Text(printable(f"Published {w.name} version {version.version} "
                                 f"(sha256 {version.content_hash[:12]})")))


def _parse_inputs(pairs: list[str], from_json: str | None) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if from_json is not None:
        loaded = load_json(read_text(from_json), "Not JSON", from_json)
        if not isinstance(loaded, dict):
            raise fail("Invalid inputs", f"{from_json}: expected a JSON object of inputs")
        inputs.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise fail("Invalid --input", f"{pair!r}: expected NAME=VALUE")
        inputs[name.strip()] = value
    return inputs


async def _follow(env: Env, run_id: uuid.UUID, timeout_s: float) -> WorkflowRunOut:
    """Poll the run until it ends or waits for an approval, a line per node as it ends."""
    shown: set[uuid.UUID] = set()
    deadline = time.monotonic() + timeout_s
    warned = False
    started = time.monotonic()
    while True:
        async with env.scoped() as session:
            run = await runs.read_run(session, env.principal, run_id)
        for step in run.steps:
            if step.id not in shown and step.status not in OPEN_STEP_STATUSES:
                shown.add(step.id)
                took = f"{step.duration_ms} ms" if step.duration_ms is not None else ""
                console.print(Text(printable(f"  {step.status:<10} {step.node_id} ({step.node_type}) "
                                   f"{took}" + (f": {step.error}" if step.error else ""))))
        if run.status in ("completed", "failed", "cancelled") or run.waiting_for:
            return run
        if not warned and time.monotonic() - started > 15 and any(
                s.status == "pending" for s in run.steps):
            warned = True
            console.print(Text("  (nodes are pending: is a worker running? `roost serve` "
                               "runs one, or start `roost worker`)"))
        if time.monotonic() > deadline:
            raise fail("Still running", f"run {run_id} did not finish within {timeout_s:g} s; "
                                        "it goes on: check it again later", code=2)
        await asyncio.sleep(0.3)


def _outcome(run: WorkflowRunOut) -> None:
    if run.waiting_for:
        console.print(Text(printable(f"Run {run.id} waits for approval at {', '.join(run.waiting_for)}: "
                           f"POST /api/v1/workflow-runs/{run.id}/approvals/<node>")))
        return
    console.print(Text(f"Run {run.id} {run.status}"))
    if run.output is not None:
        console.print(Text(printable(run.output)))
    if run.status == "failed":
        raise fail("Run failed", (run.error_message or "") +
                   f"; fix the cause, then: roost workflows resume {run.id}")
    if run.status == "cancelled":
        raise fail("Run cancelled", run.error_message or f"run {run.id} was cancelled")


WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait",
                                       help="Follow the run until it ends (default).")]
TimeoutOpt = Annotated[float, typer.Option(min=1, max=MAX_SECONDS,
                                           help="Stop following after this many seconds.")]


@workflows_app.command("run")
def workflows_run(
    workflow: Annotated[str, typer.Argument(help="Id (or a unique start of one) or name.")],
    user: UserOpt = None,
    input_: Annotated[list[str] | None, typer.Option(
        "--input", "-i", help="An input NAME=VALUE (a string); repeat for more.")] = None,
    inputs_json: Annotated[str | None, typer.Option(
        "--inputs-json", help="A JSON file of inputs ({name: value}; - for standard input).")] = None,
    version: Annotated[int | None, typer.Option(
        min=1, max=MAX_INT32, help="Version; default the newest.")] = None,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 600,
) -> None:
    """Run a published version of a workflow; print each node as it finishes."""
    # checked as the API checks its body (a NUL in an input: one red line, no traceback)
    body = parse_input(WorkflowRunCreate, {"inputs": _parse_inputs(input_ or [], inputs_json),
                                           "version": version})

    async def go(env: Env) -> WorkflowRunOut:
        async with env.scoped() as session:
            w = await _workflow(session, env.principal, workflow)
            run, _ = await runs.start_run(session, env.principal, w.id, body, source="cli")
        console.print(Text(printable(f"Run {run.id} of {w.name} started")))
        if not wait:
            async with env.scoped() as session:
                return await runs.read_run(session, env.principal, run.id)
        return await _follow(env, run.id, timeout)

    _outcome(_run(user, go))


@workflows_app.command("resume")
def workflows_resume(
    run_id: Annotated[uuid.UUID, typer.Argument(help="The failed run's id.")],
    user: UserOpt = None,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 600,
) -> None:
    """Go on with a failed run from its failed nodes (completed nodes do not run again)."""
    async def go(env: Env) -> WorkflowRunOut:
        async with env.scoped() as session:
            await runs.resume_run(session, env.principal, run_id)
        console.print(Text(f"Run {run_id} resumed"))
        if not wait:
            async with env.scoped() as session:
                return await runs.read_run(session, env.principal, run_id)
        return await _follow(env, run_id, timeout)

    _outcome(_run(user, go))


def register(app: typer.Typer) -> None:
    """Add ``roost workflows`` (``roost.domains``)."""
    app.add_typer(workflows_app, name="workflows")
