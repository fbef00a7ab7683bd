"""Rate limits and quotas: per-user and per-API-key overrides, shared counters, stream leases.

- ``users`` and ``api_keys`` get ``rate_limit_rpm`` and ``rate_limit_streams``: an
  administrator's override (0 = unlimited; NULL = the settings' default for a user, no
  limit of its own for a key, whose user's limits still apply).  Columns, not a
  table of their own, so authentication's one statement reads them for free.
- ``rate_limit_state`` (UNLOGGED): one row per limited subject (``u:<user id>``,
  ``k:<key id>``) holding GCRA's theoretical arrival time.  ``roost_rate_take`` checks and
  charges every subject of a request at once, or none.
- ``stream_leases`` (UNLOGGED): one row per open stream and subject, with an expiry the
  holder renews; ``roost_stream_acquire`` counts the live ones and takes a slot in every
  subject, or none.  A crashed process's leases simply expire.

UNLOGGED: the counters are not worth a WAL write per request; after a crash they start
empty (everyone gets a fresh minute), and replicas do not need them.  ``roost_app`` has
no privilege on either table: only the connecting role (the limiter's own connections)
touches them.

Revision ID: 0940
Revises: 0930
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0940"
down_revision: str | Sequence[str] | None = "0930"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Subjects are locked in a fixed order (sorted), so two requests of the same user with
# different keys never deadlock.  A request is charged in every subject or in none.
_RATE_TAKE = r"""
CREATE FUNCTION roost_rate_take(p_subjects text[], p_limits int[], p_period_s double precision)
RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := clock_timestamp();
  n int := coalesce(array_length(p_subjects, 1), 0);
  i int;
  cur timestamptz;
  emission double precision;
  late double precision;
  wait_s double precision := 0;
  new_tats timestamptz[] := '{}';
BEGIN
  IF n = 0 THEN
    RETURN 0;
  END IF;
  INSERT INTO rate_limit_state (subject, tat)
    SELECT s, t FROM unnest(p_subjects) AS s ORDER BY s
    ON CONFLICT (subject) DO NOTHING;
  PERFORM 1 FROM rate_limit_state
    WHERE subject = ANY (p_subjects) ORDER BY subject FOR UPDATE;
  FOR i IN 1..n LOOP
    SELECT greatest(r.tat, t) INTO cur FROM rate_limit_state r WHERE r.subject = p_subjects[i];
    emission := p_period_s / p_limits[i];
    -- GCRA: allowed while the new arrival time stays within one period of now.
    late := extract(epoch FROM cur - t) + emission - p_period_s;
    IF late > 0.001 AND late > wait_s THEN
      wait_s := late;
    END IF;
    new_tats := new_tats || (cur + make_interval(secs => emission));
  END LOOP;
  IF wait_s > 0 THEN
    RETURN wait_s;
  END IF;
  UPDATE rate_limit_state r SET tat = v.tat
    FROM unnest(p_subjects, new_tats) AS v(subject, tat) WHERE r.subject = v.subject;
  RETURN 0;
END $$;
"""

_STREAM_ACQUIRE = r"""
CREATE FUNCTION roost_stream_acquire(p_lease uuid, p_subjects text[], p_limits int[],
                                     p_ttl_s double precision)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  s text;
  i int;
  live int;
BEGIN
  FOREACH s IN ARRAY (SELECT array_agg(x ORDER BY x) FROM unnest(p_subjects) AS x) LOOP
    PERFORM pg_advisory_xact_lock(7263117, hashtext('roost.stream:' || s));
  END LOOP;
  DELETE FROM stream_leases WHERE subject = ANY (p_subjects) AND expires_at <= clock_timestamp();
  FOR i IN 1..coalesce(array_length(p_subjects, 1), 0) LOOP
    SELECT count(*) INTO live FROM stream_leases WHERE subject = p_subjects[i];
    IF live >= p_limits[i] THEN
      RETURN false;
    END IF;
  END LOOP;
  INSERT INTO stream_leases (id, subject, expires_at)
    SELECT p_lease, x, clock_timestamp() + make_interval(secs => p_ttl_s)
    FROM unnest(p_subjects) AS x;
  RETURN true;
END $$;
"""


def upgrade() -> None:
    for table in ("users", "api_keys"):
        op.add_column(table, sa.Column("rate_limit_rpm", sa.Integer(), nullable=True))
        op.add_column(table, sa.Column("rate_limit_streams", sa.Integer(), nullable=True))
        op.create_check_constraint(
            op.f(f"ck_{table}_rate_limits"), table,
            "(rate_limit_rpm IS NULL OR rate_limit_rpm >= 0) "
            "AND (rate_limit_streams IS NULL OR rate_limit_streams >= 0)",
        )
    op.create_table(
        "rate_limit_state",
        sa.Column("subject", sa.String(length=80), nullable=False),
        sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_rate_limit_state")),
        prefixes=["UNLOGGED"],
    )
    op.create_table(
        "stream_leases",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", "subject", name=op.f("pk_stream_leases")),
        prefixes=["UNLOGGED"],
    )
    op.create_index("ix_stream_leases_subject", "stream_leases", ["subject", "expires_at"])
    op.execute("REVOKE ALL ON rate_limit_state, stream_leases FROM roost_app")
    op.execute(_RATE_TAKE)
    op.execute(_STREAM_ACQUIRE)
    for function in ("roost_rate_take(text[], int[], double precision)",
                     "roost_stream_acquire(uuid, text[], int[], double precision)"):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION roost_stream_acquire(uuid, text[], int[], double precision)")
    op.execute("DROP FUNCTION roost_rate_take(text[], int[], double precision)")
    op.drop_table("stream_leases")
    op.drop_table("rate_limit_state")
    for table in ("api_keys", "users"):
        op.drop_constraint(op.f(f"ck_{table}_rate_limits"), table, type_="check")
        op.drop_column(table, "rate_limit_streams")
        op.drop_column(table, "rate_limit_rpm")
