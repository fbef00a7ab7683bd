"""Workflows: create, list, read, change, delete; validate; publish immutable versions,
list and read them, diff two, roll the draft back to one.

A workflow is its owner's (administrators see all); anyone else gets 404, here and by
row-level security.  Every save validates the graph (roost.workflows.graph): too many
nodes or edges is a 413 naming the limit, checked before anything else; any other
problem is a 422 whose ``errors`` name each node or edge.  An empty graph (no nodes, no
edges) may be saved as a draft; publishing needs a valid, non-empty one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any, Final, Literal

from sqlalchemy import delete, false, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.models import TERMINAL_RUN_STATUSES, Run
from roost.agents.runs import RunFinished, cancel_run
from roost.audit.service import record
from roost.db.lookup import one_or_404
from roost.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, Unprocessable
from roost.identity.common import require_user
from roost.inputs import strip_invisible
from roost.pagination import DEFAULT_LIMIT, newest_first, where_equal
from roost.principal import Principal
from roost.process import cpu_bound
from roost.workflows import graph
from roost.workflows.models import Workflow, WorkflowRun, WorkflowVersion
from roost.workflows.schemas import MAX_NAME_CHARS, GraphIn, WorkflowCreate, WorkflowUpdate
from roost.workspace.service import require_project

# Graphs this small (JSON values plus string characters: graph.within) are validated
# inline; larger ones in a thread (it is CPU work, parsing templates most of it).
INLINE_SIZE: Final = 20_000

Ref = int | Literal["draft"]


class InvalidGraph(Unprocessable):
    title, type_slug = "Invalid workflow graph", "invalid-workflow"


def _owner(actor: Principal) -> uuid.UUID:
    return require_user(actor, "workflows")


def visible(actor: Principal) -> Any:
    if actor.is_admin:
        return true()
    if actor.user_id is None:
        return false()
    return Workflow.user_id == actor.user_id


async def check_graph(nodes: Sequence[Any], edges: Sequence[Any],
                      viewport: Any) -> list[graph.Issue]:
    """The graph's problems; 413 at once when it is over a size limit."""
    too_big = graph.size_problem(nodes, edges)
    if too_big is not None:
        raise PayloadTooLarge(too_big.message, extra={
            "limit": too_big.limit, "count": too_big.count, "what": too_big.what})
    if graph.within((nodes, edges, viewport), INLINE_SIZE):
        return graph.validate_graph(nodes, edges, viewport)
    return await cpu_bound(graph.validate_graph, nodes, edges, viewport)


async def validate(body: GraphIn) -> list[graph.Issue]:
    """POST /workflows/validate: the problems of a graph, nothing saved."""
    return await check_graph(body.nodes, body.edges, body.viewport)


async def _require_valid(nodes: list[Any], edges: list[Any], viewport: dict[str, Any],
                         *, allow_empty: bool) -> None:
    if allow_empty and not nodes and not edges:  # a new draft: only the viewport to check
        issues = graph.validate_viewport(viewport)
    else:
        issues = await check_graph(nodes, edges, viewport)
    if issues:
        raise InvalidGraph(
            f"the workflow graph has {len(issues)} problem(s); the first: {issues[0].message}",
            extra={"errors": [i.as_dict() for i in issues]})


async def get_workflow(session: AsyncSession, actor: Principal, workflow_id: uuid.UUID, *,
                       lock: bool = False, key_share: bool = False) -> Workflow:
    """The workflow (404 unless visible to ``actor``); ``lock``: ``FOR UPDATE``;
    ``key_share``: ``FOR KEY SHARE``, which a row pointing at it is about to take anyway,
    taken first (a run's start: see :func:`roost.workflows.runs.start_run`)."""
    stmt = select(Workflow).where(Workflow.id == workflow_id, visible(actor))
    if key_share:
        stmt = stmt.with_for_update(read=True, key_share=True)
    return await one_or_404(session, stmt, lock=lock,
                            missing=f"workflow {workflow_id} does not exist")


async def create_workflow(session: AsyncSession, actor: Principal,
                          body: WorkflowCreate) -> Workflow:
    owner = _owner(actor)
    viewport = body.viewport if body.viewport is not None else dict(graph.DEFAULT_VIEWPORT)
    await _require_valid(body.nodes, body.edges, viewport, allow_empty=True)
    await require_project(session, actor, body.project_id)  # another user's: 404
    workflow = Workflow(user_id=owner, project_id=body.project_id, name=_name(body.name),
                        description=body.description, nodes=body.nodes, edges=body.edges,
                        viewport=viewport, status="draft")
    session.add(workflow)
    await session.flush()
    await session.refresh(workflow)
    await record(session, "workflow.create", user_id=owner, resource_type="workflow",
                 resource_id=workflow.id,
                 changes={"name": workflow.name, "nodes": len(workflow.nodes),
                          "edges": len(workflow.edges)})
    return workflow


def _name(name: str) -> str:
    # Invisible ends too: a name of zero-width spaces only showed nothing in every list.
    stripped = strip_invisible(name)
    if not stripped:
        raise Unprocessable("name must not be blank", extra={"field": "name"})
    # The limit holds for the name as stored: one pasted with a trailing zero-width space
    # is checked without it.
    if len(stripped) > MAX_NAME_CHARS:
        raise Unprocessable(f"name must be at most {MAX_NAME_CHARS} characters (without "
                            "white space or invisible characters at its ends)",
                            extra={"field": "name"})
    return stripped


async def list_workflows(
    session: AsyncSession, actor: Principal, *, status: str | None = None,
    project_id: uuid.UUID | None = None, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[Workflow], str | None]:
    stmt = where_equal(select(Workflow).where(visible(actor)), (Workflow.status, status),
                       (Workflow.project_id, project_id))
    return await newest_first(session, stmt, Workflow.created_at, Workflow.id, limit=limit,
                              cursor=cursor)


async def update_workflow(session: AsyncSession, actor: Principal, workflow_id: uuid.UUID,
                          body: WorkflowUpdate) -> Workflow:
    workflow = await get_workflow(session, actor, workflow_id, lock=True)
    given = body.model_fields_set
    for field in ("name", "nodes", "edges", "viewport", "status"):
        if field in given and getattr(body, field) is None:
            raise Unprocessable(f"{field} cannot be null", extra={"field": field})
    changed: dict[str, Any] = {}
    if given & {"nodes", "edges", "viewport"}:
        nodes = body.nodes if body.nodes is not None else workflow.nodes
        edges = body.edges if body.edges is not None else workflow.edges
        viewport = body.viewport if body.viewport is not None else workflow.viewport
        # Empty is for drafts: as the workflow will be after this change.
        await _require_valid(nodes, edges, viewport,
                             allow_empty=(body.status or workflow.status) == "draft")
        for field, value in (("nodes", nodes), ("edges", edges), ("viewport", viewport)):
            if getattr(workflow, field) != value:
                setattr(workflow, field, value)
                changed[field] = len(value) if isinstance(value, list) else "changed"
    if body.name is not None and _name(body.name) != workflow.name:
        changed["name"] = {"before": workflow.name, "after": _name(body.name)}
        workflow.name = _name(body.name)
    if "description" in given and body.description != workflow.description:
        workflow.description = body.description
        changed["description"] = "changed"
    if "project_id" in given and body.project_id != workflow.project_id:
        await require_project(session, actor, body.project_id, owner_id=workflow.user_id)
        changed["project_id"] = {"before": _plain(workflow.project_id),
                                 "after": _plain(body.project_id)}
        workflow.project_id = body.project_id
    if body.status is not None and body.status != workflow.status:
        if body.status == "active" and workflow.latest_version == 0:
            raise Conflict("publish the workflow before activating it (POST "
                           f"/api/v1/workflows/{workflow.id}/publish)")
        if body.status == "active" and not workflow.nodes and not workflow.edges:
            # Only a draft holds an empty graph, whatever the order of the changes (set
            # back to draft, emptied, made active again).
            raise Unprocessable("the workflow's graph is empty: only a draft may hold an "
                                "empty graph; save a graph (or roll back to a version) "
                                "before making it active", extra={"field": "status"})
        changed["status"] = {"before": workflow.status, "after": body.status}
        workflow.status = body.status
    if changed:
        await session.flush()
        await session.refresh(workflow)
        await record(session, "workflow.update", user_id=actor.user_id,
                     resource_type="workflow", resource_id=workflow.id, changes=changed)
    return workflow


def _plain(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


async def delete_workflow(session: AsyncSession, actor: Principal,
                          workflow_id: uuid.UUID) -> None:
    """Delete a workflow with its versions and its runs (a run of a deleted workflow
    could neither be resumed nor shown against its graph)."""
    workflow = await get_workflow(session, actor, workflow_id, lock=True)
    # Its unfinished runs are cancelled first, in this transaction, as a cancel does: the
    # agent runs their agent nodes started stop with them (they went on calling the model,
    # orphans of a deleted run).  A run the actor may not cancel (another member's in a
    # group) stops its children from its node's job, which finds the run gone.
    unfinished = (await session.scalars(
        select(Run.id).join(WorkflowRun, WorkflowRun.run_id == Run.id)
        .where(WorkflowRun.workflow_id == workflow_id,
               Run.status.not_in(TERMINAL_RUN_STATUSES)))).all()
    for run_id in unfinished:
        try:
            await cancel_run(session, actor, run_id)
        except (Forbidden, NotFound, RunFinished):
            pass
    await session.execute(delete(Run).where(Run.id.in_(
        select(WorkflowRun.run_id).where(WorkflowRun.workflow_id == workflow_id))))
    await session.delete(workflow)
    await session.flush()
    await record(session, "workflow.delete", user_id=actor.user_id, resource_type="workflow",
                 resource_id=workflow_id,
                 changes={"name": workflow.name, "versions": workflow.latest_version})


# --- versions ------------------------------------------------------------------------------


async def publish(session: AsyncSession, actor: Principal, workflow_id: uuid.UUID,
                  note: str | None = None) -> WorkflowVersion:
    """The draft, validated, as the next immutable version; the workflow becomes active."""
    workflow = await get_workflow(session, actor, workflow_id, lock=True)
    if workflow.status == "archived":
        raise Conflict("the workflow is archived: set its status to draft or active first")
    if not workflow.nodes:
        raise InvalidGraph("an empty workflow cannot be published: add a start node, the "
                           "steps and an end node", extra={"errors": []})
    await _require_valid(workflow.nodes, workflow.edges, workflow.viewport, allow_empty=False)
    digest = graph.content_hash(workflow.nodes, workflow.edges, workflow.viewport)
    if workflow.latest_version:
        latest = await _version(session, workflow, workflow.latest_version)
        if latest.content_hash == digest:
            raise Conflict(f"the draft is unchanged since version {latest.version}",
                           extra={"version": latest.version})
    number = workflow.latest_version + 1
    version = WorkflowVersion(workflow_id=workflow.id, user_id=workflow.user_id, version=number,
                              nodes=workflow.nodes, edges=workflow.edges,
                              viewport=workflow.viewport, content_hash=digest,
                              published_by=actor.user_id, note=note)
    session.add(version)
    workflow.latest_version = number
    if workflow.status == "draft":
        workflow.status = "active"
    await session.flush()
    await session.refresh(version)
    await record(session, "workflow.publish", user_id=actor.user_id, resource_type="workflow",
                 resource_id=workflow.id,
                 changes={"version": number, "content_hash": digest,
                          "nodes": len(workflow.nodes), "edges": len(workflow.edges)})
    return version


async def _version(session: AsyncSession, workflow: Workflow, number: int) -> WorkflowVersion:
    found = await session.scalar(select(WorkflowVersion).where(
        WorkflowVersion.workflow_id == workflow.id, WorkflowVersion.version == number))
    if found is None:
        raise NotFound(f"workflow {workflow.id} has no version {number} (it has "
                       f"{workflow.latest_version})")
    return found


async def list_versions(session: AsyncSession, actor: Principal,
                        workflow_id: uuid.UUID) -> list[WorkflowVersion]:
    """Newest first."""
    await get_workflow(session, actor, workflow_id)
    return list((await session.scalars(select(WorkflowVersion).where(
        WorkflowVersion.workflow_id == workflow_id).order_by(
        WorkflowVersion.version.desc()))).all())


async def get_version(session: AsyncSession, actor: Principal, workflow_id: uuid.UUID,
                      number: int | None = None) -> WorkflowVersion:
    """Version ``number``, or the newest (what a run pins when it names none); 404 when
    the workflow was never published."""
    workflow = await get_workflow(session, actor, workflow_id)
    if number is None:
        if workflow.latest_version == 0:
            raise NotFound(f"workflow {workflow_id} has no published version yet")
        number = workflow.latest_version
    return await _version(session, workflow, number)


def parse_ref(value: str, name: str) -> Ref:
    """A query parameter naming a version: its number, or ``draft``."""
    if value == "draft":
        return "draft"
    if re.fullmatch(r"[0-9]{1,9}", value) and int(value) >= 1:  # not isdigit(): '²'
        return int(value)
    raise Unprocessable(f"{name} must be a version number (1, 2, ...) or 'draft'",
                        extra={"field": name})


async def diff(session: AsyncSession, actor: Principal, workflow_id: uuid.UUID,
               from_ref: Ref, to_ref: Ref) -> dict[str, Any]:
    """Nodes and edges added, removed and changed (by id) from one version (or the
    draft) to another."""
    workflow = await get_workflow(session, actor, workflow_id)

    async def graph_of(ref: Ref) -> tuple[list[Any], list[Any], dict[str, Any]]:
        if ref == "draft":
            return workflow.nodes, workflow.edges, workflow.viewport
        found = await _version(session, workflow, ref)
        return found.nodes, found.edges, found.viewport

    a_nodes, a_edges, a_view = await graph_of(from_ref)
    b_nodes, b_edges, b_view = await graph_of(to_ref)
    return {"workflow_id": workflow.id, "from_version": from_ref, "to_version": to_ref,
            "nodes": graph.diff_items(a_nodes, b_nodes),
            "edges": graph.diff_items(a_edges, b_edges),
            "viewport_changed": a_view != b_view}


async def rollback(session: AsyncSession, actor: Principal, workflow_id: uuid.UUID,
                   number: int) -> Workflow:
    """The draft becomes version ``number``'s graph (publish to make it the newest
    version again); versions are untouched."""
    workflow = await get_workflow(session, actor, workflow_id, lock=True)
    version = await _version(session, workflow, number)
    workflow.nodes, workflow.edges = version.nodes, version.edges
    workflow.viewport = version.viewport
    await session.flush()
    await session.refresh(workflow)
    await record(session, "workflow.rollback", user_id=actor.user_id,
                 resource_type="workflow", resource_id=workflow.id,
                 changes={"version": number, "content_hash": version.content_hash})
    return workflow
