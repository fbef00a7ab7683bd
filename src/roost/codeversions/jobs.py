"""Task-queue handlers of the codeversions domain: ``codeversions.validate``.  Listed in
``roost.domains``."""

from __future__ import annotations

import uuid
from typing import Any

from roost.codeversions.config import CodeVersionsConfig
from roost.codeversions.service import VALIDATE_TASK
from roost.codeversions.validation import validate
from roost.config import get_settings
from roost.tasks.handlers import PermanentError, TaskContext, task

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
