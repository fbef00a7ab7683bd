"""Requests orphaned by a process that died mid-call (crash, ``kill -9``): swept to
``failed`` by the queued job ``llm.sweep_orphans`` (``roost.llm.jobs``)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit import service as audit
from roost.config import Settings
from roost.llm.models import LLMProviderRow
from roost.llm.records import REQUEST_RESOURCE

ORPHAN_MARGIN_S = 300.0
ORPHAN_BATCH = 500


async def orphan_threshold_s(session: AsyncSession, settings: Settings) -> float:
    """How long a request may stay pending/running before it counts as orphaned.

    ``ROOST_LLM_ORPHAN_AFTER_S`` when set; else the longest a live call can take before
    its own final write (each provider of a fallback chain gets ``ROOST_LLM_TIMEOUT_S``)
    plus what a stream may take after its first chunk (``ROOST_LLM_STREAM_MAX_S``, at
    least the margin), so a live stream is never swept.
    """
    if settings.llm_orphan_after_s is not None:
        return float(settings.llm_orphan_after_s)
    enabled = await session.scalar(
        select(func.count()).select_from(LLMProviderRow).where(LLMProviderRow.enabled)
    )
    return (settings.llm_timeout_s * max(1, int(enabled or 0))
            + max(ORPHAN_MARGIN_S, settings.llm_stream_max_s))


async def fail_orphaned_requests(session: AsyncSession, older_than_s: float) -> list[uuid.UUID]:
    """Mark ``failed`` (with the reason) up to ORPHAN_BATCH requests left ``pending`` or
    ``running`` for longer than ``older_than_s`` since they started: the process that ran
    them died (crash, ``kill -9``) before its final write.  Each is audited
    ``llm.request.fail``.  Rows being finalised right now are skipped (SKIP LOCKED); a
    live call that outlasts the threshold still records its real outcome at the end."""
    reason = (f"orphaned: still {{status}} {older_than_s:g} s after it started; the Roost "
              "process handling it stopped (crash or kill) before it finished")
    rows = (await session.execute(
        text(
            "UPDATE llm_requests r SET status = 'failed', completed_at = now(),"
            " error_message = replace(:reason, '{status}', old.status)"
            " FROM (SELECT id, status FROM llm_requests"
            "       WHERE status IN ('pending', 'running')"
            "       AND coalesce(started_at, created_at) < now() - make_interval(secs => :secs)"
            "       ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED) old"
            " WHERE r.id = old.id"
            " RETURNING r.id, r.user_id, old.status AS was, r.error_message"
        ),
        {"reason": reason, "secs": older_than_s, "batch": ORPHAN_BATCH},
    )).all()
    for row in rows:
        await audit.record(
            session, "llm.request.fail", user_id=row.user_id, category="error",
            resource_type=REQUEST_RESOURCE, resource_id=row.id, success=False,
            error_message=row.error_message, metadata={"orphaned": True, "was": row.was},
        )
    return [row.id for row in rows]
