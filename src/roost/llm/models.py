"""LLM traffic tables: ``llm_providers``, ``llm_requests``, ``llm_responses``
(``usage_records``, the ledger, is roost.billing's).

Conversation text is private wherever it lands: ``llm_requests.prompt`` and
``.messages`` and ``llm_responses.content`` are Fernet ciphertext like
``chat_messages.content`` (the same keys, rotated by ``roost keys rotate-messages``), and
``llm_responses.raw_response`` keeps the provider's answer with its text fields removed.
A provider's API key is AES-256-GCM ciphertext bound to its row (``api_key_encrypted``)
and never leaves the service.

``llm_requests.session_id`` points at ``chat_sessions``.  Request status moves
``pending -> running -> completed`` or ``failed``; each provider attempt (fallback losers,
ensemble members, failures) is one ``llm_responses`` row with its outcome, and
``selected`` marks the answer that was used.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, Timestamps, UUIDPrimaryKey

PROVIDER_KINDS = ("openai", "anthropic", "local")
HEALTH_STATUSES = ("healthy", "degraded", "unhealthy", "unknown")
REQUEST_STATUSES = ("pending", "running", "completed", "failed")
REQUEST_TYPES = ("chat", "chat_stream", "ensemble", "embedding", "summary")
OUTCOMES = ("success", "error", "timeout", "cancelled")


class LLMProviderRow(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "llm_providers"

    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32))
    # SecretBox ciphertext, associated data b"llm_providers:<id>:api_key".
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    base_url: Mapped[str | None] = mapped_column(String(500))
    model: Mapped[str | None] = mapped_column(String(255))
    weight: Mapped[Decimal] = mapped_column(
        Numeric(5, 2), server_default=text("1.0"), default=Decimal("1.0")
    )
    # Fallback order: lower first (ties by name).
    priority: Mapped[int] = mapped_column(Integer, server_default=text("100"), default=100)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    config: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), default=dict
    )
    health_status: Mapped[str] = mapped_column(
        String(16), server_default=text("'unknown'"), default="unknown"
    )
    health_error: Mapped[str | None] = mapped_column(Text)
    last_health_check_at: Mapped[datetime | None]
    response_time: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    modelsdev_provider_id: Mapped[str | None] = mapped_column(String(255))
    # model id -> enabled, from the last models sync (plus the default model).
    models: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), default=dict
    )
    total_models: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    enabled_models: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    last_models_sync: Mapped[datetime | None]

    __table_args__ = (
        # Names are unique whatever their case ("P1" after "p1" is a 409), also for two
        # creates or renames at once.
        Index("uq_llm_providers_lower_name", text("lower(name)"), unique=True),
        CheckConstraint("type IN ('openai', 'anthropic', 'local')", name="type"),
        CheckConstraint(
            "health_status IN ('healthy', 'degraded', 'unhealthy', 'unknown')", name="health_status"
        ),
        CheckConstraint("weight >= 0", name="weight"),
        Index("ix_llm_providers_enabled_priority", "enabled", "priority"),
    )


class LLMRequest(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "llm_requests"

    session_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE")
    )
    # NULL for the bootstrap operator (no user); RLS then shows the row to admins only.
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    request_type: Mapped[str] = mapped_column(
        String(50), server_default=text("'chat'"), default="chat"
    )
    model: Mapped[str | None] = mapped_column(String(255))
    # Fernet tokens: the last user message, and the JSON message array sent.
    prompt: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    messages: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    model_params: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), default=dict
    )
    ensemble_config: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    memory_enhanced: Mapped[bool] = mapped_column(
        Boolean, server_default=text("false"), default=False
    )
    memory: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), default=dict
    )
    status: Mapped[str] = mapped_column(
        String(16), server_default=text("'pending'"), default="pending"
    )
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed')", name="status"
        ),
        Index("ix_llm_requests_user_id_created_at", "user_id", "created_at"),
        Index("ix_llm_requests_session_id", "session_id"),
        Index("ix_llm_requests_status", "status"),
    )


class LLMResponse(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "llm_responses"

    request_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("llm_requests.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    provider_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("llm_providers.id", ondelete="SET NULL")
    )
    provider_name: Mapped[str] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255))
    # Fernet token of the answer text ("" for a failed attempt).
    content: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    raw_response: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), default=dict
    )
    tokens_prompt: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    tokens_completion: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    tokens_total: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    confidence: Mapped[Decimal] = mapped_column(
        Numeric(5, 4), server_default=text("0.0"), default=Decimal("0")
    )
    response_time: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    finish_reason: Mapped[str | None] = mapped_column(String(50))
    selected: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    outcome: Mapped[str] = mapped_column(String(16))
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(
            "outcome IN ('success', 'error', 'timeout', 'cancelled')", name="outcome"
        ),
        Index("ix_llm_responses_request_id", "request_id"),
        Index("ix_llm_responses_provider_id", "provider_id"),
        Index("ix_llm_responses_user_id", "user_id"),
        Index(
            "ix_llm_responses_selected", "selected", postgresql_where=text("selected")
        ),
    )
