"""Conversations: ``chat_sessions``, ``chat_messages``, ``chat_history``, ``session_state``
and ``chat_session_summaries``.

One table per concept (``docs/seed-map.toml`` maps every seed column to these):

* ``chat_sessions``: a client's own identifier is ``external_id``; the activity counters
  (``request_count``, ``last_activity_at``, ``status``, ``expires_at``) live here, and
  the session's free-form context lives in ``session_state``.
* ``chat_messages``: ``content`` is Fernet ciphertext (mandatory, no plaintext
  fallback); ``seq`` is allocated from ``chat_sessions.message_count`` under the
  session's row lock, so it is gap-free, unique per session, and the keyset of history
  pagination.
* ``chat_history``: the stream event log; each event's JSON, encrypted.
* ``session_state``: one JSONB state per session, versioned.
* ``chat_session_summaries``: one per session; the summary text is encrypted.

Every table carries ``user_id`` (the owner) so row-level security needs no join.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, Timestamps, UUIDPrimaryKey, utcnow
from roost.prompts import models as _prompt_models  # noqa: F401 - "system_prompts"
from roost.workspace import models as _workspace_models  # noqa: F401 - "projects"

ROLES = ("system", "developer", "user", "assistant", "tool")
SESSION_STATUSES = ("active", "archived", "expired")
COMPLEXITY_LEVELS = ("low", "medium", "high")
RESOLUTION_STATUSES = ("completed", "partial", "unresolved", "abandoned")
# ``chat_messages.tool_call_id``: a tool call id as providers hand them out (and as an
# answer's ``tool_calls`` keep them), so a tool message can answer it (migration 1300).
TOOL_CALL_ID_CHARS = 1024


def _owner() -> Any:
    return mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)


def _session_fk() -> Any:
    return mapped_column(ForeignKey("chat_sessions.id", ondelete="CASCADE"), nullable=False)


class ChatSession(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "chat_sessions"

    user_id: Mapped[uuid.UUID] = _owner()
    external_id: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(256))
    model: Mapped[str | None] = mapped_column(String(128))
    enable_tools: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    status: Mapped[str] = mapped_column(
        String(16), server_default=text("'active'"), default="active"
    )
    # Number of messages ever stored; the next message's seq is message_count + 1.
    message_count: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    request_count: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    last_activity_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id",
                                                                    ondelete="SET NULL"))
    # The chat.system version of the last reply: a summary's session_rating feeds its
    # average_satisfaction (docs/prompts.md).
    system_prompt_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("system_prompts.id", ondelete="SET NULL"))

    __table_args__ = (
        CheckConstraint("status IN ('active', 'archived', 'expired')", name="status"),
        CheckConstraint("message_count >= 0 AND request_count >= 0", name="counts"),
        Index("ix_chat_sessions_user_id_created_at", "user_id", "created_at"),
        Index("ix_chat_sessions_project_id", "project_id"),
        Index("ix_chat_sessions_system_prompt_id", "system_prompt_id",
              postgresql_where=text("system_prompt_id IS NOT NULL")),
        # A client's own identifier is unique per owner.
        Index(
            "uq_chat_sessions_user_id_external_id", "user_id", "external_id", unique=True,
            postgresql_where=text("external_id IS NOT NULL"),
        ),
    )


class ChatMessage(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "chat_messages"

    session_id: Mapped[uuid.UUID] = _session_fk()
    user_id: Mapped[uuid.UUID] = _owner()
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    # Fernet token of the UTF-8 text: never NULL, never plaintext.
    content: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # Fernet token of the JSON list of tool calls an assistant turn requested.
    tool_calls: Mapped[bytes | None] = mapped_column(LargeBinary)
    tool_call_name: Mapped[str | None] = mapped_column(String(256))
    tool_call_id: Mapped[str | None] = mapped_column(String(TOOL_CALL_ID_CHARS))
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(255))
    llm_request_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("llm_requests.id", ondelete="SET NULL")
    )
    conversation_domain: Mapped[str | None] = mapped_column(String(64))
    plan_step: Mapped[int | None] = mapped_column(Integer)
    confidence_score: Mapped[float | None] = mapped_column(Float)
    embedding_model_used: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        CheckConstraint(
            "role IN ('system', 'developer', 'user', 'assistant', 'tool')", name="role"
        ),
        CheckConstraint("seq > 0", name="seq"),
        UniqueConstraint("session_id", "seq", name="uq_chat_messages_session_id_seq"),
        Index("ix_chat_messages_user_id", "user_id"),
        Index("ix_chat_messages_llm_request_id", "llm_request_id"),
    )


class ChatHistoryEvent(UUIDPrimaryKey, CreatedAt, Base):
    """One row per stream event of a session."""

    __tablename__ = "chat_history"

    session_id: Mapped[uuid.UUID] = _session_fk()
    user_id: Mapped[uuid.UUID] = _owner()
    event_type: Mapped[str] = mapped_column(String(64), server_default=text("'message'"))
    # Fernet token of the event's JSON (role, content, metadata ...).
    message: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)

    __table_args__ = (
        Index("ix_chat_history_session_id_created_at", "session_id", "created_at", "id"),
        Index("ix_chat_history_user_id", "user_id"),
    )


class SessionState(Base):
    """A session's free-form JSON state, with a version for optimistic concurrency."""

    __tablename__ = "session_state"

    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = _owner()
    state: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), default=dict, nullable=False
    )
    # Bumped on every write: a client may pass the version it read to refuse lost updates.
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"), default=1)
    updated_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), default=utcnow, onupdate=utcnow, nullable=False
    )

    __table_args__ = (Index("ix_session_state_user_id", "user_id"),)


class ChatSessionSummary(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "chat_session_summaries"

    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = _owner()
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime]
    message_count: Mapped[int] = mapped_column(Integer)
    total_tokens_used: Mapped[int | None] = mapped_column(Integer)
    conversation_domain: Mapped[str | None] = mapped_column(String(64))
    # Fernet token: a summary of an encrypted conversation is as private as the messages.
    summary: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    key_topics: Mapped[list[Any]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), default=list
    )
    decisions_made: Mapped[list[Any]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), default=list
    )
    user_preferences: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), default=dict
    )
    tools_used: Mapped[list[Any]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), default=list
    )
    plans_created: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    expert_questions_asked: Mapped[int] = mapped_column(
        Integer, server_default=text("0"), default=0
    )
    session_rating: Mapped[float | None] = mapped_column(Float)
    complexity_level: Mapped[str] = mapped_column(
        String(16), server_default=text("'medium'"), default="medium"
    )
    resolution_status: Mapped[str] = mapped_column(
        String(16), server_default=text("'completed'"), default="completed"
    )
    search_keywords: Mapped[list[Any]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), default=list
    )
    follow_up_suggested: Mapped[bool] = mapped_column(
        Boolean, server_default=text("false"), default=False
    )
    follow_up_tasks: Mapped[list[Any]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), default=list
    )
    # The model that wrote the summary and the request that produced it.
    model: Mapped[str | None] = mapped_column(String(255))
    llm_request_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("llm_requests.id", ondelete="SET NULL")
    )

    __table_args__ = (
        UniqueConstraint("session_id", name="uq_chat_session_summaries_session_id"),
        CheckConstraint("complexity_level IN ('low', 'medium', 'high')", name="complexity_level"),
        CheckConstraint(
            "resolution_status IN ('completed', 'partial', 'unresolved', 'abandoned')",
            name="resolution_status",
        ),
        CheckConstraint(
            "session_rating IS NULL OR (session_rating >= 0 AND session_rating <= 5)",
            name="session_rating",
        ),
        Index("ix_chat_session_summaries_user_id", "user_id"),
        Index("ix_chat_session_summaries_llm_request_id", "llm_request_id"),
    )
