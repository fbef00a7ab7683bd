"""The audit chain off the request path: rows are inserted unchained, a chainer links them.

Before, the insert trigger took a transaction-scoped advisory lock and hashed the row, so
every audited transaction serialised from its audit insert to commit.  Now the insert
trigger only numbers the row (``seq``) and leaves ``chain_seq``, ``prev_hash`` and
``row_hash`` empty; ``roost_audit_link()`` (run by the chainer of roost.audit.chainer, by
retention and by ``verify``) takes the chain lock, reads the newest linked row and links
every committed unlinked row after it, in ``seq`` order.  The chain's order is
``chain_seq``: the order the chainer saw the rows committed.  Existing rows keep their
hashes (``chain_seq = seq``): the hash function is unchanged.

The guard trigger still refuses every UPDATE except the chainer's own: filling the chain
columns of an unlinked row, with ``roost.audit_chaining`` set, content unchanged.

Revision ID: 0930
Revises: 0920
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0930"
down_revision: str | Sequence[str] | None = "0920"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INSERT_TRIGGER = r"""
CREATE OR REPLACE FUNCTION roost_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- No lock, no hash: the chainer links the row after commit.  The chain columns are the
  -- database's business, whatever the inserting client sent.
  NEW.seq := nextval('audit_logs_seq_seq');
  NEW.chain_seq := NULL;
  NEW.prev_hash := NULL;
  NEW.row_hash := NULL;
  RETURN NEW;
END $$;
"""

# max_rows bounds one transaction's work; wait = false returns -1 at once when another
# session holds the chain lock (the periodic chainers of several processes).
_LINK_FUNCTION = r"""
CREATE FUNCTION roost_audit_link(max_rows integer, wait boolean) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  last_seq bigint;
  last_hash bytea;
  ids uuid[] := '{}';
  positions bigint[] := '{}';
  prevs bytea[] := '{}';
  hashes bytea[] := '{}';
  r audit_logs;
BEGIN
  IF wait THEN
    PERFORM pg_advisory_xact_lock(7263117, 1);
  ELSIF NOT pg_try_advisory_xact_lock(7263117, 1) THEN
    RETURN -1;
  END IF;
  SELECT a.chain_seq, a.row_hash INTO last_seq, last_hash
    FROM audit_logs a WHERE a.chain_seq IS NOT NULL ORDER BY a.chain_seq DESC LIMIT 1;
  last_seq := coalesce(last_seq, 0);
  last_hash := coalesce(last_hash, decode(repeat('00', 32), 'hex'));
  -- Each hash needs the one before: computed in order here, written by one UPDATE.
  FOR r IN SELECT * FROM audit_logs a WHERE a.chain_seq IS NULL ORDER BY a.seq LIMIT max_rows
  LOOP
    last_seq := last_seq + 1;
    ids := ids || r.id;
    positions := positions || last_seq;
    prevs := prevs || last_hash;
    last_hash := roost_audit_hash(last_hash, r);
    hashes := hashes || last_hash;
  END LOOP;
  IF cardinality(ids) = 0 THEN
    RETURN 0;
  END IF;
  PERFORM set_config('roost.audit_chaining', 'on', true);
  UPDATE audit_logs a SET chain_seq = l.position, prev_hash = l.prev, row_hash = l.hash
    FROM unnest(ids, positions, prevs, hashes) AS l(id, position, prev, hash)
   WHERE a.id = l.id;
  PERFORM set_config('roost.audit_chaining', '', true);
  RETURN cardinality(ids);
END $$;
"""

# The guard of 0001 (retention's DELETE only), with or without the chainer's UPDATE.
_GUARD_TEMPLATE = r"""
CREATE OR REPLACE FUNCTION roost_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  cutoff text := current_setting('roost.audit_retention_cutoff', true);
BEGIN
  IF TG_OP = 'DELETE' AND coalesce(cutoff, '') <> ''
     AND OLD.created_at < cutoff::timestamptz THEN
    RETURN OLD;
  END IF;{chainer}
  RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
"""
# Every column the hash covers (roost_audit_hash), compared old against new.
_CONTENT = ("id", "seq", "user_id", "persona_id", "run_id", "action", "event_category",
            "resource_type", "resource_id", "changes", "metadata", "description",
            "ip_address", "user_agent", "correlation_id", "trace_id", "success",
            "error_message", "created_at")
_CHAINER_UPDATE = """
  -- The chainer linking a row: only the empty chain columns change, nothing the hash
  -- covers (compared column by column: cheaper than hashing both versions).
  IF TG_OP = 'UPDATE' AND coalesce(current_setting('roost.audit_chaining', true), '') = 'on'
     AND OLD.chain_seq IS NULL AND NEW.chain_seq IS NOT NULL
     AND ({new}) IS NOT DISTINCT FROM ({old}) THEN
    RETURN NEW;
  END IF;""".format(new=", ".join(f"NEW.{c}" for c in _CONTENT),
                     old=", ".join(f"OLD.{c}" for c in _CONTENT))
_GUARD_TRIGGER = _GUARD_TEMPLATE.format(chainer=_CHAINER_UPDATE)
_OLD_GUARD_TRIGGER = _GUARD_TEMPLATE.format(chainer="")

_OLD_INSERT_TRIGGER = r"""
CREATE OR REPLACE FUNCTION roost_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
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
"""



def upgrade() -> None:
    op.add_column("audit_logs", sa.Column("chain_seq", sa.BigInteger(), nullable=True))
    op.alter_column("audit_logs", "prev_hash", nullable=True)
    op.alter_column("audit_logs", "row_hash", nullable=True)
    # The rows chained so far keep their links: their chain order was their seq order.
    op.execute("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_guard")
    op.execute("UPDATE audit_logs SET chain_seq = seq")
    op.execute("ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_guard")
    op.create_unique_constraint(op.f("uq_audit_logs_chain_seq"), "audit_logs", ["chain_seq"])
    op.create_index("ix_audit_logs_unlinked", "audit_logs", ["seq"],
                    postgresql_where=sa.text("chain_seq IS NULL"))
    op.execute(_INSERT_TRIGGER)
    op.execute(_GUARD_TRIGGER)
    op.execute(_LINK_FUNCTION)
    op.execute("REVOKE ALL ON FUNCTION roost_audit_link(integer, boolean) FROM PUBLIC")
    op.execute("""
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'roost_app') THEN
    GRANT EXECUTE ON FUNCTION roost_audit_link(integer, boolean) TO roost_app;
  END IF;
END $$;
""")


def downgrade() -> None:
    # Link what is pending, then go back to linking at insert time.
    op.execute("SELECT roost_audit_link(2147483647, true)")
    op.execute(_OLD_INSERT_TRIGGER)
    op.execute(_OLD_GUARD_TRIGGER)
    op.execute("DROP FUNCTION roost_audit_link(integer, boolean)")
    op.drop_index("ix_audit_logs_unlinked", table_name="audit_logs")
    op.drop_constraint(op.f("uq_audit_logs_chain_seq"), "audit_logs", type_="unique")
    op.alter_column("audit_logs", "row_hash", nullable=False)
    op.alter_column("audit_logs", "prev_hash", nullable=False)
    op.drop_column("audit_logs", "chain_seq")
