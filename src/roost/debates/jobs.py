"""Queue jobs of the debates domain: running (or resuming) a debate, and the sweep that
fails debates whose job can no longer finish them."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Final

import structlog
from sqlalchemy import select, text

from roost.db.engine import Database
from roost.debates import runner
from roost.debates.models import DebateSession
from roost.debates.service import RUN_TASK
from roost.llm.jobs import job_gateway
from roost.tasks.handlers import TaskContext, task
from roost.tasks.models import job_ended
from roost.tasks.schedules import periodic

log = structlog.get_logger(__name__)

DEBATE_MAX_RETRIES: Final = 5

env_override: runner.DebateEnv | None = None  # tests: the environment (gateway) to use


def debate_env(database: Database) -> runner.DebateEnv:
    if env_override is not None:
        return env_override
    return runner.DebateEnv(database=database, gateway=job_gateway(database))


@task(RUN_TASK, queue="agents", max_retries=DEBATE_MAX_RETRIES, backoff_base_s=1.0,
      backoff_max_s=60.0)
async def run_debate(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Run or resume one debate.  On the job's last attempt an unexpected failure fails
    the debate, so a debate never outlives its job."""
    debate_id = uuid.UUID(str(payload["debate_id"]))
    try:
        outcome = await runner.execute(debate_env(ctx.database), debate_id)
    except Exception as exc:
        if ctx.retry_count >= ctx.max_retries:
            await runner.fail_debate(ctx.database, debate_id,
                                     f"the debate failed: {type(exc).__name__}: "
                                     f"{str(exc)[:500]}")
        raise
    return {"debate_id": str(debate_id), "status": outcome}




async def sweep(database: Database) -> list[uuid.UUID]:
    """Fail every open debate whose job is finished, dead-lettered or gone (its last
    worker died with no retries left): no debate stays ``active`` forever."""
    async with database.transaction() as session:
        stranded = list((await session.scalars(
            select(DebateSession.id).where(
                DebateSession.status.in_(runner.OPEN),
                DebateSession.created_at < text("now() - interval '30 seconds'"),
                job_ended(DebateSession.task_id),
            ).limit(1000))).all())
    failed = [d for d in stranded if await runner.fail_debate(
        database, d, "the worker running it stopped and its job has no retries left")]
    if failed:
        log.warning("debates.swept", count=len(failed))
    return failed


@periodic("debates.sweep", every=timedelta(minutes=1), queue="maintenance",
          priority="background", max_retries=0, timeout_s=300)
async def sweep_debates(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {"failed": [str(d) for d in await sweep(ctx.database)]}
