"""roost_prompt_rated: a cleared rating leaves the version's mean.

A session's rating feeds the ``average_satisfaction`` of the ``chat.system`` version its
replies used (docs/prompts.md).  Clearing the rating (``session_rating: null``) did not
reach the version, so a cleared 5 still counted.  Now ``p_rating`` NULL with
``p_previous`` removes that rating: the mean of the others, ``rating_count`` one less
(NULL and 0 once none is left).  ``CREATE OR REPLACE`` keeps the function's owner and
grants.

Revision ID: 1160
Revises: 1150
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1160"
down_revision: str | Sequence[str] | None = "1150"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RATED = r"""
CREATE OR REPLACE FUNCTION roost_prompt_rated(p_id uuid, p_rating double precision,
                                              p_previous double precision DEFAULT NULL)
RETURNS void
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  -- p_previous: a changed rating replaces the one it counted before; with p_rating NULL
  -- (a cleared rating) it is taken out of the mean.
  UPDATE system_prompts
     SET average_satisfaction = CASE
           WHEN p_rating IS NULL AND rating_count <= 1 THEN NULL
           WHEN p_rating IS NULL
             THEN (average_satisfaction * rating_count - p_previous) / (rating_count - 1)
           WHEN p_previous IS NOT NULL AND rating_count > 0
             THEN (average_satisfaction * rating_count - p_previous + p_rating) / rating_count
           ELSE (COALESCE(average_satisfaction, 0) * rating_count + p_rating)
                / (rating_count + 1) END,
         rating_count = CASE
           WHEN p_rating IS NULL THEN greatest(rating_count - 1, 0)
           WHEN p_previous IS NOT NULL AND rating_count > 0 THEN rating_count
           ELSE rating_count + 1 END
   WHERE id = p_id AND (p_rating IS NOT NULL OR p_previous IS NOT NULL);
$$;
"""

RATED_BEFORE = r"""
CREATE OR REPLACE FUNCTION roost_prompt_rated(p_id uuid, p_rating double precision,
                                              p_previous double precision DEFAULT NULL)
RETURNS void
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  -- p_previous: a changed rating replaces the one it counted before.
  UPDATE system_prompts
     SET average_satisfaction = CASE
           WHEN p_previous IS NOT NULL AND rating_count > 0
             THEN (average_satisfaction * rating_count - p_previous + p_rating) / rating_count
           ELSE (COALESCE(average_satisfaction, 0) * rating_count + p_rating)
                / (rating_count + 1) END,
         rating_count = rating_count
                        + CASE WHEN p_previous IS NOT NULL AND rating_count > 0 THEN 0 ELSE 1 END
   WHERE id = p_id;
$$;
"""


def upgrade() -> None:
    op.execute(RATED)


def downgrade() -> None:
    op.execute(RATED_BEFORE)
