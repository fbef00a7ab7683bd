"""HTTP routes of workflow runs: start (``/api/v1/workflows/{id}/runs``), list, read,
resume, cancel, approve (``/api/v1/workflow-runs/{run_id}/...``).  Events stream at
``/api/v1/runs/{run_id}/events`` (agents' route: a workflow run is a run)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Path, Query, Response, status

from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit
from roost.http.routing import RoostRouter
from roost.pagination import DEFAULT_LIMIT, Page
from roost.workflows import runs
from roost.workflows.schemas import ApprovalIn, WorkflowRunCreate, WorkflowRunOut, WorkflowRunSummary

router = RoostRouter(tags=["workflows"])
RunStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
# A node id is at most 255 characters composed (NFC); the URL may name it decomposed,
# up to four code points for each composed one (U+1F82), so the limit here is 4 x 255.
NodeId = Annotated[str, Path(min_length=1, max_length=4 * 255)]


@router.post("/api/v1/workflows/{workflow_id:uuid}/runs", status_code=status.HTTP_202_ACCEPTED,
             response_model=WorkflowRunOut,
             responses={200: {"model": WorkflowRunOut,
                              "description": "The first run of a used idempotency key"}},
             summary="Run a published version of the workflow (the newest by default); "
                     "follow it with /api/v1/runs/{id}/events")
async def start_run(workflow_id: uuid.UUID, body: WorkflowRunCreate,
                    principal: CurrentPrincipal, db: DbSession,
                    response: Response) -> WorkflowRunOut:
    run, created = await runs.start_run(db, principal, workflow_id, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return await runs.read_run(db, principal, run.id)


@router.get("/api/v1/workflows/{workflow_id:uuid}/runs",
            response_model=Page[WorkflowRunSummary],
            summary="The workflow's runs, newest first")
async def list_runs(
    workflow_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
    status_: Annotated[RunStatus | None, Query(alias="status")] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[WorkflowRunSummary]:
    items, next_cursor = await runs.list_runs(db, principal, workflow_id, status=status_,
                                              limit=limit, cursor=cursor)
    return Page[WorkflowRunSummary](items=items, next_cursor=next_cursor)


@router.get("/api/v1/workflow-runs/{run_id:uuid}", response_model=WorkflowRunOut,
            summary="A workflow run with every node it ran (or runs, or waits at)")
async def read_run(run_id: uuid.UUID, principal: CurrentPrincipal,
                   db: DbSession) -> WorkflowRunOut:
    return await runs.read_run(db, principal, run_id)


@router.post("/api/v1/workflow-runs/{run_id:uuid}/resume", response_model=WorkflowRunOut,
             summary="Resume a failed run from its failed nodes (completed nodes do not "
                     "run again)")
async def resume_run(run_id: uuid.UUID, principal: CurrentPrincipal,
                     db: DbSession) -> WorkflowRunOut:
    await runs.resume_run(db, principal, run_id)
    return await runs.read_run(db, principal, run_id)


@router.post("/api/v1/workflow-runs/{run_id:uuid}/cancel", response_model=WorkflowRunOut,
             summary="Cancel a run that is not finished")
async def cancel_run(run_id: uuid.UUID, principal: CurrentPrincipal,
                     db: DbSession) -> WorkflowRunOut:
    await runs.cancel(db, principal, run_id)
    return await runs.read_run(db, principal, run_id)


# ``:path``: a node id may hold "/" (the console sends it encoded, which the server decodes
# before routing).
@router.post("/api/v1/workflow-runs/{run_id:uuid}/approvals/{node_id:path}",
             response_model=WorkflowRunOut,
             summary="Approve or reject the approval node the run waits at")
async def decide(run_id: uuid.UUID, node_id: NodeId, body: ApprovalIn,
                 principal: CurrentPrincipal, db: DbSession) -> WorkflowRunOut:
    await runs.decide(db, principal, run_id, node_id, body)
    return await runs.read_run(db, principal, run_id)
