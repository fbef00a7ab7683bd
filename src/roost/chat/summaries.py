"""Session summaries: written by the model (the ``chat.summarize`` job), read and
annotated by the session's owner.
"""

from __future__ import annotations

import json
import re
import uuid

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit import service as audit
from roost.chat.keys import decrypt, decrypt_many
from roost.chat.models import (
    ChatMessage,
    ChatSession,
    ChatSessionSummary,
)
from roost.chat.schemas import (
    SummaryOut,
    SummaryUpdate,
)
from roost.chat.sessions import SESSION, get_session, provider_model
from roost.db.base import utcnow, uuid7
from roost.errors import Conflict, NotFound
from roost.llm import calls, routing
from roost.llm.gateway import LLMGateway
from roost.llm.records import REQUEST_RESOURCE, CallOutcome
from roost.llm.types import ChatMessage as LLMMessage
from roost.llm.types import ChatRequest
from roost.pagination import INT32_MAX
from roost.principal import Principal
from roost.prompts import service as prompts
from roost.security.crypto import MessageCipher

log = structlog.get_logger(__name__)

SUMMARY_PROMPT = (
    "Summarise the conversation below in a few sentences for the user's records. "
    "Then, on a line starting with 'Topics:', list its main topics separated by commas."
)
SUMMARY_MAX_MESSAGES = 200
SUMMARY_MAX_CHARS = 24_000
SUMMARY_MAX_TOPICS = 20
SUMMARY_TOPIC_CHARS = 200
# What jsonb cannot hold (U+0000, lone surrogates): dropped from the model's topics.
_NOT_JSONB = re.compile("[\x00\ud800-\udfff]")


def summary_out(cipher: MessageCipher, row: ChatSessionSummary) -> SummaryOut:
    return SummaryOut(
        id=row.id, session_id=row.session_id, started_at=row.started_at, ended_at=row.ended_at,
        message_count=row.message_count, total_tokens_used=row.total_tokens_used,
        conversation_domain=row.conversation_domain, summary=decrypt(cipher, row.summary),
        key_topics=row.key_topics, decisions_made=row.decisions_made,
        user_preferences=row.user_preferences, tools_used=row.tools_used,
        plans_created=row.plans_created, expert_questions_asked=row.expert_questions_asked,
        session_rating=row.session_rating, complexity_level=row.complexity_level,
        resolution_status=row.resolution_status, search_keywords=row.search_keywords,
        follow_up_suggested=row.follow_up_suggested, follow_up_tasks=row.follow_up_tasks,
        model=row.model, llm_request_id=row.llm_request_id, created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def get_summary(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, session_id: uuid.UUID
) -> SummaryOut:
    await get_session(session, actor, session_id)
    row = (await session.scalars(
        select(ChatSessionSummary).where(ChatSessionSummary.session_id == session_id)
    )).one_or_none()
    if row is None:
        raise NotFound("this session has no summary yet: POST .../summary to make one")
    return summary_out(gateway.cipher, row)


async def update_summary(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, session_id: uuid.UUID,
    data: SummaryUpdate,
) -> SummaryOut:
    await get_session(session, actor, session_id)
    row = (await session.scalars(
        select(ChatSessionSummary).where(ChatSessionSummary.session_id == session_id)
        .with_for_update()
    )).one_or_none()
    if row is None:
        raise NotFound("this session has no summary yet: POST .../summary to make one")
    changes = {}
    for name, value in data.model_dump(exclude_unset=True).items():
        if value is None and name not in ("session_rating", "conversation_domain"):
            continue  # not nullable: an explicit null means "leave it"
        if getattr(row, name) != value:
            changes[name] = [getattr(row, name), value]
            setattr(row, name, value)
    if changes:  # as a session's PATCH: one that changes nothing is no update
        row.updated_at = utcnow()
        await session.flush()
        if "session_rating" in changes:  # set, changed or cleared (None)
            await _rate_prompt(session, session_id, row.session_rating)
        await audit.record(session, "chat.summary.update", user_id=actor.user_id,
                           resource_type=SESSION, resource_id=session_id, changes=changes)
    return summary_out(gateway.cipher, row)


async def _rate_prompt(session: AsyncSession, session_id: uuid.UUID,
                       rating: float | None) -> None:
    """A session's rating feeds the average_satisfaction of the chat.system version its
    replies used (docs/prompts.md); a changed rating replaces the previous one in the
    version that counted it (not always the current one: rated before any reply, or
    before a newer version answered), a cleared one (None) leaves the mean."""
    prompt_id = await session.scalar(select(ChatSession.system_prompt_id)
                                     .where(ChatSession.id == session_id))
    await prompts.record_session_rating(session, session_id, prompt_id, rating)


def _parse_summary(text: str) -> tuple[str, list[str]]:
    """The model's text and the topics of its 'Topics:' line (if it wrote one)."""
    lines = text.strip().splitlines()
    topics: list[str] = []
    kept: list[str] = []
    for line in lines:
        head, sep, rest = line.partition(":")
        if sep and head.strip().strip("*#- ").lower() in ("topics", "key topics"):
            # A provider's text is fitted to the jsonb column, never refused (docs/chat.md).
            cleaned = (_NOT_JSONB.sub("", t).strip(" .*-") for t in rest.split(","))
            topics.extend(t[:SUMMARY_TOPIC_CHARS] for t in cleaned if t)
        else:
            kept.append(line)
    summary = "\n".join(kept).strip() or text.strip()
    return summary, topics[:SUMMARY_MAX_TOPICS]


async def _tools_used(session: AsyncSession, cipher: MessageCipher,
                      session_id: uuid.UUID) -> list[str]:
    """Every tool named in the session: each row's ``tool_call_name`` and the names of the
    calls in its encrypted ``tool_calls`` (an answer's column holds its first call's name
    only, and a client's stored assistant message none: the others were left out)."""
    names = {name for name in (await session.scalars(
        select(ChatMessage.tool_call_name).distinct()
        .where(ChatMessage.session_id == session_id,
               ChatMessage.tool_call_name.is_not(None)))).all() if name}
    stored = [token for token in (await session.scalars(
        select(ChatMessage.tool_calls).where(ChatMessage.session_id == session_id,
                                             ChatMessage.tool_calls.is_not(None)))).all()
              if token is not None]
    for start in range(0, len(stored), 500):
        for text in decrypt_many(cipher, stored[start:start + 500]):
            try:
                calls_ = json.loads(text)
            except ValueError:
                continue
            names.update(str(c["name"]) for c in calls_ if isinstance(c, dict)
                         and isinstance(c.get("name"), str) and c["name"])
    return sorted(names)


async def summarize_session(
    gateway: LLMGateway, session_id: uuid.UUID, *, model: str | None = None
) -> ChatSessionSummary:
    """Write (or rewrite) the session's summary with the configured model.

    Runs as the session's owner (its LLM request and usage are theirs).  Called by the
    ``chat.summarize`` job (``roost.chat.jobs``), or inline when no queue is wanted.
    """
    async with gateway.db.transaction() as session:
        chat_session = await session.get(ChatSession, session_id)
        if chat_session is None:
            raise NotFound(f"no chat session with id {session_id}")
        owner = Principal(user_id=chat_session.user_id, is_admin=False, kind="system")
    async with gateway.transaction(owner) as session:
        rows = list((await session.scalars(
            select(ChatMessage).where(ChatMessage.session_id == session_id)
            .order_by(ChatMessage.seq.desc()).limit(SUMMARY_MAX_MESSAGES)
        )).all())
        if not rows:
            raise Conflict("the session has no messages to summarise")
        rows.reverse()
        stats = (await session.execute(
            select(func.count(), func.min(ChatMessage.created_at), func.max(ChatMessage.created_at),
                   func.coalesce(func.sum(ChatMessage.tokens_in), 0)
                   + func.coalesce(func.sum(ChatMessage.tokens_out), 0))
            .where(ChatMessage.session_id == session_id)
        )).one()
        # Of every row, as the counts are (not only the last SUMMARY_MAX_MESSAGES read above).
        tools = await _tools_used(session, gateway.cipher, session_id)
        transcript = "\n".join(
            f"{r.role}: {decrypt(gateway.cipher, r.content)}" for r in rows
        )[-SUMMARY_MAX_CHARS:]
        chat = ChatRequest(messages=[LLMMessage(role="system", content=SUMMARY_PROMPT),
                                     LLMMessage(role="user", content=transcript)],
                           temperature=0.2, max_tokens=300)
        # An agent's session is summarised by the default model (an agent writes no summary).
        route = await routing.resolve_route(session, gateway,
                                            model or provider_model(chat_session.model))
        call = await calls.add_request(session, gateway, owner, chat, route,
                                       request_type="summary", session_id=session_id)
        await audit.record(session, "llm.request.create", user_id=owner.user_id,
                           category="system", resource_type=REQUEST_RESOURCE,
                           resource_id=call.request_id,
                           metadata={"type": "summary", "session_id": str(session_id)})

    async def store_summary(session: AsyncSession, outcome: CallOutcome) -> ChatSessionSummary:
        text, topics = _parse_summary(outcome.result.content)
        row = (await session.scalars(
            select(ChatSessionSummary).where(ChatSessionSummary.session_id == session_id)
            .with_for_update()
        )).one_or_none()
        values = dict(
            started_at=stats[1], ended_at=stats[2], message_count=int(stats[0]),
            # Each count is fitted to 10**9 (a provider's), their sum to the int32 column:
            # a long or inflated session is still summarised (docs/chat.md).
            total_tokens_used=min(int(stats[3] or 0), INT32_MAX),
            summary=gateway.cipher.encrypt(text),
            key_topics=topics, search_keywords=[t.lower() for t in topics], tools_used=tools,
            model=outcome.result.model or outcome.winner.name, llm_request_id=call.request_id,
        )
        if row is None:
            row = ChatSessionSummary(id=uuid7(), session_id=session_id,
                                     user_id=chat_session.user_id, **values)
            session.add(row)
        else:
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
        await session.flush()
        await audit.record(session, "chat.summary.write", user_id=owner.user_id,
                           category="system", resource_type=SESSION, resource_id=session_id,
                           metadata={"request_id": str(call.request_id), "messages": int(stats[0])})
        return row

    # A failure is audited llm.request.fail by the call itself.
    return await calls.run(gateway, call, on_success=store_summary)
