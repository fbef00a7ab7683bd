"""``audit_logs``: one table for every audit record (three seed tables merge into it,
see ``docs/seed-map.toml``).

``user_id``, ``persona_id`` and ``run_id`` carry no foreign keys on purpose: an audit
record must outlive what it describes, and an ``ON DELETE SET NULL`` would be an UPDATE
of an append-only, hash-chained row.  The insert trigger numbers a row (``seq``, the
order of insertion); ``chain_seq``, ``prev_hash`` and ``row_hash`` stay empty until the
chainer links it after commit (migration 0930, roost.audit.chainer), so the chain's order
is the order the chainer saw the records committed, whatever process wrote them.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    FetchedValue,
    Index,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, UUIDPrimaryKey

EVENT_CATEGORIES = ("action", "access", "error", "system")


class AuditLog(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "audit_logs"

    seq: Mapped[int] = mapped_column(BigInteger, server_default=FetchedValue(), unique=True)
    user_id: Mapped[uuid.UUID | None]
    persona_id: Mapped[uuid.UUID | None]
    run_id: Mapped[uuid.UUID | None]
    action: Mapped[str] = mapped_column(String(128))
    event_category: Mapped[str] = mapped_column(String(50), server_default=text("'action'"))
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(128))
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # "metadata" is reserved on declarative classes; the column keeps the seeds' name.
    event_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    description: Mapped[str | None] = mapped_column(Text)
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    trace_id: Mapped[str | None] = mapped_column(String(255))
    success: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    error_message: Mapped[str | None] = mapped_column(Text)
    # Set by the chainer, not by an insert (NULL until the row is linked).
    chain_seq: Mapped[int | None] = mapped_column(BigInteger, server_default=FetchedValue(),
                                                  unique=True)
    prev_hash: Mapped[bytes | None] = mapped_column(LargeBinary, server_default=FetchedValue())
    row_hash: Mapped[bytes | None] = mapped_column(LargeBinary, server_default=FetchedValue())

    # No RETURNING on insert: the caller may act for a user whose row-level security
    # policy would not admit the new row back (a system event inside a user's
    # transaction); the chain columns are the trigger's business, not the caller's.
    __mapper_args__ = {"eager_defaults": False}

    __table_args__ = (
        CheckConstraint(
            "event_category IN ('action', 'access', 'error', 'system')", name="event_category"
        ),
        # Lookups on optional columns are partial (migration 0980): most records leave
        # them empty, and a NULL entry per index per record is write cost for nothing.
        Index("ix_audit_logs_user_created", "user_id", "created_at"),
        Index("ix_audit_logs_action_created", "action", "created_at"),
        Index("ix_audit_logs_resource", "resource_type", "resource_id"),
        Index("ix_audit_logs_persona_created", "persona_id", "created_at",
              postgresql_where=text("persona_id IS NOT NULL")),
        Index("ix_audit_logs_run_id", "run_id",
              postgresql_where=text("run_id IS NOT NULL")),
        Index("ix_audit_logs_correlation_id", "correlation_id",
              postgresql_where=text("correlation_id IS NOT NULL")),
        Index("ix_audit_logs_trace_id", "trace_id",
              postgresql_where=text("trace_id IS NOT NULL")),
        Index("ix_audit_logs_created_at", "created_at"),
        Index("ix_audit_logs_unlinked", "seq", postgresql_where=text("chain_seq IS NULL")),
    )

