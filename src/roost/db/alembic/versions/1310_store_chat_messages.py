"""store_chat_messages: ``roost_store_chat_messages(...)``, several chat messages of one
caller stored in one statement (a group commit: roost.db.groupcommit).

A ``reply: false`` post of a known caller is one statement,
``roost_store_chat_message`` (migration 1040), its own implicit transaction.  Under load,
the posts one process receives from one caller while another of them is being written
are stored together: the caller confirmed and its scope applied once, then each message
through ``roost_store_chat_message`` (without a confirmation or scope of its own), in the
order given (the caller sorts them by session, so two batches lock sessions in the same
order), one commit for all.  Each item answers its rows with its position (``item``,
from 1): no row when the actor may not post to the session, ``stored`` false when it is
closed or expired (that item wrote nothing; the others are stored).

Revision ID: 1310
Revises: 1300
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1310"
down_revision: str | Sequence[str] | None = "1300"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
CREATE FUNCTION roost_store_chat_messages(
  p_confirm jsonb, p_scope jsonb, p_actor_id uuid, p_actor_is_admin boolean,
  p_require_open boolean, p_session_ids uuid[], p_messages jsonb[], p_contents bytea[],
  p_tool_calls bytea[], p_audits jsonb[]
) RETURNS TABLE (item integer, user_id uuid, status text, expires_at timestamptz,
                 message_count integer, stored boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM roost_confirm_and_scope(p_confirm, p_scope);
  FOR i IN 1 .. coalesce(cardinality(p_session_ids), 0) LOOP
    RETURN QUERY
      SELECT i, s.user_id, s.status, s.expires_at, s.message_count, s.stored
      FROM roost_store_chat_message(NULL, NULL, p_session_ids[i], p_actor_id,
                                    p_actor_is_admin, p_require_open, p_messages[i],
                                    p_contents[i], p_tool_calls[i], p_audits[i]) s;
  END LOOP;
END $$;
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION roost_store_chat_messages(jsonb, jsonb, uuid, boolean, boolean, "
               "uuid[], jsonb[], bytea[], bytea[], jsonb[])")
