"""HTTP routes: /api/v1/workflows (CRUD, validate, publish, versions, diff, rollback).

Paths take ``{workflow_id:uuid}`` (Starlette's convertor): ``/validate`` is then never
read as a workflow id, so ``PATCH /api/v1/workflows/validate`` is a 405, not a 422."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Path, Query, Response, status

from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit
from roost.http.routing import RoostRouter
from roost.pagination import DEFAULT_LIMIT, Page
from roost.workflows import service
from roost.workflows.schemas import (
    DiffOut,
    GraphIn,
    IssueOut,
    PublishIn,
    RollbackIn,
    ValidationOut,
    VersionOut,
    VersionSummary,
    WorkflowCreate,
    WorkflowOut,
    WorkflowStatus,
    WorkflowSummary,
    WorkflowUpdate,
)

router = RoostRouter(prefix="/api/v1/workflows", tags=["workflows"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WorkflowOut,
             summary="Create a workflow (a draft) from an XYFlow graph, validated")
async def create_workflow(body: WorkflowCreate, principal: CurrentPrincipal,
                          db: DbSession) -> WorkflowOut:
    return WorkflowOut.model_validate(await service.create_workflow(db, principal, body))


@router.get("", response_model=Page[WorkflowSummary],
            summary="Your workflows, newest first (without their graphs)")
async def list_workflows(
    principal: CurrentPrincipal, db: DbSession,
    status_: Annotated[WorkflowStatus | None, Query(alias="status")] = None,
    project_id: uuid.UUID | None = None, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[WorkflowSummary]:
    rows, next_cursor = await service.list_workflows(db, principal, status=status_,
                                                     project_id=project_id, limit=limit,
                                                     cursor=cursor)
    return Page[WorkflowSummary](items=[WorkflowSummary.model_validate(r) for r in rows],
                                 next_cursor=next_cursor)


@router.post("/validate", response_model=ValidationOut,
             summary="Validate a graph without saving it: every problem, naming its node or "
                     "edge (413 over the size limits)")
async def validate_graph(body: GraphIn, principal: CurrentPrincipal) -> ValidationOut:
    issues = await service.validate(body)
    return ValidationOut(valid=not issues, errors=[IssueOut(**i.as_dict()) for i in issues],
                         node_count=len(body.nodes), edge_count=len(body.edges))


@router.get("/{workflow_id:uuid}", response_model=WorkflowOut,
            summary="A workflow with its draft graph, as the canvas saved it")
async def get_workflow(workflow_id: uuid.UUID, principal: CurrentPrincipal,
                       db: DbSession) -> WorkflowOut:
    return WorkflowOut.model_validate(await service.get_workflow(db, principal, workflow_id))


@router.patch("/{workflow_id:uuid}", response_model=WorkflowOut,
              summary="Change a workflow: name, description, project, status or its graph "
                      "(validated)")
async def update_workflow(workflow_id: uuid.UUID, body: WorkflowUpdate,
                          principal: CurrentPrincipal, db: DbSession) -> WorkflowOut:
    return WorkflowOut.model_validate(
        await service.update_workflow(db, principal, workflow_id, body))


@router.delete("/{workflow_id:uuid}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a workflow and its versions")
async def delete_workflow(workflow_id: uuid.UUID, principal: CurrentPrincipal,
                          db: DbSession) -> Response:
    await service.delete_workflow(db, principal, workflow_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{workflow_id:uuid}/publish", status_code=status.HTTP_201_CREATED,
             response_model=VersionOut,
             summary="Publish the draft as the next immutable version (409 when unchanged)")
async def publish(workflow_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
                  body: PublishIn | None = None) -> VersionOut:
    version = await service.publish(db, principal, workflow_id,
                                    note=body.note if body is not None else None)
    return VersionOut.model_validate(version)


@router.get("/{workflow_id:uuid}/versions", response_model=list[VersionSummary],
            summary="The published versions, newest first (without their graphs)")
async def list_versions(workflow_id: uuid.UUID, principal: CurrentPrincipal,
                        db: DbSession) -> list[VersionSummary]:
    return [VersionSummary.model_validate(v)
            for v in await service.list_versions(db, principal, workflow_id)]


@router.get("/{workflow_id:uuid}/versions/{version}", response_model=VersionOut,
            summary="One published version with its graph")
async def get_version(workflow_id: uuid.UUID, version: Annotated[int, Path(ge=1, le=10**9)],
                      principal: CurrentPrincipal, db: DbSession) -> VersionOut:
    return VersionOut.model_validate(
        await service.get_version(db, principal, workflow_id, version))


@router.get("/{workflow_id:uuid}/diff", response_model=DiffOut,
            summary="Nodes and edges added, removed and changed (by id) between two "
                    "versions; 'draft' names the unpublished graph")
async def diff(
    workflow_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
    from_: Annotated[str, Query(alias="from", max_length=16,
                                description="A version number or 'draft'")],
    to: Annotated[str, Query(max_length=16, description="A version number or 'draft'")] = "draft",
) -> DiffOut:
    return DiffOut.model_validate(await service.diff(
        db, principal, workflow_id, service.parse_ref(from_, "from"),
        service.parse_ref(to, "to")))


@router.post("/{workflow_id:uuid}/rollback", response_model=WorkflowOut,
             summary="Make the draft a published version's graph (publish to release it)")
async def rollback(workflow_id: uuid.UUID, body: RollbackIn, principal: CurrentPrincipal,
                   db: DbSession) -> WorkflowOut:
    return WorkflowOut.model_validate(
        await service.rollback(db, principal, workflow_id, body.version))
