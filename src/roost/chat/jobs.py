"""Queue jobs of the chat domain: session summaries by the configured model."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from roost.audit import service as audit
from roost.chat import sessions, summaries
from roost.chat.models import ChatMessage
from roost.errors import Conflict, NotFound
from roost.llm.gateway import LLMGateway
from roost.llm.jobs import job_gateway
from roost.principal import Principal
from roost.tasks import service as tasks
from roost.tasks.handlers import PermanentError, TaskContext, task

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


async def enqueue_summary(
    gateway: LLMGateway, actor: Principal, session_id: uuid.UUID, *, model: str | None = None
) -> uuid.UUID:
    """Queue a summary of a session the actor may see; one job per session version."""
    async with gateway.transaction(actor) as session:
        chat_session = await sessions.get_session(session, actor, session_id)
        has_messages = await session.scalar(
            select(ChatMessage.id).where(ChatMessage.session_id == session_id).limit(1)
        )
        if has_messages is None:
            raise Conflict("the session has no messages to summarise")
        job = await tasks.enqueue(
            session, SUMMARIZE, SummarizePayload(session_id=session_id, model=model),
            idempotency_key=f"{SUMMARIZE}:{session_id}:{chat_session.message_count}:{model or ''}",
        )
        await audit.record(session, "chat.summary.request", user_id=actor.user_id,
                           resource_type=sessions.SESSION, resource_id=session_id,
                           metadata={"task_id": str(job.id), "model": model})
        return job.id
