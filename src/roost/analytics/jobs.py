"""Task-queue handlers of the analytics domain (listed in ``roost.domains``).

``analytics.export`` ships the outbox to ClickHouse (roost.analytics.export).  Its
schedule (every ``ROOST_ANALYTICS_EXPORT_INTERVAL_S``) is registered only when
``ROOST_ANALYTICS_EXPORT`` is true; the task type itself always exists, so an
administrator can run a pass (``POST /api/v1/analytics/export`` runs one in the request).
A failing pass raises: the queue retries it with backoff (5 s, 10 s, 20 s... at most
10 minutes, with the queue's jitter), and the rows stay in the outbox meanwhile.
``analytics.prune`` (every 6 hours) deletes what is older than the retention.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from roost.analytics.clickhouse import ServerSink, close_chdb
from roost.analytics.export import EXPORT_TASK, export_pass, prune_old
from roost.config import get_settings
from roost.tasks.handlers import TaskContext, on_worker_shutdown, task
from roost.tasks.schedules import periodic, register_schedule


@task(EXPORT_TASK, queue="maintenance", priority="background", max_retries=5,
      backoff_base_s=5.0, backoff_max_s=600.0, timeout_s=600)
async def export(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """One export pass: every unexported event, in batches (at most 20 per pass)."""
    result = await export_pass(ctx.database, get_settings())
    return result.as_dict()


if get_settings().analytics_export:
    register_schedule(EXPORT_TASK, EXPORT_TASK,
                      every=timedelta(seconds=get_settings().analytics_export_interval_s))


@periodic("analytics.prune", every=timedelta(hours=6), queue="maintenance",
          priority="background", max_retries=0, timeout_s=900)
async def prune(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, int]:
    """Delete outbox events and streaming metrics past ROOST_ANALYTICS_RETENTION_DAYS."""
    return await prune_old(ctx.database, get_settings().analytics_retention_days)


@on_worker_shutdown
async def close_sinks() -> None:
    close_chdb()
    ServerSink.forget_clients()
