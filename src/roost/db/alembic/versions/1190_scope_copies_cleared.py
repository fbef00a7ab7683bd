"""A deleted group or persona is cleared from the documents, chunks and runs that name it.

``documents.group_id`` has a foreign key (``ON DELETE SET NULL``), but the chunks' copy of
it has none, so a deleted group's chunks still answered a search filtered by that group.
``persona_id`` on ``documents``, ``document_chunks`` and ``ingestion_runs`` is a plain id
(knowledge's tables predate personas, 0600), so a deleted persona stayed named by all
three.  AFTER DELETE triggers on ``groups`` and ``personas`` now set those copies to NULL,
whichever path deletes them (a group admin, an account deletion, a cascade): one
statement-level trigger per table reading the deleted rows from a transition table, so a
big delete costs one UPDATE per table and the chunks pay no per-insert foreign key check.
The functions are SECURITY DEFINER (the schema owner, whom row-level security does not
restrict): a deleting user cannot see every document filed under the group or persona.
Values already pointing at a deleted group or persona are cleared once here.

Revision ID: 1190
Revises: 1180
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1190"
down_revision: str | Sequence[str] | None = "1180"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# search_path pinned: a SECURITY DEFINER function must not resolve names through a schema
# the caller controls.
GROUP_DELETED = r"""
CREATE FUNCTION roost_group_deleted() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
  -- documents.group_id is cleared by its foreign key; the chunks' copy has none.
  UPDATE document_chunks SET group_id = NULL
   WHERE group_id IN (SELECT id FROM deleted_groups);
  RETURN NULL;
END $$;
"""

PERSONA_DELETED = r"""
CREATE FUNCTION roost_persona_deleted() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
  UPDATE documents SET persona_id = NULL
   WHERE persona_id IN (SELECT id FROM deleted_personas);
  UPDATE document_chunks SET persona_id = NULL
   WHERE persona_id IN (SELECT id FROM deleted_personas);
  UPDATE ingestion_runs SET persona_id = NULL
   WHERE persona_id IN (SELECT id FROM deleted_personas);
  RETURN NULL;
END $$;
"""

# (table, trigger, function, transition table)
TRIGGERS = (
    ("groups", "groups_clear_copies", "roost_group_deleted", "deleted_groups"),
    ("personas", "personas_clear_copies", "roost_persona_deleted", "deleted_personas"),
)

# (table, column, the table its values name): what already points at a deleted row.
STALE = (
    ("document_chunks", "group_id", "groups"),
    ("documents", "persona_id", "personas"),
    ("document_chunks", "persona_id", "personas"),
    ("ingestion_runs", "persona_id", "personas"),
)


def upgrade() -> None:
    op.execute(GROUP_DELETED)
    op.execute(PERSONA_DELETED)
    for table, name, function, old in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} AFTER DELETE ON {table} "
                   f"REFERENCING OLD TABLE AS {old} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
    for table, column, target in STALE:
        op.execute(f"UPDATE {table} t SET {column} = NULL WHERE {column} IS NOT NULL AND "  # noqa: S608 - constant names
                   f"NOT EXISTS (SELECT 1 FROM {target} x WHERE x.id = t.{column})")


def downgrade() -> None:
    for table, name, function, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON {table}")
        op.execute(f"DROP FUNCTION {function}()")
