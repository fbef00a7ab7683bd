"""The no-op job for Roost: ``roost worker --import roost_handlers`` (cwd bench/queue)."""

from __future__ import annotations

from typing import Any

import latency

from roost.tasks.handlers import TaskContext, task


@task("bench.noop", max_retries=0)
async def noop(ctx: TaskContext, payload: dict[str, Any]) -> None:
    latency.observe(payload)
