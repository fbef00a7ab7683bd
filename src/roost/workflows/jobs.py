"""Queue jobs of the workflows domain: running the calling nodes of a run (each job runs
the steps it owns, :mod:`roost.workflows.execution`), rejecting approvals that timed
out, and the sweep that fails runs whose nodes lost their jobs for good."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Final

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm.attributes import set_committed_value

from roost.agents import jobs as agent_jobs
from roost.agents.models import Run, RunStep
from roost.agents.runs import notify
from roost.db.base import utcnow
from roost.tasks.handlers import TaskContext, task
from roost.tasks.schedules import periodic
from roost.workflows import nodes, runs
from roost.workflows.engine import INLINE_TYPES
from roost.workflows.execution import (
    APPROVAL_TIMEOUT_TASK,
    INACTIVE_OWNER,
    NODE_TASK,
    Progress,
    completed_outputs,
    owner_principal,
    plan_of,
    redo_inline,
    run_inputs,
    variables,
)
from roost.workflows.models import WorkflowRun

log = structlog.get_logger(__name__)

NODE_MAX_RETRIES: Final = 5


@task(NODE_TASK, queue="agents", max_retries=NODE_MAX_RETRIES, backoff_base_s=1.0,
      backoff_max_s=30.0)
async def run_nodes(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Run the open steps this job owns, one after the other, until none is left (a
    finished node may hand this job its successor).  A node failing for good fails the
    run; any other exception retries the job, and the retry runs the same steps again
    (none of them completed).  On the last attempt the step and the run fail."""
    run_id = uuid.UUID(str(payload["run_id"]))
    database = ctx.database
    ran = 0
    while True:
        async with database.transaction() as session:
            run = await session.get(Run, run_id, populate_existing=True)
            step = await session.scalar(
                select(RunStep).where(RunStep.run_id == run_id, RunStep.task_id == ctx.task_id,
                                      RunStep.status.in_(("pending", "running")))
                .order_by(RunStep.step_number).limit(1))
            if run is None or step is None or run.status != "running":
                break
            if step.status == "pending":
                now = utcnow()
                await session.execute(
                    update(RunStep).where(RunStep.id == step.id)
                    .values(status="running", started_at=now)
                    .execution_options(synchronize_session=False))
                # Kept in the object without marking it changed (no second UPDATE).
                set_committed_value(step, "status", "running")
                set_committed_value(step, "started_at", now)
                await notify(session, run_id, f"step:{step.step_number}:running")
            wrun = await session.get(WorkflowRun, run_id)
            assert wrun is not None
            plan = await plan_of(session, wrun.version_id)
            node = plan.nodes[str(step.node_id)]
            principal = await owner_principal(session, run.user_id)
            names = variables(plan, run_inputs(run), await completed_outputs(session, run_id))
        if principal is None:  # suspended or deactivated since the run was queued
            await _fail(ctx, run_id, step, INACTIVE_OWNER)
            continue
        if node.type in INLINE_TYPES:  # failed (run again on resume), or left by a request
            async with database.transaction() as session:
                progress = await Progress.open(session, run_id, job_id=ctx.task_id)
                if progress is not None and progress.active:  # not cancelled meanwhile
                    await redo_inline(progress, step)
                    await progress.close()
            continue
        try:
            output = await nodes.execute(agent_jobs.run_env(database), principal, run, node,
                                         names, step_id=step.id)
        except nodes.NodeFailed as exc:
            await _fail(ctx, run_id, step, exc.reason)
            continue
        except Exception as exc:
            if ctx.retry_count >= ctx.max_retries:
                await _fail(ctx, run_id, step, f"{type(exc).__name__}: {str(exc)[:500]}")
            raise
        async with database.transaction() as session:
            progress = await Progress.open(session, run_id, job_id=ctx.task_id)
            if progress is not None:
                await progress.complete(step, output)
                await progress.close()
        ran += 1
    return {"run_id": str(run_id), "nodes": ran}


async def _fail(ctx: TaskContext, run_id: uuid.UUID, step: RunStep, reason: str) -> None:
    async with ctx.database.transaction() as session:
        progress = await Progress.open(session, run_id, job_id=ctx.task_id)
        if progress is not None:
            await progress.fail(step, reason)
            await progress.close()


@task(APPROVAL_TIMEOUT_TASK, queue="agents", max_retries=3)
async def approval_timeout(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    async with ctx.database.transaction() as session:
        rejected = await runs.timeout_approval(session, uuid.UUID(str(payload["run_id"])),
                                               uuid.UUID(str(payload["step_id"])))
    return {"rejected": rejected}


@periodic("workflows.sweep_runs", every=timedelta(minutes=1), queue="maintenance",
          priority="background", max_retries=0, timeout_s=300)
async def sweep_runs(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    async with ctx.database.transaction() as session:
        failed = await runs.sweep(session)
    if failed:
        log.warning("workflows.runs_swept", count=len(failed))
    return {"failed": [str(r) for r in failed]}
