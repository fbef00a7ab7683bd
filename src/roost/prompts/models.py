"""The prompts domain's tables: AI Workflow Engine's ``system_prompts`` (seed 001, every
column: docs/seed-map.toml) as immutable versions, and ``system_prompt_labels``.

One ``system_prompts`` row is one version of a prompt for one scope: a user's own
(``user_id``), a group's (``group_id``: Roost's tenant) or Roost's factory default
(``is_factory_default``, no owner).  ``scope_id`` (generated) is whichever owns it, the
nil UUID for the factory, so "per scope and key" is one plain unique index.  A trigger
refuses any change of a version's text, variables, key, version number or scope: new text
is a new version.  A label (production, staging, any name) points at one version of its
scope and key; moving it is one upsert.  Row-level security: docs/prompts.md.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, Timestamps, UUIDPrimaryKey
from roost.identity import models as _identity_models  # noqa: F401 - users, groups (foreign keys)

NIL_SCOPE: Final = uuid.UUID(int=0)
SCOPE_SQL: Final = "COALESCE(user_id, group_id, '00000000-0000-0000-0000-000000000000'::uuid)"
ONE_SCOPE: Final = ("(is_factory_default AND user_id IS NULL AND group_id IS NULL) OR "
                    "(NOT is_factory_default AND num_nonnulls(user_id, group_id) = 1)")


class SystemPrompt(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "system_prompts"
    __table_args__ = (
        CheckConstraint(ONE_SCOPE, name="one_scope"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("prompt_key ~ '^[a-z0-9][a-z0-9._-]{0,199}$'", name="key_format"),
        CheckConstraint("success_rate IS NULL OR (success_rate >= 0 AND success_rate <= 1)",
                        name="success_rate_range"),
        Index("uq_system_prompts_scope_key_version", "scope_id", "prompt_key", "version",
              unique=True),
        Index("ix_system_prompts_user_id", "user_id"),
        Index("ix_system_prompts_group_id", "group_id"),
        Index("ix_system_prompts_key_category", "prompt_key", "prompt_category"),
        Index("ix_system_prompts_created", "created_at", "id"),
    )

    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    group_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"))
    scope_id: Mapped[uuid.UUID] = mapped_column(Computed(SCOPE_SQL, persisted=True))
    prompt_key: Mapped[str] = mapped_column(String(200))
    prompt_category: Mapped[str] = mapped_column(String(100), server_default=text("'general'"),
                                                 default="general")
    prompt_name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    prompt_text: Mapped[str] = mapped_column(Text)
    # [{"name", "type", "required", "default", "description"}] (roost.prompts.render)
    variables: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"),
                                                 default=list)
    is_factory_default: Mapped[bool] = mapped_column(Boolean, server_default=text("false"),
                                                     default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"), default=1)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))
    # Usage, fed by chat replies and agent runs through SECURITY DEFINER functions (a
    # user's transaction may not update a factory row): roost_prompt_used/_outcome/_rated.
    # bigint: a busy factory version passes int4's 2,147,483,647 uses (migration 1270).
    usage_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    last_used_at: Mapped[datetime | None]
    average_satisfaction: Mapped[float | None] = mapped_column(Float)
    rating_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    success_rate: Mapped[float | None] = mapped_column(Float)
    outcome_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)


class SystemPromptLabel(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "system_prompt_labels"
    __table_args__ = (
        CheckConstraint("label ~ '^[a-z0-9][a-z0-9._-]{0,63}$'", name="label_format"),
        CheckConstraint("num_nonnulls(user_id, group_id) <= 1", name="one_scope"),
        # Resolution: (scope, key, label) for the user, their groups and the factory.
        Index("uq_system_prompt_labels_scope_key_label", "scope_id", "prompt_key", "label",
              unique=True),
        Index("ix_system_prompt_labels_prompt_id", "prompt_id"),
        Index("ix_system_prompt_labels_user_id", "user_id"),
        Index("ix_system_prompt_labels_group_id", "group_id"),
    )

    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    group_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"))
    scope_id: Mapped[uuid.UUID] = mapped_column(Computed(SCOPE_SQL, persisted=True))
    prompt_key: Mapped[str] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(String(64))
    prompt_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("system_prompts.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"), nullable=False)


class SystemPromptRating(Base):
    """The version a chat session's rating counts in (the ``chat.system`` version of its
    replies when it was rated) and that rating: a changed or cleared rating leaves that
    version's mean, not the version the session's replies use now (migration 1200).  Only
    ``roost_session_rated`` (SECURITY DEFINER) reads and writes it: no grants, no policy."""

    __tablename__ = "system_prompt_ratings"
    __table_args__ = (Index("ix_system_prompt_ratings_prompt_id", "prompt_id"),)

    # By name: chat's tables are above this domain (a session's rating, chat/summaries.py).
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"), primary_key=True)
    prompt_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("system_prompts.id", ondelete="CASCADE"))
    rating: Mapped[float] = mapped_column(Float)
