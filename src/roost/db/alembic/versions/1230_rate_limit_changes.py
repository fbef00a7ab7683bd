"""A changed requests-per-minute limit applies on the subject's next request.

``rate_limit_state`` kept only GCRA's theoretical arrival time (TAT), which holds the
spacing of the limit it was charged under: a user limited to 1 a minute who had made one
request was still refused for a minute after an administrator raised the limit to 5.
The row now keeps that limit too (``per_period``), and ``roost_rate_take`` rescales a TAT
charged under another limit before checking: the requests already counted keep their
number, spaced at the new limit's pace, never more than one period ahead (a lowered
limit refuses for at most one period).  A refused request stores the rescaled TAT too,
so its ``Retry-After`` holds.  Rows from before (``per_period`` NULL) are not rescaled.

Revision ID: 1230
Revises: 1220
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1230"
down_revision: str | Sequence[str] | None = "1220"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNATURE = "roost_rate_take(text[], int[], double precision)"

# As in 0940 (subjects locked in sorted order, charged all or none), plus the rescaling.
_RATE_TAKE = r"""
CREATE OR REPLACE FUNCTION roost_rate_take(p_subjects text[], p_limits int[],
                                           p_period_s double precision)
RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := clock_timestamp();
  n int := coalesce(array_length(p_subjects, 1), 0);
  i int;
  cur timestamptz;
  charged int;
  emission double precision;
  late double precision;
  wait_s double precision := 0;
  now_tats timestamptz[] := '{}';
  new_tats timestamptz[] := '{}';
BEGIN
  IF n = 0 THEN
    RETURN 0;
  END IF;
  INSERT INTO rate_limit_state (subject, tat, per_period)
    SELECT s, t, l FROM unnest(p_subjects, p_limits) AS v(s, l) ORDER BY s
    ON CONFLICT (subject) DO NOTHING;
  PERFORM 1 FROM rate_limit_state
    WHERE subject = ANY (p_subjects) ORDER BY subject FOR UPDATE;
  FOR i IN 1..n LOOP
    SELECT greatest(r.tat, t), r.per_period INTO cur, charged
      FROM rate_limit_state r WHERE r.subject = p_subjects[i];
    IF charged IS NOT NULL AND charged <> p_limits[i] THEN
      -- Charged under another limit: the same number of requests at the new pace,
      -- at most one period ahead.
      cur := t + least((cur - t) * (charged::double precision / p_limits[i]),
                       make_interval(secs => p_period_s));
    END IF;
    emission := p_period_s / p_limits[i];
    -- GCRA: allowed while the new arrival time stays within one period of now.
    late := extract(epoch FROM cur - t) + emission - p_period_s;
    IF late > 0.001 AND late > wait_s THEN
      wait_s := late;
    END IF;
    now_tats := now_tats || cur;
    new_tats := new_tats || (cur + make_interval(secs => emission));
  END LOOP;
  IF wait_s > 0 THEN
    new_tats := now_tats;  -- nothing charged; the rescaled times kept
  END IF;
  UPDATE rate_limit_state r SET tat = v.tat, per_period = v.l
    FROM unnest(p_subjects, new_tats, p_limits) AS v(subject, tat, l)
    WHERE r.subject = v.subject;
  RETURN wait_s;
END $$;
"""

_RATE_TAKE_0940 = r"""
CREATE OR REPLACE FUNCTION roost_rate_take(p_subjects text[], p_limits int[],
                                           p_period_s double precision)
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


def upgrade() -> None:
    op.add_column("rate_limit_state", sa.Column("per_period", sa.Integer(), nullable=True))
    op.execute(_RATE_TAKE)
    op.execute(f"REVOKE ALL ON FUNCTION {_SIGNATURE} FROM PUBLIC")


def downgrade() -> None:
    op.execute(_RATE_TAKE_0940)
    op.drop_column("rate_limit_state", "per_period")
