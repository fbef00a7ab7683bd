"""Task-queue handlers of the codeversions domain: ``codeversions.validate`` and the sweep
of validations whose job died for good.  Listed in ``roost.domains``."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, update

from roost.codeversions.config import CodeVersionsConfig
from roost.codeversions.models import CodeVersion
from roost.codeversions.service import DEAD_JOB_STATUSES, VALIDATE_TASK
from roost.codeversions.validation import validate
from roost.config import get_settings
from roost.db.engine import Database
from roost.tasks.handlers import PermanentError, TaskContext, task
from roost.tasks.models import BackgroundTask
from roost.tasks.schedules import periodic

config_override: CodeVersionsConfig | None = None  # tests: the configuration to use


def job_config() -> CodeVersionsConfig:
    return config_override or CodeVersionsConfig.from_settings(get_settings())


# No job timeout: each check has its own (ROOST_CODE_CHECK_TIMEOUT_S).  A worker that dies
# mid-validation leaves the version "running"; the retry runs the checks again.
@task(VALIDATE_TASK, queue="default", max_retries=2, backoff_base_s=5.0)
async def validate_job(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Run the configured checks on one code version and store the results."""
    try:
        version_id = uuid.UUID(str(payload["version_id"]))
    except (KeyError, ValueError):
        raise PermanentError("the payload names no code version (version_id)") from None
    return await validate(ctx.database, job_config(), version_id)


async def sweep(database: Database) -> int:
    """Mark ``error`` every validation left pending or running whose job is finished,
    dead-lettered or gone (its last worker died with no retries left), so the version can
    be validated again (``POST .../validate`` refuses while one is in progress)."""
    async with database.transaction() as session:
        result = await session.execute(
            update(CodeVersion).where(
                CodeVersion.validation_status.in_(("pending", "running")),
                CodeVersion.validation_task_id.is_not(None),
                ~exists().where(BackgroundTask.id == CodeVersion.validation_task_id,
                                BackgroundTask.status.not_in(DEAD_JOB_STATUSES)),
            ).values(validation_status="error")
            .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


@periodic("codeversions.sweep", every=timedelta(minutes=1), queue="maintenance",
          priority="background", max_retries=0, timeout_s=300)
async def sweep_validations(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {"errored": await sweep(ctx.database)}
