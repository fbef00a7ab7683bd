"""Audit inserts are checked: a sane date, and retention anchors only from retention's writer.

A new ``BEFORE INSERT`` trigger (``roost_audit_check``, run as the inserting role):

- refuses ``created_at`` before year 1 or more than an hour ahead of the clock.  A record
  dated in 1 BC or year 10000 made every admin listing page holding it fail (no Python
  datetime holds it), and one dated ``infinity`` stayed "young" forever, so retention
  never pruned it or anything after it.  Backdating (tests, seeding) stays possible.
- refuses an ``audit.retention`` record from a role that may not ``DELETE`` from
  ``audit_logs`` (``roost_app`` may not, since 0210).  ``verify`` accepts such a record's
  ``anchor_hash`` as the start of the chain: any role inserting audit records could
  otherwise make a deleted start of the chain look pruned.

The guard lets retention delete a record dated more than an hour ahead too (stored before
this check; ``apply_retention`` counts it as old), so such a record no longer blocks the
oldest prefix.

Revision ID: 1280
Revises: 1270
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1280"
down_revision: str | Sequence[str] | None = "1270"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SECURITY INVOKER on purpose: current_user is the inserting role (or the owner inside a
# SECURITY DEFINER function), which has_table_privilege asks about.
_CHECK_FUNCTION = r"""
CREATE FUNCTION roost_audit_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.created_at < '0001-01-01 00:00:00+00'::timestamptz
     OR NEW.created_at > clock_timestamp() + interval '1 hour' THEN
    RAISE EXCEPTION 'audit record created_at % is out of range (year 1 to an hour from now)',
      NEW.created_at USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.action = 'audit.retention' AND NOT has_table_privilege(TG_RELID, 'DELETE') THEN
    RAISE EXCEPTION 'only audit retention may record audit.retention'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
"""
_CHECK_TRIGGER = (
    "CREATE TRIGGER audit_logs_check BEFORE INSERT ON audit_logs "
    "FOR EACH ROW EXECUTE FUNCTION roost_audit_check()"
)

# The guard of 0930 (retention's DELETE, the chainer's UPDATE), with or without the
# future-dated records retention may delete ({future}).
_GUARD_TEMPLATE = r"""
CREATE OR REPLACE FUNCTION roost_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  cutoff text := current_setting('roost.audit_retention_cutoff', true);
BEGIN
  IF TG_OP = 'DELETE' AND coalesce(cutoff, '') <> ''
     AND (OLD.created_at < cutoff::timestamptz{future}) THEN
    RETURN OLD;
  END IF;
  -- The chainer linking a row: only the empty chain columns change, nothing the hash
  -- covers (compared column by column: cheaper than hashing both versions).
  IF TG_OP = 'UPDATE' AND coalesce(current_setting('roost.audit_chaining', true), '') = 'on'
     AND OLD.chain_seq IS NULL AND NEW.chain_seq IS NOT NULL
     AND ({new}) IS NOT DISTINCT FROM ({old}) THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
"""
# Every column the hash covers (roost_audit_hash), compared old against new.
_CONTENT = ("id", "seq", "user_id", "persona_id", "run_id", "action", "event_category",
            "resource_type", "resource_id", "changes", "metadata", "description",
            "ip_address", "user_agent", "correlation_id", "trace_id", "success",
            "error_message", "created_at")


def _guard(future: str) -> str:
    return _GUARD_TEMPLATE.format(future=future,
                                  new=", ".join(f"NEW.{c}" for c in _CONTENT),
                                  old=", ".join(f"OLD.{c}" for c in _CONTENT))


def upgrade() -> None:
    op.execute(_CHECK_FUNCTION)
    op.execute(_CHECK_TRIGGER)
    # now(), not clock_timestamp(): the same instant apply_retention's boundary uses.
    op.execute(_guard("\n          OR OLD.created_at > now() + interval '1 hour'"))


def downgrade() -> None:
    op.execute(_guard(""))
    op.execute("DROP TRIGGER audit_logs_check ON audit_logs")
    op.execute("DROP FUNCTION roost_audit_check()")
