"""A task's due-date bands in hours, not calendar days.

``roost_task_score`` compared ``p_due <= p_now + interval '1 day'`` (and 3, 7, 30 days):
PostgreSQL adds days to a timestamptz as calendar days of the session's time zone, so
on the eve of a daylight-saving change "within a day" was 23 or 25 hours, and a task's
score depended on the connection's TimeZone setting (an embedded server on a host in
Europe/Paris took Paris's).  The bands are 24, 72, 168 and 720 hours now, whatever the
zone; scores are brought up to date by the hourly ``workspace.rescore`` job.

Revision ID: 1360
Revises: 1350
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1360"
down_revision: str | Sequence[str] | None = "1350"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The function of migration 0880 with its four bands as parameters (the SQL's own
# braces doubled for str.format).
SCORE = r"""
CREATE OR REPLACE FUNCTION roost_task_score(
  p_status text, p_priority text, p_due timestamptz, p_completion integer,
  p_importance double precision, p_urgency double precision, p_complexity double precision,
  p_user double precision, p_now timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN p_status IN ('done', 'cancelled') THEN 0 ELSE round((
    p_user
    * (p_importance * CASE p_priority WHEN 'low' THEN 1 WHEN 'medium' THEN 2
                                      WHEN 'high' THEN 3 WHEN 'critical' THEN 4 ELSE 2 END
       + p_urgency * (1 + CASE
           WHEN p_due IS NULL THEN 0
           WHEN p_due <= p_now THEN 4
           WHEN p_due <= p_now + interval '{day}' THEN 3
           WHEN p_due <= p_now + interval '{days3}' THEN 2
           WHEN p_due <= p_now + interval '{days7}' THEN 1
           WHEN p_due <= p_now + interval '{days30}' THEN 0.5
           ELSE 0 END))
    * (1 - least(greatest(p_completion, 0), 100) / 200.0)
    * CASE WHEN p_status = 'blocked' THEN 0.5 ELSE 1 END
    / ((1 + p_complexity) / 2)
  )::numeric, 4)::double precision END
$$;
"""
SCORE_IN_HOURS = SCORE.format(day="24 hours", days3="72 hours", days7="168 hours",
                              days30="720 hours")
SCORE_IN_DAYS = SCORE.format(day="1 day", days3="3 days", days7="7 days", days30="30 days")


def upgrade() -> None:
    op.execute(SCORE_IN_HOURS)


def downgrade() -> None:
    op.execute(SCORE_IN_DAYS)
