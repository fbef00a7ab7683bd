"""distributed_memory.persona_id: a persona's sharded memory rows go with the persona.

A row of the sharded memory store (``roost.memory.shards``) in a persona's scope is keyed
``"<user id>:<persona id, base64url>"``, but the table referenced only its user: deleting
the persona deleted its memories, entities and relations (ON DELETE CASCADE) and left
these rows behind, unreachable by scope (the persona is a 404) yet still listed with
``every_persona``.  The column references ``personas(id)`` ON DELETE CASCADE; the rows
stored before are given their key's persona, and rows whose persona is already gone (what
earlier deletions left) are deleted here, as the deletion should have.

Revision ID: 1320
Revises: 1310
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1320"
down_revision: str | Sequence[str] | None = "1310"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE distributed_memory ADD COLUMN persona_id uuid "
               "CONSTRAINT fk_distributed_memory_persona_id_personas "
               "REFERENCES personas (id) ON DELETE CASCADE")
    # A persona key is "<user id>:<persona id in 22 characters of base64url>" (16 bytes).
    op.execute("""
WITH keyed AS (
  SELECT shard_key, id,
         encode(decode(translate(split_part(shard_key, ':', 2), '-_', '+/') || '==',
                       'base64'), 'hex')::uuid AS persona
  FROM distributed_memory WHERE shard_key ~ '^[0-9a-f-]{36}:[A-Za-z0-9_-]{22}$'
)
UPDATE distributed_memory d SET persona_id = k.persona
FROM keyed k JOIN personas p ON p.id = k.persona
WHERE d.shard_key = k.shard_key AND d.id = k.id
""")
    # What is left with a persona key and no persona_id is a deleted persona's.
    op.execute("DELETE FROM distributed_memory "
               "WHERE shard_key ~ '^[0-9a-f-]{36}:[A-Za-z0-9_-]{22}$' AND persona_id IS NULL")
    op.execute("CREATE INDEX ix_distributed_memory_persona_id ON distributed_memory (persona_id)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_distributed_memory_persona_id")
    op.execute("ALTER TABLE distributed_memory DROP COLUMN persona_id")
