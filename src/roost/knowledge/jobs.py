"""Task-queue handlers: ``knowledge.ingest`` runs an ingestion, ``knowledge.curate``
writes curated summaries, ``knowledge.sweep`` ends the runs whose jobs ended.  Listed in
``roost.domains``; ``roost.tasks.handlers.discover`` imports it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select, text

from roost.config import get_settings
from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.models import IngestionRun
from roost.tasks.handlers import PermanentError, TaskContext, task
from roost.tasks.models import job_ended
from roost.tasks.schedules import periodic

log = structlog.get_logger(__name__)

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


STRANDED_WHY = ("its job ended without finishing it (cancelled, or its worker stopped with "
                "no retries left); start the ingestion again to go on")


async def sweep(database: Database, cfg: KnowledgeConfig | None = None) -> list[uuid.UUID]:
    """End failed every unfinished ingestion run whose job is finished, cancelled,
    dead-lettered or gone, with its documents still waiting: a job an administrator
    cancelled, or whose last worker died, left the run "running" and its uploads
    "processing" for ever.  Runs of ``roost ingest`` in the foreground have no job and
    end themselves (``interrupt_run``)."""
    from roost.knowledge.ingest import FINAL_STATUSES, interrupt_run

    async with database.transaction() as session:
        stranded = list((await session.scalars(
            select(IngestionRun.id).where(
                IngestionRun.status.not_in(FINAL_STATUSES),
                IngestionRun.task_id.is_not(None),
                IngestionRun.created_at < text("now() - interval '30 seconds'"),
                job_ended(IngestionRun.task_id),
            ).limit(1000))).all())
    if not stranded:
        return []
    cfg = cfg or KnowledgeConfig.from_settings(get_settings())
    for run_id in stranded:
        await interrupt_run(database, cfg, run_id, STRANDED_WHY)
    log.warning("knowledge.swept", count=len(stranded))
    return stranded


@periodic("knowledge.sweep", every=timedelta(minutes=1), queue="maintenance",
          priority="background", max_retries=0, timeout_s=300)
async def sweep_ingestion_runs(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {"failed": [str(r) for r in await sweep(ctx.database)]}
