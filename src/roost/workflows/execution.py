"""Durable execution of workflow runs.

A workflow run is a ``runs`` row (``kind = 'workflow'``) with a ``workflow_runs`` row
(the pinned version and the scheduler's state, :mod:`roost.workflows.engine`); each node
it runs is a ``run_steps`` row (``step_type = 'workflow_node'``, ``node_id``,
``iteration``), unique per (run, node, iteration).

**Progress** (:class:`Progress`) is one transaction holding the run's row lock: it marks
a finished node ``completed`` with its output, asks the scheduler which nodes that
activates, computes at once those that call nothing (start, end, template, condition,
parallel, join, loop: committed ``completed`` in the same transaction, their successors
scheduled in turn), stores an ``approval`` node as ``waiting``, and stores each calling
node (llm, agent, tool, knowledge) as ``pending`` with the queue job that will run it.
So a node's result is committed before any of its successors exists, and a successor
exists exactly when its job does.  Outside a ``workflows.node`` job (starting a run, an
approval decided or timed out) at most :data:`INLINE_STEPS_PER_REQUEST` inline nodes, and
:data:`INLINE_SECONDS_PER_REQUEST` of them, are computed: the request answers at once, and
the inline nodes left are stored ``pending`` with one job that computes them (a loop of
heavy templates runs on the queue, not inside an API request).

**Jobs** (``workflows.node``) run the steps they own (``run_steps.task_id``): a job that
finishes a node keeps the first calling node it activates for itself and enqueues a job
for each other one (parallel branches run concurrently, a chain runs in one job).  A
worker killed mid-node leaves its job's lease to expire; the queue gives the job to
another worker, which runs again the steps that job still owns and that are not
completed.  A completed node never runs again.  A node that fails for good (a
:class:`~roost.workflows.nodes.NodeFailed`, or its job's last retry) fails the step and
the run; :func:`resume_run` gives each unfinished step a new job and the run goes on from
there.  Nodes of other branches that finish meanwhile still record their results, and
schedule their successors as ``pending`` without a job until the run is resumed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final

import structlog
from sqlalchemy import and_, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.models import OPEN_STEP_STATUSES, Run, RunStep
from roost.agents.runs import notify, totals_from_steps
from roost.audit.service import record
from roost.db.base import utcnow, uuid7
from roost.identity.models import User, UserGroupMembership
from roost.principal import Principal
from roost.tasks.models import TERMINAL_SQL
from roost.tasks.service import enqueue
from roost.workflows.engine import INLINE_TYPES, Activation, Node, Plan, Scheduler, State, make_plan
from roost.workflows.expressions import ExpressionError, TemplateRejected, evaluate, render_template
from roost.workflows.graph import MAX_APPROVAL_TIMEOUT_S, Handle, identifier
from roost.workflows.models import WorkflowRun, WorkflowVersion
from roost.workflows.nodes import NodeFailed

log = structlog.get_logger(__name__)

NODE_TASK: Final = "workflows.node"
APPROVAL_TIMEOUT_TASK: Final = "workflows.approval_timeout"


def approval_timeout(data: dict[str, Any]) -> timedelta | None:
    """An approval node's ``timeout_s``, or None for none.  JSON Schema counts 1.0 as an
    integer, so a graph may hold one (a bool is no number); a graph saved before
    ``timeout_s`` had a maximum may hold more than it."""
    timeout = data.get("timeout_s")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        return timedelta(seconds=min(timeout, MAX_APPROVAL_TIMEOUT_S))
    return None
STEP_TYPE: Final = "workflow_node"
MAX_STEPS_PER_RUN: Final = 100_000  # loops included: a runaway graph stops here
# What a run's steps may store in all (their outputs and inputs as JSON characters): each
# output is capped, but 100,000 steps of a big one would fill the disk.
MAX_STORED_CHARS_PER_RUN: Final = 64_000_000
# Inline nodes a transaction outside a job computes before handing the rest to a job.
INLINE_STEPS_PER_REQUEST: Final = 100
INLINE_SECONDS_PER_REQUEST: Final = 5.0  # far above a small graph's, even on a loaded machine

_plans: dict[uuid.UUID, Plan] = {}  # version id -> plan: versions are immutable


async def plan_of(session: AsyncSession, version_id: uuid.UUID) -> Plan:
    found = _plans.get(version_id)
    if found is None:
        row = (await session.execute(
            select(WorkflowVersion.nodes, WorkflowVersion.edges)
            .where(WorkflowVersion.id == version_id))).one()
        if len(_plans) > 1000:
            _plans.clear()
        found = _plans[version_id] = make_plan(list(row.nodes), list(row.edges))
    return found


def variables(plan: Plan, inputs: Mapping[str, Any],
              outputs: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """What templates and expressions see: the run's inputs by name (and as ``inputs``),
    each finished node's output under its id (when the id is an identifier) and its
    ``output_key``, and all of them as ``nodes['any id']``."""
    names: dict[str, Any] = dict(inputs)
    for node_id, output in outputs.items():
        if identifier(node_id):
            names[node_id] = output
        key = plan.nodes[node_id].data.get("output_key") if node_id in plan.nodes else None
        if isinstance(key, str) and key:
            names[key] = output
    # Last, so they win over a name a graph saved before they were reserved gives
    # (graph.RESERVED_NAMES: the validator now refuses such names).
    names["inputs"] = dict(inputs)
    names["nodes"] = dict(outputs)
    return names


def storable(value: Any) -> Any:
    """``value`` with every NUL character dropped from its strings (dict keys included):
    PostgreSQL's jsonb and text cannot store U+0000, and a model or a tool may answer with
    one; retrying would only ask again."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def stored_size(value: Any) -> int:
    """About what ``value`` takes in a step's jsonb column (its JSON text's length)."""
    if value is None:
        return 0
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def stored_cap_reason() -> str:
    return (f"the run's steps reached the limit of {MAX_STORED_CHARS_PER_RUN:,} characters "
            "of stored output per run (a loop that keeps a large output?)")


def steps_cap_reason() -> str:
    return (f"the run reached the limit of {MAX_STEPS_PER_RUN} steps per run "
            "(a loop that never ends?)")


INACTIVE_OWNER: Final = ("the account that started this run is suspended or deactivated: "
                         "its nodes are not run")


async def owner_principal(session: AsyncSession, user_id: uuid.UUID) -> Principal | None:
    """The run's owner as a job acts for them (their groups, never an administrator), or
    None while the account is not active: a run queued before its owner was suspended
    must not go on calling models and tools for them (agent runs do the same)."""
    row = (await session.execute(
        select(and_(User.status == "active", User.is_active),
               select(func.array_agg(UserGroupMembership.group_id))
               .where(UserGroupMembership.user_id == user_id).scalar_subquery())
        .where(User.id == user_id))).first()
    if row is None or not row[0]:
        return None
    return Principal(user_id=user_id, is_admin=False, kind="job",
                     group_ids=frozenset(row[1] or ()))


def spent(step: RunStep, output: Mapping[str, Any]) -> dict[str, Any]:
    """SET values: an llm node's tokens and cost, which its output names, in its step's
    columns (the run's totals sum those: ``totals_from_steps``).  Only an llm node's: other
    outputs may hold anything under those names (a start node's are the run's inputs)."""
    if (step.input or {}).get("type") != "llm":
        return {}
    return {"tokens_in": int(output.get("tokens_in") or 0),
            "tokens_out": int(output.get("tokens_out") or 0),
            "cost": Decimal(str(output.get("cost") or 0))}


async def completed_outputs(session: AsyncSession, run_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    """Each node's latest completed output (a loop's body: its last iteration)."""
    rows = (await session.execute(
        select(RunStep.node_id, RunStep.output)
        .where(RunStep.run_id == run_id, RunStep.node_id.is_not(None),
               RunStep.status == "completed")
        .order_by(RunStep.step_number))).all()
    return {str(r.node_id): dict(r.output or {}) for r in rows}


def run_inputs(run: Run) -> dict[str, Any]:
    try:
        value = json.loads(run.input)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class Progress:
    """One transaction's work on a run, under the run's row lock (:meth:`open`)."""

    session: AsyncSession
    run: Run
    wrun: WorkflowRun
    plan: Plan
    scheduler: Scheduler
    outputs: dict[str, dict[str, Any]]
    job_id: uuid.UUID | None  # the job running this, which keeps one calling node
    kept_for_job: bool = False
    failure: str | None = None
    next_number: int = 0
    stored_chars: int = 0  # what the run's steps store so far (MAX_STORED_CHARS_PER_RUN)
    changed: list[str] = field(default_factory=list)
    inline_ran: int = 0  # inline nodes computed in this transaction
    inline_since: float | None = None  # when the first of them was (time.monotonic)
    deferred_job: uuid.UUID | None = None  # the job computing the inline nodes left over

    @classmethod
    async def open(cls, session: AsyncSession, run_id: uuid.UUID, *,
                   job_id: uuid.UUID | None = None) -> Progress | None:
        run = await session.scalar(
            select(Run).where(Run.id == run_id).with_for_update().execution_options(
                populate_existing=True))
        wrun = await session.get(WorkflowRun, run_id, populate_existing=True)
        if run is None or wrun is None:
            return None
        plan = await plan_of(session, wrun.version_id)
        outputs = await completed_outputs(session, run_id)
        return cls(session=session, run=run, wrun=wrun, plan=plan,
                   scheduler=Scheduler(plan, State.load(wrun.state)), outputs=outputs,
                   job_id=job_id, next_number=run.steps_count + 1,
                   stored_chars=int((wrun.state or {}).get("stored_chars") or 0))

    @property
    def active(self) -> bool:
        return self.run.status == "running"

    def names(self) -> dict[str, Any]:
        return variables(self.plan, run_inputs(self.run), self.outputs)

    def _store(self, *values: Any) -> None:
        """Count ``values`` as stored by the run; NodeFailed when they would take it past
        :data:`MAX_STORED_CHARS_PER_RUN`."""
        size = sum(stored_size(v) for v in values)
        if self.stored_chars + size > MAX_STORED_CHARS_PER_RUN:
            raise NodeFailed(stored_cap_reason())
        self.stored_chars += size

    # --- steps ---------------------------------------------------------------------------

    async def _insert(self, activation: Activation, node: Node, *, status: str,
                      output: dict[str, Any] | None = None, error: str | None = None,
                      task_id: uuid.UUID | None = None,
                      input_: dict[str, Any] | None = None) -> uuid.UUID:
        if self.next_number > MAX_STEPS_PER_RUN:
            raise NodeFailed(steps_cap_reason())
        output, input_ = storable(output), storable(input_)
        self._store(output, input_)
        now = utcnow()
        done = status not in OPEN_STEP_STATUSES
        step = RunStep(
            id=uuid7(), run_id=self.run.id, user_id=self.run.user_id, persona_id=None,
            step_number=self.next_number, step_type=STEP_TYPE, status=status,
            node_id=node.id, iteration=activation.iteration, task_id=task_id,
            input={"type": node.type, **({"from_body": True} if activation.from_body else {}),
                   # a join left to a job computes its output from these (redo_inline)
                   **({"arrived": list(activation.arrived)}
                      if activation.arrived is not None else {}),
                   **(input_ or {})},
            output=output, error=storable(error),
            started_at=now if status != "pending" else None,
            finished_at=now if done else None, duration_ms=0 if done else None,
            created_at=now)
        self.session.add(step)
        self.next_number += 1
        self.changed.append(f"step:{step.step_number}:{status}")
        return step.id

    async def complete(self, step: RunStep, output: dict[str, Any], *,
                       chosen: Handle | None = None, all_handles: bool = True) -> bool:
        """``step`` finished with ``output``: record it and schedule what follows.  False
        when the step was closed meanwhile (the run cancelled): nothing happens then."""
        output = storable(output)
        try:
            self._store(output)
        except NodeFailed as exc:  # the step fails, naming the cap, and so the run
            await self.fail(step, exc.reason)
            return True
        now = utcnow()
        started = step.started_at or now
        closed = (await self.session.execute(
            update(RunStep).where(RunStep.id == step.id, RunStep.status.in_(OPEN_STEP_STATUSES))
            .values(status="completed", output=output, error=None, finished_at=now,
                    started_at=started,
                    duration_ms=int((now - started).total_seconds() * 1000),
                    **spent(step, output))
            .returning(RunStep.id).execution_options(synchronize_session=False))).first()
        if closed is None:
            return False
        self.changed.append(f"step:{step.step_number}:completed")
        assert step.node_id is not None
        self.outputs[step.node_id] = output
        await self.schedule(self.scheduler.finish(step.node_id, chosen, all_handles=all_handles))
        return True

    async def fail(self, step: RunStep, reason: str) -> None:
        """The node failed for good: the step and the run fail (resumable)."""
        now = utcnow()
        await self.session.execute(
            update(RunStep).where(RunStep.id == step.id, RunStep.status.in_(OPEN_STEP_STATUSES))
            .values(status="failed", error=storable(reason)[:4000], finished_at=now,
                    started_at=step.started_at or now)
            .execution_options(synchronize_session=False))
        self.changed.append(f"step:{step.step_number}:failed")
        self.failure = storable(f"node {step.node_id!r} failed: {reason}")[:4000]

    # --- scheduling ----------------------------------------------------------------------

    async def begin(self) -> None:
        await self.schedule([self.scheduler.begin()])

    async def schedule(self, activations: list[Activation]) -> None:
        """Run or store each activation and what it causes in turn.  A run that reaches
        :data:`MAX_STEPS_PER_RUN` fails naming the cap (its later activations dropped)."""
        todo = list(activations)
        try:
            await self._schedule(todo)
        except NodeFailed as exc:  # the steps cap, from _insert
            self.failure = exc.reason[:4000]

    async def _schedule(self, todo: list[Activation]) -> None:
        while todo:
            if self.next_number > MAX_STEPS_PER_RUN:
                raise NodeFailed(steps_cap_reason())
            activation = todo.pop(0)
            node = self.plan.nodes[activation.node_id]
            if node.type == "approval":
                await self._wait_for_approval(activation, node)
            elif node.type in INLINE_TYPES and self._over_budget():
                await self._insert(activation, node, status="pending",
                                   task_id=await self._deferred_job())
            elif node.type in INLINE_TYPES:
                todo.extend(await self._inline(activation, node))
            else:
                await self._insert(activation, node, status="pending",
                                   task_id=await self._job_for_step())

    def _over_budget(self) -> bool:
        """Whether the next inline node is left to a job: outside one (an API request holding
        the run's lock), only :data:`INLINE_STEPS_PER_REQUEST` nodes and
        :data:`INLINE_SECONDS_PER_REQUEST` are spent here (a loop may have 100,000 steps)."""
        if self.job_id is not None:
            return False
        now = time.monotonic()
        if self.inline_since is None:
            self.inline_since = now
        if (self.inline_ran >= INLINE_STEPS_PER_REQUEST
                or now - self.inline_since >= INLINE_SECONDS_PER_REQUEST):
            return True
        self.inline_ran += 1
        return False

    async def _deferred_job(self) -> uuid.UUID | None:
        """One job for the inline nodes left over (it computes them in order, as a resumed
        run's, :func:`redo_inline`); none while the run is not running."""
        if self.active and self.deferred_job is None:
            self.deferred_job = (await enqueue(self.session, NODE_TASK,
                                               {"run_id": str(self.run.id)})).id
        return self.deferred_job if self.active else None

    async def _job_for_step(self) -> uuid.UUID | None:
        """The job that will run a new calling node: this job for the first one, a new
        job for the others; none while the run is not running (resume gives them one)."""
        if not self.active:
            return None
        if self.job_id is not None and not self.kept_for_job:
            self.kept_for_job = True
            return self.job_id
        job = await enqueue(self.session, NODE_TASK, {"run_id": str(self.run.id)})
        return job.id

    async def _inline(self, activation: Activation, node: Node,
                      step: RunStep | None = None) -> list[Activation]:
        """Compute a node that calls nothing; the activations it causes.  ``step``: an
        existing step of it being run again (a resumed run)."""
        try:
            output, chosen, every = self._compute(activation, node)
        except (ExpressionError, TemplateRejected, NodeFailed) as exc:
            reason = exc.reason if isinstance(exc, NodeFailed) else str(exc)
            if step is None:
                await self._insert(activation, node, status="failed", error=reason[:4000])
            else:
                await self.fail(step, reason)
            self.failure = f"node {node.id!r} failed: {reason}"[:4000]
            return []
        # As stored (no NUL): what the next nodes read and the run's output is the step's
        # own output (a NUL a template wrote reached runs.output, which no text holds).
        output = storable(output)
        if step is None:
            await self._insert(activation, node, status="completed", output=output)
        else:
            try:
                self._store(output)
            except NodeFailed as exc:
                await self.fail(step, exc.reason)
                return []
            await self.session.execute(
                update(RunStep).where(RunStep.id == step.id)
                .values(status="completed", output=output, error=None, finished_at=utcnow(),
                        started_at=step.started_at or utcnow(), duration_ms=0)
                .execution_options(synchronize_session=False))
        self.outputs[node.id] = output
        return self.scheduler.finish(node.id, chosen, all_handles=every)

    def _compute(self, activation: Activation, node: Node,
                 ) -> tuple[dict[str, Any], Handle | None, bool]:
        """(output, chosen handle, every handle?) of an inline node."""
        data = node.data
        if node.type == "start":
            inputs = run_inputs(self.run)
            return {"output": inputs, **inputs}, None, True
        if node.type == "parallel":
            return {"output": None}, None, True
        if node.type in ("end", "template"):
            source = data.get("output" if node.type == "end" else "template")
            rendered = render_template(source, self.names()) if isinstance(source, str) else None
            return {"output": rendered}, None, True
        if node.type == "join":
            # The branches that arrived this round (a join in a loop must not list an earlier
            # iteration's); a step stored before they were recorded: every finished source.
            sources = activation.arrived
            arrived = {e.source: self.outputs[e.source].get("output")
                       for e in self.plan.incoming[node.id] if e.source in self.outputs
                       and (sources is None or e.source in sources)}
            return {"output": arrived}, None, True
        if node.type == "condition":
            holds = bool(evaluate(str(data["expression"]), self.names()))
            return {"output": holds}, "true" if holds else "false", False
        if node.type == "loop":
            done = self.scheduler.loop_count(node.id, from_body=activation.from_body)
            condition = data.get("condition")
            go_on = True
            if isinstance(condition, str) and condition:
                go_on = bool(evaluate(condition, {**self.names(), "iteration": done}))
            chosen = self.scheduler.loop_step(node.id, from_body=activation.from_body,
                                              go_on=go_on)
            return {"output": done, "iteration": done, "continue": chosen == "body"}, chosen, False
        raise NodeFailed(f"node type {node.type!r} is not computed inline")

    async def _wait_for_approval(self, activation: Activation, node: Node,
                                 step: RunStep | None = None) -> None:
        """Store the approval ``waiting`` with its rendered message; ``step``: its existing
        step (a resumed run whose message failed), made to wait again."""
        message = node.data.get("message")
        try:
            shown = render_template(message, self.names()) if isinstance(message, str) else None
        except (ExpressionError, TemplateRejected) as exc:
            if step is not None:
                await self.fail(step, str(exc))
                return
            await self._insert(activation, node, status="failed", error=str(exc)[:4000])
            self.failure = f"node {node.id!r} failed: {exc}"[:4000]
            return
        shown_input = {"message": shown, "approvers": node.data.get("approvers") or []}
        if step is None:
            step_id = await self._insert(activation, node, status="waiting", input_=shown_input)
        else:
            step_id = step.id
            await self.session.execute(
                update(RunStep).where(RunStep.id == step.id)
                .values(status="waiting", input={**(step.input or {}), **shown_input},
                        error=None, finished_at=None, duration_ms=None,
                        started_at=step.started_at or utcnow())
                .execution_options(synchronize_session=False))
            self.changed.append(f"step:{step.step_number}:waiting")
        timeout = approval_timeout(node.data)
        if timeout is not None:
            await enqueue(self.session, APPROVAL_TIMEOUT_TASK,
                          {"run_id": str(self.run.id), "step_id": str(step_id)}, delay=timeout)

    # --- the end of the transaction ------------------------------------------------------

    async def close(self) -> None:
        """Store the scheduler's state and the run's counters; end the run when it failed
        or when nothing is left to run; tell listeners."""
        await self.session.flush()
        self.wrun.state = {**self.scheduler.state.dump(), "stored_chars": self.stored_chars}
        values: dict[str, Any] = {"steps_count": self.next_number - 1, "updated_at": utcnow()}
        end: str | None = None
        if self.failure is not None and self.run.status == "running":
            end = "failed"
            values.update(status="failed", stop_reason="error", error_message=self.failure,
                          completed_at=utcnow(), **totals_from_steps(self.run.id))
        elif self.run.status == "running":
            open_steps = await self.session.scalar(
                select(func.count()).select_from(RunStep)
                .where(RunStep.run_id == self.run.id,
                       RunStep.status.in_(OPEN_STEP_STATUSES)))
            if not open_steps:
                end = "completed"
                values.update(status="completed", stop_reason="final",
                              output=self._final_output(), completed_at=utcnow(),
                              **totals_from_steps(self.run.id))
        elif self.run.status == "failed":
            # A branch still under way when another failed the run finishes its node and
            # records it: the failed run's totals take its tokens and cost as well.
            values.update(totals_from_steps(self.run.id))
        await self.session.execute(
            update(Run).where(Run.id == self.run.id).values(**values)
            .execution_options(synchronize_session=False))
        if end is not None:
            await record(self.session, f"workflow.run.{'complete' if end == 'completed' else 'fail'}",
                         user_id=self.run.user_id, resource_type="run", resource_id=self.run.id,
                         trace_id=self.run.trace_id, success=end == "completed",
                         category="action" if end == "completed" else "error",
                         error_message=self.failure,
                         metadata={"workflow_id": str(self.wrun.workflow_id),
                                   "version": self.wrun.version, "steps": self.next_number - 1})
            self.changed.append(f"end:{end}")
        if self.changed:  # listeners re-read the steps: one notification says it all
            await notify(self.session, self.run.id, self.changed[-1])

    def _final_output(self) -> str | None:
        """The run's output: the end node's (several ends reached: a JSON object by id)."""
        ends = {n: o.get("output") for n, o in self.outputs.items()
                if self.plan.nodes[n].type == "end"}
        if not ends:
            return None
        if len(ends) == 1:
            value = next(iter(ends.values()))
            return value if isinstance(value, str) else json.dumps(value, default=str)
        return json.dumps(ends, default=str)


async def redo_inline(progress: Progress, step: RunStep) -> None:
    """Compute an inline node's existing step: one whose step failed (a resumed run), or
    one a request left to a job (:meth:`Progress._over_budget`)."""
    node = progress.plan.nodes[str(step.node_id)]
    stored = step.input or {}
    arrived = stored.get("arrived")
    activation = Activation(str(step.node_id), int(step.iteration or 0),
                            bool(stored.get("from_body")),
                            tuple(map(str, arrived)) if isinstance(arrived, list) else None)
    if node.type == "approval":  # its message failed: rendered again, then it waits
        await progress._wait_for_approval(activation, node, step)
        return
    await progress.schedule(await progress._inline(activation, node, step))


async def expire_lost_steps(session: AsyncSession, run_id: uuid.UUID) -> int:
    """Open calling steps whose job is finished or gone (its last worker died with no
    retries left): failed, so the run can be resumed.  The count."""
    result = await session.execute(text(
        "UPDATE run_steps s SET status = 'failed', finished_at = now(), "  # noqa: S608 - constants
        "error = 'the worker running it stopped and its job has no retries left' "
        "WHERE s.run_id = :run_id AND s.status IN ('pending', 'running') "
        "AND s.task_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM background_tasks t "
        f"WHERE t.id = s.task_id AND t.status NOT IN {TERMINAL_SQL})"), {"run_id": run_id})
    return int(getattr(result, "rowcount", 0) or 0)
