"""A chat session's rating is taken out of the version that counted it.

A session's rating feeds the ``average_satisfaction`` of the ``chat.system`` version its
replies used (docs/prompts.md).  A changed or cleared rating subtracted the old one from
the session's *current* version, which may never have counted it: rated before any reply
(no version counted it), or rated and then answered by a newer version.  The mean left
0..5 (a 5 taken out of a lone 3 gives -1).  ``system_prompt_ratings`` now remembers, per
session, the version that counts its rating and that rating; ``roost_session_rated`` takes
it out of that version and adds the new one to the current version.  Only that function
(SECURITY DEFINER) touches the table: the application role has no grants on it, and
row-level security (no policy) refuses it anything should one be granted.  Ratings given
before this migration are taken as counted by the session's current version (what the
previous code assumed).

Revision ID: 1200
Revises: 1190
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1200"
down_revision: str | Sequence[str] | None = "1190"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# search_path pinned: a SECURITY DEFINER function must not resolve names through a schema
# the caller controls.
SESSION_RATED = r"""
CREATE FUNCTION roost_session_rated(p_session uuid, p_prompt uuid, p_rating double precision)
RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  counted system_prompt_ratings%ROWTYPE;
BEGIN
  -- The old rating leaves the version that counted it (none: nothing to take out) ...
  DELETE FROM system_prompt_ratings WHERE session_id = p_session RETURNING * INTO counted;
  IF FOUND THEN
    PERFORM roost_prompt_rated(counted.prompt_id, NULL, counted.rating);
  END IF;
  -- ... and the new one, if any, counts in the version the session's replies use now.
  IF p_rating IS NOT NULL AND p_prompt IS NOT NULL THEN
    PERFORM roost_prompt_rated(p_prompt, p_rating);
    INSERT INTO system_prompt_ratings (session_id, prompt_id, rating)
    VALUES (p_session, p_prompt, p_rating);
  END IF;
END $$;
"""


def upgrade() -> None:
    op.create_table(
        "system_prompt_ratings",
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.Column("prompt_id", sa.UUID(), nullable=False),
        sa.Column("rating", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["chat_sessions.id"],
                                name=op.f("fk_system_prompt_ratings_session_id_chat_sessions"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["prompt_id"], ["system_prompts.id"],
                                name=op.f("fk_system_prompt_ratings_prompt_id_system_prompts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_system_prompt_ratings")),
    )
    op.create_index("ix_system_prompt_ratings_prompt_id", "system_prompt_ratings",
                    ["prompt_id"])
    op.execute("REVOKE ALL ON system_prompt_ratings FROM roost_app")
    op.execute("ALTER TABLE system_prompt_ratings ENABLE ROW LEVEL SECURITY")
    op.execute(SESSION_RATED)
    op.execute("""
        INSERT INTO system_prompt_ratings (session_id, prompt_id, rating)
        SELECT s.session_id, c.system_prompt_id, s.session_rating
          FROM chat_session_summaries s JOIN chat_sessions c ON c.id = s.session_id
         WHERE s.session_rating IS NOT NULL AND c.system_prompt_id IS NOT NULL
    """)


def downgrade() -> None:
    op.execute("DROP FUNCTION roost_session_rated(uuid, uuid, double precision)")
    op.drop_table("system_prompt_ratings")
