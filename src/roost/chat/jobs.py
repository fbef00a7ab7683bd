"""Queue jobs of the chat domain: session summaries by the configured model."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from roost.audit import service as audit
from roost.chat import sessions, summaries
from roost.chat.models import ChatMessage
from roost.errors import Conflict, NotFound
from roost.llm import routing
from roost.llm.gateway import LLMGateway
from roost.llm.jobs import job_gateway
from roost.principal import Principal
from roost.tasks import service as tasks
from roost.tasks.handlers import PermanentError, TaskContext, task
from roost.tasks.models import TaskStatus

SUMMARIZE = "chat.summarize"


class SummarizePayload(BaseModel):
    session_id: uuid.UUID
    model: str | None = Field(default=None, max_length=255)


@task(SUMMARIZE, queue="default", max_retries=3, timeout_s=600, payload_model=SummarizePayload)
async def summarize(ctx: TaskContext, payload: SummarizePayload) -> dict[str, Any]:
    """Write the session's summary (``chat_session_summaries``) with the model."""
    gateway = job_gateway(ctx.database)
    try:
        row = await summaries.summarize_session(gateway, payload.session_id, model=payload.model)
    except (Conflict, NotFound) as exc:  # nothing to summarise / session deleted
        raise PermanentError(exc.detail) from exc
    return {"summary_id": str(row.id), "messages": row.message_count}


# A job that ended without writing the summary: asking again queues a new one.
_GAVE_UP = (TaskStatus.DEAD_LETTER, TaskStatus.CANCELLED)


def summary_key(session_id: uuid.UUID, message_count: int, model: str | None,
                requested_by: uuid.UUID | None) -> str:
    """The idempotency key's stem: one job per session version, model and requester (an
    administrator's job for a user is not visible to the user, so it must not stand in the
    user's way); hashed, as a model name alone may fill the key's 255 characters."""
    parts = (session_id, message_count, model, requested_by)
    digest = hashlib.sha256("|".join("" if p is None else str(p) for p in parts).encode())
    return f"{SUMMARIZE}:{digest.hexdigest()}"


async def enqueue_summary(
    gateway: LLMGateway, actor: Principal, session_id: uuid.UUID, *, model: str | None = None
) -> tuple[uuid.UUID, str]:
    """Queue a summary of a session the actor may see; one job per session version (a new
    one once the last has given up).  Returns the job's id and its status (``queued`` for
    a new or waiting job, else the status of the job already at work or done)."""
    async with gateway.transaction(actor) as session:
        chat_session = await sessions.get_session(session, actor, session_id)
        has_messages = await session.scalar(
            select(ChatMessage.id).where(ChatMessage.session_id == session_id).limit(1)
        )
        if has_messages is None:
            raise Conflict("the session has no messages to summarise")
        # The model the job will ask, routed now as a message post's is: 404 for a model
        # no provider serves, 409 without providers, rather than a job that dead-letters.
        await routing.resolve_route(session, gateway,
                                    model or sessions.provider_model(chat_session.model))
        stem = summary_key(session_id, chat_session.message_count, model, actor.user_id)
        generation = 0  # keys "<stem>:<n>": each a unique-index lookup, few in practice
        while True:
            job, created = await tasks.enqueue_or_existing(
                session, SUMMARIZE, SummarizePayload(session_id=session_id, model=model),
                idempotency_key=f"{stem}:{generation}",
            )
            if created or job.status not in _GAVE_UP:
                break
            generation += 1
        await audit.record(session, "chat.summary.request", user_id=actor.user_id,
                           resource_type=sessions.SESSION, resource_id=session_id,
                           metadata={"task_id": str(job.id), "model": model})
        waiting = created or job.status in (TaskStatus.PENDING, TaskStatus.QUEUED)
        return job.id, "queued" if waiting else str(job.status)
