"""Foundation: extensions and the append-only, hash-chained audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The canonical text of a row that its hash covers.  Timestamps are rendered in UTC with
# an explicit format so the hash does not depend on the session's TimeZone or DateStyle.
AUDIT_HASH_FUNCTION = r"""
CREATE FUNCTION roost_audit_hash(prev bytea, r audit_logs) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
  SELECT sha256(prev || convert_to(jsonb_build_array(
    r.seq, r.id::text, r.user_id::text, r.persona_id::text, r.run_id::text,
    r.action, r.event_category, r.resource_type, r.resource_id, r.changes, r.metadata,
    r.description, r.ip_address, r.user_agent, r.correlation_id, r.trace_id,
    r.success, r.error_message,
    to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
  )::text, 'UTF8'))
$$;
"""

# Chaining takes a transaction-scoped advisory lock, so audited transactions serialise
# from their first audit insert to commit: seq order is commit order and each row sees
# its predecessor.  Requires READ COMMITTED (the default) for the SELECT to see it.
AUDIT_CHAIN_TRIGGER = (r"""
CREATE FUNCTION roost_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  last_hash bytea;
BEGIN
  PERFORM pg_advisory_xact_lock(7263117, 1);
  SELECT row_hash INTO last_hash FROM audit_logs ORDER BY seq DESC LIMIT 1;
  NEW.seq := nextval('audit_logs_seq_seq');
  NEW.prev_hash := coalesce(last_hash, decode(repeat('00', 32), 'hex'));
  NEW.row_hash := roost_audit_hash(NEW.prev_hash, NEW);
  RETURN NEW;
END $$;
""", r"""
CREATE TRIGGER audit_logs_chain BEFORE INSERT ON audit_logs
  FOR EACH ROW EXECUTE FUNCTION roost_audit_chain();
""")

# UPDATE is never allowed.  DELETE is allowed only for the retention path, which sets
# roost.audit_retention_cutoff in its own transaction and deletes an oldest prefix.
AUDIT_GUARD_TRIGGER = (r"""
CREATE FUNCTION roost_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  cutoff text := current_setting('roost.audit_retention_cutoff', true);
BEGIN
  IF TG_OP = 'DELETE' AND coalesce(cutoff, '') <> ''
     AND OLD.created_at < cutoff::timestamptz THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
""", r"""
CREATE TRIGGER audit_logs_guard BEFORE UPDATE OR DELETE ON audit_logs
  FOR EACH ROW EXECUTE FUNCTION roost_audit_guard();
""", r"""
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
  FOR EACH STATEMENT EXECUTE FUNCTION roost_audit_guard();
""")


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute("CREATE SEQUENCE audit_logs_seq_seq AS bigint")
    op.create_table(
        "audit_logs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("persona_id", sa.Uuid(), nullable=True),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=128), nullable=False),
        sa.Column("event_category", sa.String(length=50), server_default=sa.text("'action'"),
                  nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=True),
        sa.Column("resource_id", sa.String(length=128), nullable=True),
        sa.Column("changes", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("correlation_id", sa.String(length=64), nullable=True),
        sa.Column("trace_id", sa.String(length=255), nullable=True),
        sa.Column("success", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("row_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("event_category IN ('action', 'access', 'error', 'system')",
                           name=op.f("ck_audit_logs_event_category")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_logs")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_logs_seq")),
    )
    op.execute("ALTER SEQUENCE audit_logs_seq_seq OWNED BY audit_logs.seq")
    op.create_index("ix_audit_logs_user_created", "audit_logs", ["user_id", "created_at"])
    op.create_index("ix_audit_logs_action_created", "audit_logs", ["action", "created_at"])
    op.create_index("ix_audit_logs_resource", "audit_logs", ["resource_type", "resource_id"])
    op.create_index("ix_audit_logs_persona_created", "audit_logs", ["persona_id", "created_at"])
    op.create_index("ix_audit_logs_run_id", "audit_logs", ["run_id"])
    op.create_index("ix_audit_logs_correlation_id", "audit_logs", ["correlation_id"])
    op.create_index("ix_audit_logs_trace_id", "audit_logs", ["trace_id"])
    op.create_index("ix_audit_logs_created_at", "audit_logs", ["created_at"])
    op.execute(AUDIT_HASH_FUNCTION)
    for statement in (*AUDIT_CHAIN_TRIGGER, *AUDIT_GUARD_TRIGGER):
        op.execute(statement)


def downgrade() -> None:
    # The hash function takes the table's row type, so it goes before the table.
    op.execute("DROP FUNCTION roost_audit_hash(bytea, audit_logs)")
    op.execute("DROP TABLE audit_logs")  # drops its triggers and owned sequence
    op.execute("DROP FUNCTION roost_audit_guard()")
    op.execute("DROP FUNCTION roost_audit_chain()")
    # The vector extension stays: other databases' objects may use it and dropping it
    # needs more privileges than a migration should assume.
