"""memory search: recall reads one user's memories from index entries that hold what it
needs, and the memories policy reads the principal once per statement (docs/memory.md,
"Recall"; docs/benchmarks.md, "Memory recall").

A user's memories are scattered over the whole ``memories`` table (a heap page each, the
embedding in TOAST), so recall's exact reads of one user cost a page or three per memory;
and under row-level security the full-text match could not use the GIN index at all
(``@@`` is not ``LEAKPROOF``: the policy is applied first), so it read every memory of the
user too.  These B-tree indexes keep one user's entries together with the columns recall
filters on, so both signals become index-only scans of the user's own entries, under
row-level security as well (the policy's qual needs only ``user_id``, a key column):

* ``ix_memories_user_text``: ``user_id`` with ``content_tsv``, ``created_at`` and the
  scope, status and validity columns, for memories whose tsvector is at most 1,200 bytes
  as text (a one-sentence fact: 50-300).  The bound keeps every entry under a B-tree
  page's limit (2,704 bytes): a tsvector takes at most its text form + 5 bytes per lexeme
  (each at least 6 characters of text) + 8, so at most 2,209 bytes, plus about 180 for
  the other columns.  ``ix_memories_user_long_text``: the user's longer memories, whose
  tsvectors are read from the table.
* ``ix_memories_user_minilm``: ``user_id`` with the vector, its dimension and the same
  columns, for the default embedding model (384 dimensions, which the HNSW index's cast
  enforces: an entry is about 1.7 kB), so a user's vectors are compared exactly without a
  heap or TOAST read.  The HNSW index stays, for users with more memories than
  ``roost.memory.recall.EXACT_VECTORS_MAX``.

``memories_owner`` keeps its meaning, ``roost_row_visible(user_id)`` (an administrator,
or the owner; memories have no group), written ``(SELECT roost_is_admin()) OR user_id =
(SELECT roost_current_user_id())`` so the two settings are read once per statement
(initplans) instead of parsed once per row (5-7 ms per 10,000 entries: a full-text scan
of them took 9 ms instead of 3).  ``WITH CHECK`` is unchanged.

Not done: a ``SECURITY DEFINER`` function answering the text matches through the GIN
index.  Measured at 1,000,000 memories it cost 60-80 ms a search (a common word's posting
list spans every user; the any-term fallback ranked 1,000 heap rows) against 5-15 ms for
the index-only scan here, which needs no code running with the owner's rights.

Revision ID: 0830
Revises: 0820
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0830"
down_revision: str | Sequence[str] | None = "0820"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (roost.memory.models.SHORT_TEXT says the same, and recall's queries repeat it
# so the planner can use the partial indexes).
SHORT_TEXT = "octet_length(content_tsv::text) <= 1200"
LONG_TEXT = "octet_length(content_tsv::text) > 1200"
SCOPE_AND_TIME = ["id", "status", "valid_from", "valid_to", "archived_at", "persona_id",
                  "agent_id", "session_id"]
OLD_POLICY = "roost_row_visible(user_id)"
NEW_POLICY = "(SELECT roost_is_admin()) OR user_id = (SELECT roost_current_user_id())"


def upgrade() -> None:
    op.create_index("ix_memories_user_text", "memories", ["user_id"], unique=False,
                    postgresql_include=[*SCOPE_AND_TIME, "created_at", "content_tsv"],
                    postgresql_where=sa.text(SHORT_TEXT))
    op.create_index("ix_memories_user_long_text", "memories", ["user_id"], unique=False,
                    postgresql_where=sa.text(LONG_TEXT))
    op.create_index("ix_memories_user_minilm", "memories", ["user_id"], unique=False,
                    postgresql_include=[*SCOPE_AND_TIME, "embedding_dim", "embedding"],
                    postgresql_where=sa.text("embedding_model = 'all-MiniLM-L6-v2'"))
    op.execute(f"ALTER POLICY memories_owner ON memories USING ({NEW_POLICY})")


def downgrade() -> None:
    op.execute(f"ALTER POLICY memories_owner ON memories USING ({OLD_POLICY})")
    op.drop_index("ix_memories_user_minilm", table_name="memories")
    op.drop_index("ix_memories_user_long_text", table_name="memories")
    op.drop_index("ix_memories_user_text", table_name="memories")
