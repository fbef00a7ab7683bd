"""Task-queue handlers of the memory domain: ``memory.learn`` (extraction and reconciliation,
``roost.memory.learning``).  Listed in ``roost.domains``."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import exists, select

from roost.config import get_settings
from roost.db.engine import Database
from roost.db.errors import sqlstate
from roost.errors import RoostError
from roost.identity.models import User
from roost.llm.jobs import job_gateway
from roost.memory.extraction import ModelOutputInvalid
from roost.memory.learning import LEARN_TASK, LearnPayload, learn, payload_text
from roost.memory.recall import usable_embedder
from roost.principal import Principal
from roost.security.crypto import DecryptionError
from roost.tasks.handlers import PermanentError, TaskContext, task
from roost.tasks.schedules import periodic

log = structlog.get_logger(__name__)

# The text (up to learning.MAX_LEARN_CHARS characters) travels encrypted: base64 of up to 4
# bytes a character, plus the payload's other fields.
_MAX_PAYLOAD_BYTES = 256 * 1024


@task(LEARN_TASK, queue="default", max_retries=3, timeout_s=900, backoff_base_s=10.0,
      max_payload_bytes=_MAX_PAYLOAD_BYTES, payload_model=LearnPayload)
async def learn_job(ctx: TaskContext, payload: LearnPayload) -> dict[str, Any]:
    """Learn from the payload's text into its scope, acting as the scope's owner (their
    row-level security, their LLM usage).  A user deleted while it was queued or while it
    learned ends it at once, completed with nothing learned (as a run of a deleted user's
    agent ends).  Unusable model output, a scope that no longer exists, a value the
    database refuses or a refused request fail at once (no retry can help); a provider
    that failed or timed out is retried."""
    if not await _user_exists(ctx.database, payload.user_id):  # no model call for nobody
        return _user_gone(payload)
    gateway = job_gateway(ctx.database)
    try:
        text = payload_text(payload, gateway.cipher)
    except DecryptionError:
        raise PermanentError("the learn job's text does not decrypt with the message keys") from None
    except RoostError as exc:
        raise PermanentError(exc.detail) from exc
    owner = Principal(user_id=payload.user_id, is_admin=False, kind="job")
    try:
        report = await learn(ctx.database, gateway, owner, payload.scope(),
                             source_type=payload.source_type, source_id=payload.source_id,
                             text=text, embedder=usable_embedder(gateway.settings),
                             model=payload.model)
    except Exception as exc:
        if not await _user_exists(ctx.database, payload.user_id):  # deleted meanwhile
            return _user_gone(payload)
        if isinstance(exc, ModelOutputInvalid):
            raise PermanentError(exc.detail) from exc
        if isinstance(exc, RoostError) and exc.status < 500:
            # not found, refused, no provider: the same next time
            raise PermanentError(exc.detail) from exc
        state = sqlstate(exc) or ""
        if state == "23503":  # what it learns for (its scope) was deleted meanwhile
            raise PermanentError("what this learns for was deleted meanwhile") from exc
        if state.startswith("22") or state == "23514":  # a value (or a check constraint)
            # the database refuses: the same next time.  The error's statement and
            # parameters (the model's text) are kept out of the job's error and stack
            # (``from None``).
            log.warning("memory.learn_value_refused", sqlstate=state,
                        user_id=str(payload.user_id))
            raise PermanentError(
                f"the database refused a value to store (SQLSTATE {state})") from None
        raise
    return report.as_json()


async def _user_exists(database: Database, user_id: uuid.UUID) -> bool:
    async with database.transaction() as session:
        return bool(await session.scalar(select(exists().where(User.id == user_id))))


def _user_gone(payload: LearnPayload) -> dict[str, Any]:
    log.info("memory.learn_user_gone", user_id=str(payload.user_id))
    return {"skipped": "the user no longer exists", "user_id": str(payload.user_id)}


# --- recall upkeep (helper B): decay and missing embeddings -------------------------------

DECAY_TASK = "memory.decay"
EMBED_TASK = "memory.embed"


@periodic(DECAY_TASK, every=timedelta(seconds=get_settings().memory_decay_interval_s),
          queue="maintenance", priority="background", max_retries=2)
async def decay_job(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Archive memories not recalled for ``ROOST_MEMORY_ARCHIVE_AFTER_DAYS`` (0: never)."""
    from roost.memory.decay import archive_unaccessed

    days = get_settings().memory_archive_after_days
    if days <= 0:
        return {"skipped": "ROOST_MEMORY_ARCHIVE_AFTER_DAYS is 0"}
    report = await archive_unaccessed(ctx.database, days=days)
    return {"archived": report.archived, "users": len(report.users), "archive_after_days": days}


@periodic(EMBED_TASK, every=timedelta(seconds=get_settings().memory_decay_interval_s),
          queue="maintenance", priority="background", max_retries=2)
async def embed_job(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Embed memories stored without a vector of the configured model (no embedder then,
    a failed embedding, changed content, another model)."""
    from roost.memory.recall import embed_missing

    embedder = usable_embedder(get_settings())
    if embedder is None:
        return {"skipped": "no embedder can run here (see ROOST_KNOWLEDGE_EMBEDDING_*)"}
    report = await embed_missing(ctx.database, embedder)
    return {"model": report.model, "missing": report.missing, "embedded": report.embedded}
