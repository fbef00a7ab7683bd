"""Task-queue handlers of the workspace domain: the hourly refresh of open tasks' scores
(their due-date term depends on the time; docs/workspace.md, "The score").  Listed in
``roost.domains``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from roost.tasks.handlers import TaskContext
from roost.tasks.schedules import periodic
from roost.workspace.service import refresh_scores


@periodic("workspace.rescore", every=timedelta(hours=1), queue="maintenance",
          priority="background", max_retries=0, timeout_s=300)
async def rescore_tasks(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    async with ctx.database.transaction() as session:
        return {"rescored": await refresh_scores(session)}
