"""Task-queue handlers: ``knowledge.ingest`` runs an ingestion, ``knowledge.curate``
writes curated summaries.  Listed in ``roost.domains``; ``roost.tasks.handlers.discover``
imports it."""

from __future__ import annotations

import uuid
from typing import Any

from roost.config import get_settings
from roost.knowledge.config import KnowledgeConfig
from roost.tasks.handlers import PermanentError, TaskContext, task

INGEST_TASK = "knowledge.ingest"
CURATE_TASK = "knowledge.curate"


def _uuid(payload: dict[str, Any], key: str) -> uuid.UUID | None:
    raw = payload.get(key)
    if raw is None:
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise PermanentError(f"payload {key} is not a UUID") from None


@task(INGEST_TASK, max_retries=5, backoff_base_s=5.0, backoff_max_s=600.0)
async def ingest(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Resumable: a retried or reclaimed job skips the sources already finished."""
    from roost.knowledge.ingest import run_ingestion

    run_id = _uuid(payload, "run_id")
    if run_id is None:
        raise PermanentError("payload needs run_id")
    cfg = KnowledgeConfig.from_settings(get_settings())
    summary = await run_ingestion(
        ctx.database, run_id, cfg, force=bool(payload.get("force", False)),
        document_id=_uuid(payload, "document_id"),
        final_attempt=ctx.retry_count >= ctx.max_retries,
    )
    if summary.get("fatal"):
        # The run and its documents already say why; the task must not look completed.
        raise PermanentError(f"ingestion run {run_id} failed: {summary['fatal']}")
    return summary


@task(CURATE_TASK, max_retries=3, backoff_base_s=10.0, priority="low")
async def curate(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    from roost.knowledge.curation import curate_document

    document_id, user_id = _uuid(payload, "document_id"), _uuid(payload, "user_id")
    if document_id is None or user_id is None:
        raise PermanentError("payload needs document_id and user_id")
    cfg = KnowledgeConfig.from_settings(get_settings())
    return await curate_document(ctx.database, cfg, document_id, user_id)
