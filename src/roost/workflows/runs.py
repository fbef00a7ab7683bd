"""Runs of workflows: start one (pinned to a published version), read, list, resume a
failed one from its failed nodes, decide an approval, cancel.  How a run executes:
:mod:`roost.workflows.execution`."""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import and_, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.models import Run, RunStep
from roost.agents.runs import cancel_run, notify
from roost.audit.service import record
from roost.db.base import utcnow, uuid7
from roost.errors import Conflict, Forbidden, NotFound, Unprocessable
from roost.identity.models import User
from roost.inputs import is_invisible, strip_where
from roost.pagination import DEFAULT_LIMIT, newest_first, where_equal
from roost.principal import Principal
from roost.tasks.models import TERMINAL_SQL
from roost.tasks.service import enqueue
from roost.workflows import execution, graph, service
from roost.workflows.execution import (
    APPROVAL_TIMEOUT_TASK,
    NODE_TASK,
    Progress,
    plan_of,
    run_inputs,
)
from roost.workflows.models import Workflow, WorkflowRun
from roost.workflows.schemas import (
    MAX_INPUT_JSON_CHARS,
    ApprovalIn,
    NodeStepOut,
    WorkflowRunCreate,
    WorkflowRunOut,
    WorkflowRunSummary,
)

_NAME: Final = re.compile(graph.IDENTIFIER)  # fullmatch: "q\n" is no identifier


class RunNotResumable(Conflict):
    title, type_slug = "Run not resumable", "run-not-resumable"


class NotWaiting(Conflict):
    title, type_slug = "Not waiting for approval", "not-waiting"


def _check_inputs(declared: list[str], inputs: dict[str, Any]) -> str:
    """The inputs as the run stores them (JSON), after checking them against the start
    node's ``data.inputs`` (when it names any: all of them, and only them)."""
    bad = [k for k in inputs if not _NAME.fullmatch(k)]
    if bad:
        raise Unprocessable(f"input names must be identifiers (a letter, then letters, "
                            f"digits or _): {bad[0][:64]!r}", extra={"field": "inputs"})
    reserved = sorted(graph.RESERVED_NAMES & set(inputs))
    if reserved:  # templates see the inputs and the node outputs under these names
        raise Unprocessable(f"the input name {reserved[0]!r} is reserved (templates see the "
                            "run's inputs as 'inputs' and every node's output as 'nodes')",
                            extra={"field": "inputs"})
    if declared:
        missing = [n for n in declared if n not in inputs]
        unknown = [k for k in inputs if k not in declared]
        if missing or unknown:
            parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + \
                    ([f"unknown {', '.join(map(repr, unknown[:10]))}"] if unknown else [])
            raise Unprocessable(f"the workflow's start node takes the inputs "
                                f"{', '.join(map(repr, declared))}: {'; '.join(parts)}",
                                extra={"field": "inputs", "expected": declared})
    # Compact, as a client sends it: with json.dumps's ", " and ": " a list of 40,000
    # small numbers counted half again its size against the limit.
    encoded = json.dumps(inputs, ensure_ascii=False, allow_nan=False, default=str,
                         separators=(",", ":"))
    if len(encoded) > MAX_INPUT_JSON_CHARS:
        raise Unprocessable(f"the inputs are {len(encoded)} characters of JSON; the limit is "
                            f"{MAX_INPUT_JSON_CHARS}", extra={"field": "inputs"})
    return encoded


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


async def _replayed(session: AsyncSession, workflow: Workflow,
                    body: WorkflowRunCreate) -> Run | None:
    """The run this workflow's owner started with ``body``'s idempotency key (None: no
    key, or not used yet); 409 when the key was used for another run, or with other
    inputs or another version named: a replay is the same request again, and answering
    the first run would silently drop what differs."""
    if body.idempotency_key is None:
        return None
    existing = await session.scalar(select(Run).where(
        Run.user_id == workflow.user_id, Run.idempotency_key == body.idempotency_key))
    if existing is None:
        return None
    config = existing.config or {}
    if existing.kind != "workflow":
        raise Conflict("this idempotency key was used for another run")
    if config.get("workflow_id") != str(workflow.id):
        raise Conflict("this idempotency key was used for a run of another workflow")
    try:
        # As JSON text, keys sorted: Python's == took true for 1 and false for 0 (and 1
        # for 1.0), answering the first run for a request with other inputs.
        same_inputs = _canonical(json.loads(existing.input or "{}")) == _canonical(json.loads(
            json.dumps(body.inputs, ensure_ascii=False, allow_nan=False, default=str)))
    except ValueError:  # NaN or infinity: never what was stored
        same_inputs = False
    if not same_inputs or (body.version is not None and config.get("version") != body.version):
        raise Conflict(f"idempotency_key {body.idempotency_key!r} was used for run "
                       f"{existing.id} with other inputs or another version: send that "
                       "request again unchanged, or use a new key",
                       extra={"run_id": str(existing.id)})
    return existing


async def start_run(session: AsyncSession, actor: Principal, workflow_id: uuid.UUID,
                    body: WorkflowRunCreate, *, source: str = "api") -> tuple[Run, bool]:
    """A run of the workflow's version ``body.version`` (the newest by default), started
    in the caller's transaction: the start node and the inline nodes up to the first
    calling node run now (within the request's budget,
    :data:`~roost.workflows.execution.INLINE_STEPS_PER_REQUEST`: a job computes the rest);
    calling nodes get their jobs.  With an idempotency key already used by this
    user for this workflow and the same inputs, the existing run (``created`` false); used
    with other inputs or for another run (an agent's, another workflow's), 409."""
    # Held until the run is stored: a deletion (FOR UPDATE) then waits for it, or goes
    # first and this is a 404.  Without it the run's row took the version's key lock and
    # then waited for the workflow's, while the deletion held the workflow and deleted the
    # version: a deadlock, a 503.
    workflow = await service.get_workflow(session, actor, workflow_id, key_share=True)
    # A replay answers the run it started whatever happened since (the workflow archived,
    # its version deleted, its start node's inputs changed): the first answer may have
    # been lost, and that run exists.
    replayed = await _replayed(session, workflow, body)
    if replayed is not None:
        return replayed, False
    if workflow.status == "archived":
        raise Conflict(f"workflow {workflow_id} is archived: make it active to run it")
    version = await service.get_version(session, actor, workflow_id, body.version)
    plan = await plan_of(session, version.id)
    declared = plan.nodes[plan.start].data.get("inputs") or []
    try:
        encoded = _check_inputs([str(d) for d in declared], body.inputs)
    except ValueError as exc:  # NaN or infinity in the inputs
        raise Unprocessable(f"the inputs are not valid JSON: {exc}",
                            extra={"field": "inputs"}) from None
    run_id = uuid7()
    now = utcnow()
    stmt = pg_insert(Run).values(
        id=run_id, kind="workflow", agent_id=None, persona_id=None,
        user_id=workflow.user_id, trace_id=f"workflow-{run_id}",
        idempotency_key=body.idempotency_key, status="running", input=encoded,
        source=source, config={"workflow_id": str(workflow.id), "version": version.version},
        started_at=now, created_at=now, updated_at=now)
    if body.idempotency_key is not None:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=[Run.user_id, Run.idempotency_key],
            index_where=Run.idempotency_key.is_not(None))
    if await session.scalar(stmt.returning(Run.id)) is None:  # a replay raced the first
        existing = await _replayed(session, workflow, body)
        if existing is None:
            raise Conflict("this idempotency key was used for another run")
        return existing, False
    session.add(WorkflowRun(run_id=run_id, workflow_id=workflow.id, version_id=version.id,
                            version=version.version, user_id=workflow.user_id, state={},
                            created_at=now))
    await session.flush()
    await record(session, "workflow.run.create", user_id=actor.user_id, resource_type="run",
                 resource_id=run_id, trace_id=f"workflow-{run_id}",
                 metadata={"workflow_id": str(workflow.id), "version": version.version,
                           "source": source})
    progress = await Progress.open(session, run_id)
    assert progress is not None
    await progress.begin()
    await progress.close()
    await notify(session, run_id, "created")
    run = await session.get(Run, run_id, populate_existing=True)
    assert run is not None
    return run, True


async def _get(session: AsyncSession, run_id: uuid.UUID) -> tuple[Run, WorkflowRun]:
    """The workflow run (row-level security decides who sees it: its owner, admins)."""
    found = (await session.execute(
        select(Run, WorkflowRun).join(WorkflowRun, WorkflowRun.run_id == Run.id)
        .where(Run.id == run_id).execution_options(populate_existing=True))).first()
    if found is None:
        raise NotFound(f"workflow run {run_id} does not exist")
    return found[0], found[1]


def _summary(run: Run, wrun: WorkflowRun, waiting: list[str]) -> dict[str, Any]:
    return dict(id=run.id, workflow_id=wrun.workflow_id, version=wrun.version,
                status=run.status, stop_reason=run.stop_reason, input=run_inputs(run),
                output=run.output, error_message=run.error_message, source=run.source,
                idempotency_key=run.idempotency_key, trace_id=run.trace_id,
                steps_count=run.steps_count, created_at=run.created_at,
                started_at=run.started_at, completed_at=run.completed_at,
                waiting_for=waiting)


async def read_run(session: AsyncSession, actor: Principal, run_id: uuid.UUID) -> WorkflowRunOut:
    run, wrun = await _get(session, run_id)
    steps = list((await session.scalars(
        select(RunStep).where(RunStep.run_id == run_id).order_by(RunStep.step_number))).all())
    plan = await plan_of(session, wrun.version_id)
    out_steps = []
    outputs: dict[str, Any] = {}
    for step in steps:
        node = plan.nodes.get(str(step.node_id))
        item = NodeStepOut.model_validate(step)
        item.node_type = node.type if node else None
        out_steps.append(item)
        if node is not None and node.type == "end" and step.status == "completed":
            outputs[node.id] = (step.output or {}).get("output")
    waiting = [str(s.node_id) for s in steps if s.status == "waiting"]
    return WorkflowRunOut(**_summary(run, wrun, waiting), steps=out_steps, outputs=outputs)


async def list_runs(session: AsyncSession, actor: Principal, workflow_id: uuid.UUID, *,
                    status: str | None = None, limit: int = DEFAULT_LIMIT,
                    cursor: str | None = None) -> tuple[list[WorkflowRunSummary], str | None]:
    await service.get_workflow(session, actor, workflow_id)
    stmt = where_equal(
        select(Run).join(WorkflowRun, WorkflowRun.run_id == Run.id)
        .where(WorkflowRun.workflow_id == workflow_id), (Run.status, status))
    runs, next_cursor = await newest_first(session, stmt, Run.created_at, Run.id, limit=limit,
                                           cursor=cursor)
    ids = [r.id for r in runs]
    extras = {w.run_id: w for w in (await session.scalars(
        select(WorkflowRun).where(WorkflowRun.run_id.in_(ids)))).all()} if ids else {}
    waiting: dict[uuid.UUID, list[str]] = {}
    if ids:
        for run_id, node_id in (await session.execute(
                select(RunStep.run_id, RunStep.node_id)
                .where(RunStep.run_id.in_(ids), RunStep.status == "waiting"))).all():
            waiting.setdefault(run_id, []).append(str(node_id))
    return [WorkflowRunSummary(**_summary(r, extras[r.id], waiting.get(r.id, [])))
            for r in runs], next_cursor


async def resume_run(session: AsyncSession, actor: Principal, run_id: uuid.UUID) -> Run:
    """A failed run goes on from where it failed: its failed nodes (and the nodes
    scheduled while it was failed) get new jobs; completed nodes stay as they are."""
    run, _wrun = await _get(session, run_id)
    if run.status != "failed":
        raise RunNotResumable(f"run {run_id} is {run.status}: only a failed run can be resumed")
    progress = await Progress.open(session, run_id)
    assert progress is not None
    if progress.run.status != "failed":  # changed before the lock was taken
        raise RunNotResumable(f"run {run_id} is {progress.run.status}")
    # Steps to run again: failed or interrupted ones, and open ones whose job is gone.
    jobless = text("NOT EXISTS (SELECT 1 FROM background_tasks t WHERE t.id = run_steps.task_id "  # noqa: S608 - constants
                   f"AND t.status NOT IN {TERMINAL_SQL})")
    again = list((await session.scalars(
        select(RunStep).where(
            RunStep.run_id == run_id, RunStep.node_id.is_not(None),
            or_(RunStep.status.in_(("failed", "interrupted")),
                and_(RunStep.status.in_(("pending", "running")), jobless)))
        .order_by(RunStep.step_number))).all())
    if not again:  # the steps cap, say: going on would only "complete" a run cut short
        raise RunNotResumable(f"run {run_id} has no node to run again: "
                              f"{(progress.run.error_message or 'it failed')[:500]}")
    await session.execute(update(Run).where(Run.id == run_id).values(
        status="running", stop_reason=None, error_message=None, completed_at=None,
        updated_at=utcnow()))
    progress.run.status = "running"
    for step in again:
        job = await enqueue(session, NODE_TASK, {"run_id": str(run_id)})
        await session.execute(
            update(RunStep).where(RunStep.id == step.id)
            .values(status="pending", error=None, finished_at=None, duration_ms=None,
                    task_id=job.id).execution_options(synchronize_session=False))
    # Approvals still waiting: their timeout jobs may have run while the run was failed
    # (and done nothing): each gets one again for the time it has left.
    for step in (await session.scalars(select(RunStep).where(
            RunStep.run_id == run_id, RunStep.status == "waiting"))).all():
        node = progress.plan.nodes.get(step.node_id or "")
        timeout = execution.approval_timeout(node.data) if node is not None else None
        if timeout is not None:
            left = (step.started_at or utcnow()) + timeout - utcnow()
            await enqueue(session, APPROVAL_TIMEOUT_TASK,
                          {"run_id": str(run_id), "step_id": str(step.id)},
                          delay=max(left, timedelta(0)))
    await record(session, "workflow.run.resume", user_id=actor.user_id, resource_type="run",
                 resource_id=run_id, trace_id=run.trace_id,
                 metadata={"steps_again": [f"{s.node_id}#{s.iteration}" for s in again]})
    progress.changed.append("resumed")
    await progress.close()
    return (await _get(session, run_id))[0]


async def _may_approve(session: AsyncSession, actor: Principal, approvers: list[Any]) -> bool:
    if not approvers or actor.is_admin:
        return True
    user = await session.get(User, actor.user_id) if actor.user_id else None
    if user is None:
        return False
    names = {_approver_key(a) for a in approvers}
    return bool({_approver_key(n) for n in (user.id, user.username, user.email)} & names)


def _approver_key(value: Any) -> str:
    """How an approver is compared: any spelling of a user id (no dashes, braces,
    ``urn:uuid:``) as the id, a name or e-mail composed and case-folded, without the white
    space and invisible characters around it.  An approver written another way than the
    user's own spelling left the approval to administrators or its timeout."""
    written = unicodedata.normalize(
        "NFC", strip_where(str(value), lambda c: c.isspace() or is_invisible(c)))
    try:
        return str(uuid.UUID(written))
    except ValueError:
        return written.casefold()


async def decide(session: AsyncSession, actor: Principal, run_id: uuid.UUID, node_id: str,
                 body: ApprovalIn) -> Run:
    """Approve or reject the approval node ``node_id`` the run waits at: the run goes on
    along its ``approved`` or ``rejected`` edges."""
    run, _wrun = await _get(session, run_id)
    progress = await Progress.open(session, run_id)
    assert progress is not None
    # Either form of a composed id names the node (ids are stored composed; one saved
    # before that is found by its composed form too).
    wanted = unicodedata.normalize("NFC", node_id)
    node_id = next((n for n in progress.plan.nodes
                    if unicodedata.normalize("NFC", n) == wanted), node_id)
    if node_id not in progress.plan.nodes:
        raise NotFound(f"the workflow of run {run_id} has no node {node_id[:255]!r}")
    step = await session.scalar(
        select(RunStep).where(RunStep.run_id == run_id, RunStep.node_id == node_id,
                              RunStep.status == "waiting")
        .order_by(RunStep.step_number.desc()).limit(1))
    if step is None or progress.run.status != "running":
        raise NotWaiting(f"run {run_id} is {progress.run.status} and not waiting for an "
                         f"approval at node {node_id!r}")
    if not await _may_approve(session, actor, (step.input or {}).get("approvers") or []):
        raise Forbidden(f"you are not one of node {node_id!r}'s approvers")
    output = {"output": body.approved, "approved": body.approved, "comment": body.comment,
              "by": str(actor.user_id) if actor.user_id else None,
              "at": utcnow().isoformat()}
    await progress.complete(step, output, chosen="approved" if body.approved else "rejected",
                            all_handles=False)
    await record(session, "workflow.run.approve" if body.approved else "workflow.run.reject",
                 user_id=actor.user_id, resource_type="run", resource_id=run_id,
                 trace_id=run.trace_id, metadata={"node_id": node_id, "comment": body.comment})
    await progress.close()
    return (await _get(session, run_id))[0]


async def timeout_approval(session: AsyncSession, run_id: uuid.UUID, step_id: uuid.UUID) -> bool:
    """An approval nobody decided in its ``timeout_s``: rejected.  True when it was."""
    progress = await Progress.open(session, run_id)
    step = await session.get(RunStep, step_id)
    if progress is None or step is None or step.status != "waiting" \
            or progress.run.status != "running":
        return False
    await progress.complete(step, {"output": False, "approved": False, "by": None,
                                   "comment": "no decision before the timeout",
                                   "at": utcnow().isoformat()},
                            chosen="rejected", all_handles=False)
    await record(session, "workflow.run.reject", user_id=None, resource_type="run",
                 resource_id=run_id, trace_id=progress.run.trace_id,
                 metadata={"node_id": step.node_id, "comment": "no decision before the timeout",
                           "timeout": True})
    await progress.close()
    return True


async def cancel(session: AsyncSession, actor: Principal, run_id: uuid.UUID) -> Run:
    """Cancel the run and, in the same transaction, the agent runs its agent nodes started
    that are not finished (:func:`roost.agents.runs.cancel_run`, as
    ``POST /api/v1/runs/{id}/cancel`` does)."""
    await _get(session, run_id)  # a workflow's run, else 404
    return await cancel_run(session, actor, run_id)


async def sweep(session: AsyncSession) -> list[uuid.UUID]:
    """Fail the running workflow runs whose calling nodes lost their jobs for good."""
    lost = text("EXISTS (SELECT 1 FROM run_steps s WHERE s.run_id = runs.id "  # noqa: S608 - constants
                "AND s.status IN ('pending', 'running') AND s.task_id IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM background_tasks t WHERE t.id = s.task_id "
                f"AND t.status NOT IN {TERMINAL_SQL}))")
    candidates = list((await session.scalars(
        select(Run.id).where(Run.kind == "workflow", Run.status == "running",
                             Run.updated_at < text("now() - interval '30 seconds'"), lost)
        .limit(1000))).all())
    failed = []
    for run_id in candidates:
        progress = await Progress.open(session, run_id)
        if progress is None or not progress.active:
            continue
        if await execution.expire_lost_steps(session, run_id):
            progress.failure = ("a node's worker stopped and its job has no retries left; "
                                "resume the run to go on")
            await progress.close()
            failed.append(run_id)
    return failed

