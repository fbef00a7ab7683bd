"""Tables of the codeversions domain: ``code_versions`` (HelixAgent's table).

Each row is one commit in the git repository of a chat session or of a run
(``roost.codeversions.repos``): ``version_hash`` is the commit's id, ``files_changed`` and
``diff_summary`` come from the real diff against its parent.  Exactly one of
``chat_session_id`` and ``run_id`` names the repository; ``user_id`` is the owner of that
session or run (row-level security, migration 0820: owner-only, administrators see all).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from roost.agents import models as _agents_models  # noqa: F401 - "runs", for the foreign key
from roost.chat import models as _chat_models  # noqa: F401 - "chat_sessions", for the foreign key
from roost.db.base import Base, CreatedAt, UUIDPrimaryKey
from roost.identity import models as _identity_models  # noqa: F401 - "users", for the foreign key

VALIDATION_STATUSES: Final = ("pending", "running", "passed", "failed", "error", "timeout")


class CodeVersion(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "code_versions"
    __table_args__ = (
        CheckConstraint("num_nonnulls(chat_session_id, run_id) = 1", name="one_repository"),
        CheckConstraint(
            "validation_status IN (" + ", ".join(repr(s) for s in VALIDATION_STATUSES) + ")",
            name="validation_status"),
        Index("ix_code_versions_user_id", "user_id"),
        Index("ix_code_versions_chat_session_created", "chat_session_id", text("created_at DESC"),
              postgresql_where=text("chat_session_id IS NOT NULL")),
        Index("ix_code_versions_run_created", "run_id", text("created_at DESC"),
              postgresql_where=text("run_id IS NOT NULL")),
        Index("ix_code_versions_version_hash", "version_hash"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    chat_session_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"))
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    # Who committed (the author of the commit); NULL for the operator token.
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    version_hash: Mapped[str] = mapped_column(String(64))
    parent_hash: Mapped[str | None] = mapped_column(String(64))
    branch: Mapped[str] = mapped_column(String(255))
    commit_message: Mapped[str | None] = mapped_column(Text)
    # [{path, change: added|modified|deleted, additions, deletions}]
    files_changed: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"),
                                                     default=list)
    diff_summary: Mapped[str | None] = mapped_column(Text)
    validation_status: Mapped[str] = mapped_column(String(50), server_default=text("'pending'"),
                                                   default="pending")
    # {check: {argv, outcome, exit_code, duration_ms, output_tail, truncated}}
    test_results: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"),
                                                         default=dict)
    validation_task_id: Mapped[uuid.UUID | None]  # the queue job of the latest validation
    validated_at: Mapped[datetime | None]
