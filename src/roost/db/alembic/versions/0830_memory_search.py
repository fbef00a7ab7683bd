"""memory search: recall's text and vector signals read the searched user's rows through
indexes, under row-level security too (docs/memory.md, "Recall"; docs/benchmarks.md,
"Memory recall").

* ``roost_memory_text_matches(...)``: the text signal of recall as a ``SECURITY DEFINER``
  SQL function (owned by the migrating role, ``search_path`` pinned, ``STABLE``).  Under
  row-level security PostgreSQL evaluates the policy before any qual that is not
  ``LEAKPROOF``, and ``@@`` is not, so a full-text match could not use an index and read
  every row of the user instead.  The function runs as the table's owner, where the
  planner may use the indexes, and applies the visibility the policy would itself:
  exactly ``memories_owner``'s ``USING (roost_row_visible(user_id))``, per row, on the
  principal of the calling transaction (``roost.user_id``/``roost.is_admin``), so it
  answers nothing a caller could not ``SELECT`` (another user's rows never; a caller
  without a principal, nothing).  It answers ids and ranks only.  ``EXECUTE`` stays with
  ``PUBLIC`` like identity's ``SECURITY DEFINER`` helpers (a deployment that connects
  as its own ``LOGIN`` role needs it; the function shows nobody more than the policy).
* ``ix_memories_user_content_tsv``: GIN over ``(user_id, content_tsv)`` (the
  ``btree_gin`` extension, created if missing and left in place on downgrade as
  ``vector`` is): one index scan finds *one user's* matching memories, where the
  single-column GIN it replaces (``ix_memories_content_tsv``) found every user's and
  left the rest to a bitmap intersection whose cost grew with the table.
* ``ix_memories_user_minilm``: B-tree on ``user_id`` carrying, for memories embedded
  by the default model, the columns recall filters on and the vector itself: a user's
  vectors are compared exactly by an index-only scan of their own contiguous index
  entries, instead of a heap and TOAST fetch per memory scattered over the table (or
  an HNSW walk that must discard every other user's neighbours).  The HNSW index
  stays; the planner picks whichever costs less for the user's share of the table.
  Partial on the model, whose vectors are 384 dimensions (the HNSW index's cast enforces
  it), so an entry (about 1.6 kB) always fits a B-tree page.

Revision ID: 0830
Revises: 0820
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0830"
down_revision: str | Sequence[str] | None = "0820"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the code does); roost.memory.recall
# calls it with these arguments.
TEXT_MATCHES = r"""
CREATE FUNCTION roost_memory_text_matches(
    p_user_id uuid, p_every tsquery, p_any tsquery,
    p_persona_id uuid, p_agent_id uuid, p_session_id uuid, p_as_of timestamptz,
    p_max_matches integer, p_limit integer)
RETURNS TABLE (id uuid, trank double precision)
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, public, pg_temp
-- Plan each call with its values: a NULL scope column or as_of folds away, and the
-- planner sees how common the query's words and the user are.
SET plan_cache_mode = force_custom_plan
AS $$
  -- The memories of p_user_id the caller may see (the policy's USING clause, row by row,
  -- behind a check on p_user_id that answers nothing at once for another tenant) that
  -- match every term, or when none does any term; at most p_max_matches of them, the
  -- p_limit best by ts_rank_cd over the any-term query.
  WITH t_every AS (
    SELECT m.id, m.content_tsv FROM public.memories m
    WHERE public.roost_row_visible(p_user_id) AND m.user_id = p_user_id
      AND public.roost_row_visible(m.user_id)
      AND m.content_tsv @@ p_every
      AND (p_persona_id IS NULL OR m.persona_id = p_persona_id)
      AND (p_agent_id IS NULL OR m.agent_id = p_agent_id)
      AND (p_session_id IS NULL OR m.session_id = p_session_id)
      AND CASE WHEN p_as_of IS NULL
               THEN m.status = 'active' AND (m.valid_to IS NULL OR m.valid_to > now())
               ELSE m.valid_from <= p_as_of AND (m.valid_to IS NULL OR m.valid_to > p_as_of)
                    AND (m.archived_at IS NULL OR m.archived_at > p_as_of) END
    LIMIT p_max_matches
  ),
  t_any AS (
    SELECT m.id, m.content_tsv FROM public.memories m
    WHERE NOT EXISTS (SELECT 1 FROM t_every)
      AND public.roost_row_visible(p_user_id) AND m.user_id = p_user_id
      AND public.roost_row_visible(m.user_id)
      AND m.content_tsv @@ p_any
      AND (p_persona_id IS NULL OR m.persona_id = p_persona_id)
      AND (p_agent_id IS NULL OR m.agent_id = p_agent_id)
      AND (p_session_id IS NULL OR m.session_id = p_session_id)
      AND CASE WHEN p_as_of IS NULL
               THEN m.status = 'active' AND (m.valid_to IS NULL OR m.valid_to > now())
               ELSE m.valid_from <= p_as_of AND (m.valid_to IS NULL OR m.valid_to > p_as_of)
                    AND (m.archived_at IS NULL OR m.archived_at > p_as_of) END
    LIMIT p_max_matches
  )
  SELECT x.id, ts_rank_cd(x.content_tsv, p_any)::double precision AS trank
  FROM (SELECT * FROM t_every UNION ALL SELECT * FROM t_any) x
  ORDER BY trank DESC, x.id
  LIMIT p_limit
$$
"""
TEXT_MATCHES_SIGNATURE = ("roost_memory_text_matches(uuid, tsquery, tsquery, uuid, uuid, uuid, "
                          "timestamptz, integer, integer)")

USER_MINILM_INDEX = """
CREATE INDEX ix_memories_user_minilm ON memories (user_id)
  INCLUDE (id, status, valid_from, valid_to, archived_at, persona_id, agent_id, session_id,
           embedding)
  WHERE embedding_model = 'all-MiniLM-L6-v2'
"""


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.create_index("ix_memories_user_content_tsv", "memories", ["user_id", "content_tsv"],
                    unique=False, postgresql_using="gin")
    op.drop_index("ix_memories_content_tsv", table_name="memories", postgresql_using="gin")
    op.execute(USER_MINILM_INDEX)
    op.execute(TEXT_MATCHES)
    op.execute(f"COMMENT ON FUNCTION {TEXT_MATCHES_SIGNATURE} IS "
               "'recall''s text signal: the caller''s visible memories of one user matching "
               "a query (ids and ranks), through the indexes (migration 0830)'")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {TEXT_MATCHES_SIGNATURE}")
    op.drop_index("ix_memories_user_minilm", table_name="memories")
    op.create_index("ix_memories_content_tsv", "memories", ["content_tsv"], unique=False,
                    postgresql_using="gin")
    op.drop_index("ix_memories_user_content_tsv", table_name="memories", postgresql_using="gin")
    # btree_gin stays, as vector does (0001): dropping an extension needs more than a
    # migration should assume, and other objects may use it.
