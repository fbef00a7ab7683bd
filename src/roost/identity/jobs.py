"""Identity's periodic job for the task queue: expired sessions, challenges, counters,
ended API keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from roost.config import get_settings
from roost.identity.sessions import cleanup_expired
from roost.tasks.handlers import TaskContext
from roost.tasks.schedules import periodic


@periodic("identity.cleanup_sessions", every=timedelta(hours=1), queue="maintenance",
          priority="background", max_retries=2)
async def cleanup_sessions(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Same work as ``roost users cleanup-sessions``."""
    async with ctx.database.transaction() as session:
        report = await cleanup_expired(session,
                                       failure_window_s=get_settings().login_failure_window_s)
    return {"sessions": report.sessions, "challenges": report.challenges,
            "throttle_rows": report.throttle_rows, "rate_limit_rows": report.rate_limit_rows,
            "api_keys": report.api_keys}
