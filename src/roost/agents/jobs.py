"""Queue jobs of the agents domain: executing a run, and the sweep that fails runs whose
job can no longer finish them (its last worker died with no retries left)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Final

import structlog
from sqlalchemy import select, text

from roost.agents import health as _health  # noqa: F401 - its schedule (agents.persona_health)
from roost.agents import mail, memorytools, runner
from roost.agents.models import Run
from roost.agents.runs import RUN_TASK, fail_open_run
from roost.calendar import agenttools as calendar_tools
from roost.config import Settings, get_settings
from roost.db.engine import Database
from roost.keyfiles import load_keys
from roost.knowledge.config import KnowledgeConfig
from roost.llm.jobs import job_gateway
from roost.security.crypto import SecretBox
from roost.tasks.handlers import TaskContext, task
from roost.tasks.models import job_ended
from roost.tasks.schedules import periodic
from roost.tools.calls import HostedBuiltin
from roost.tools.config import ToolsConfig
from roost.workspace import agenttools as workspace_tools

log = structlog.get_logger(__name__)

RUN_MAX_RETRIES: Final = 5

env_override: runner.RunEnv | None = None  # tests: the environment (gateway, keys) to use


def hosted_builtins(settings: Settings,
                    knowledge: KnowledgeConfig | None) -> dict[uuid.UUID, HostedBuiltin]:
    """The built-in tools this domain runs: send_email (mail), the memory tools, the
    workspace's task-board tools and the calendar tools."""
    return {**mail.builtin_tools(mail.MailConfig.from_settings(settings)),
            **memorytools.builtin_tools(knowledge, settings.db_app_role),
            **workspace_tools.builtin_tools(settings.db_app_role),
            **calendar_tools.builtin_tools(settings.db_app_role)}


def run_env(database: Database) -> runner.RunEnv:
    if env_override is not None:
        return env_override
    settings = get_settings()
    try:
        knowledge: KnowledgeConfig | None = KnowledgeConfig.from_settings(settings)
    except Exception:  # a misconfigured embedder only disables retrieval and search
        knowledge = None
    return runner.RunEnv(
        database=database, gateway=job_gateway(database), tools=ToolsConfig.from_settings(settings),
        box=SecretBox.from_keys(load_keys(settings).secrets_key), knowledge=knowledge,
        hosted=hosted_builtins(settings, knowledge))


@task(RUN_TASK, queue="agents", max_retries=RUN_MAX_RETRIES, backoff_base_s=1.0,
      backoff_max_s=30.0)
async def run_agent(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Execute (or resume) one run.  On its last attempt an unexpected failure fails the
    run, so a run never outlives its job."""
    run_id = uuid.UUID(str(payload["run_id"]))
    try:
        outcome = await runner.execute(run_env(ctx.database), run_id)
    except Exception as exc:
        if ctx.retry_count >= ctx.max_retries:
            await fail_run(ctx.database, run_id, f"the run failed: {type(exc).__name__}: "
                                                 f"{str(exc)[:500]}")
        raise
    return {"run_id": str(run_id), "status": outcome}


async def fail_run(database: Database, run_id: uuid.UUID, reason: str) -> bool:
    """Fail a run that is not finished (as the system); true when it changed."""
    async with database.transaction() as session:
        return await fail_open_run(session, run_id, reason, metadata={"swept": True})


async def sweep(database: Database) -> list[uuid.UUID]:
    """Fail every unfinished run whose job is finished, dead-lettered or gone."""
    async with database.transaction() as session:
        stranded = list((await session.scalars(
            select(Run.id).where(
                Run.status.in_(("pending", "running")),
                Run.kind == "agent",  # a workflow's nodes have jobs of their own
                Run.updated_at < text("now() - interval '30 seconds'"),
                job_ended(Run.task_id),
            ).limit(1000))).all())
    failed = []
    for run_id in stranded:
        if await fail_run(database, run_id, "the worker running it stopped and its job has no "
                                            "retries left"):
            failed.append(run_id)
    if failed:
        log.warning("agents.runs_swept", count=len(failed))
    return failed


@periodic("agents.sweep_runs", every=timedelta(minutes=1), queue="maintenance",
          priority="background", max_retries=0, timeout_s=300)
async def sweep_runs(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {"failed": [str(r) for r in await sweep(ctx.database)]}
