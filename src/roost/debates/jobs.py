"""Queue job of the debates domain: running (or resuming) a debate."""

from __future__ import annotations

import uuid
from typing import Any, Final

from roost.db.engine import Database
from roost.debates import runner
from roost.debates.service import RUN_TASK
from roost.llm.jobs import job_gateway
from roost.tasks.handlers import TaskContext, task

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
