"""A deleted document leaves every agent's ``document_ids``.

An agent kept the id of a document deleted after it was chosen: its detail showed the
id, its runs skipped it, and a ``PATCH`` resending the list it had read was a 422
("no document you can see has the id ...") for an id the caller never typed.  An
``AFTER DELETE`` statement trigger on ``documents`` (its deleted rows as a transition
table, so a cascade from an account's deletion counts too)
removes the deleted ids from every agent that names one, keeping the order of the rest.
SECURITY DEFINER: the agents of other users that chose a document shared with them lose
it too, which the deleting role cannot see.  The ids left behind by earlier deletions are
removed once here.

Revision ID: 1390
Revises: 1380
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1390"
down_revision: str | Sequence[str] | None = "1380"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# search_path pinned: a SECURITY DEFINER function must not resolve names through a schema
# the caller controls.
FUNCTION = r"""
CREATE FUNCTION roost_agent_documents_gone() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  ids text[];
BEGIN
  SELECT array_agg(g.id::text) INTO ids FROM gone g;
  IF ids IS NULL THEN
    RETURN NULL;
  END IF;
  UPDATE agents a
     SET document_ids = coalesce(
           (SELECT jsonb_agg(e.value ORDER BY e.ord)
              FROM jsonb_array_elements(a.document_ids) WITH ORDINALITY AS e(value, ord)
             WHERE NOT (e.value #>> '{}') = ANY(ids)), '[]'::jsonb)
   WHERE a.document_ids ?| ids;
  RETURN NULL;
END $$
"""
TRIGGER = """
CREATE TRIGGER roost_agent_documents_gone AFTER DELETE ON documents
  REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION roost_agent_documents_gone()
"""
# What earlier deletions left: every id no document has any more.
BACKFILL = r"""
UPDATE agents a
   SET document_ids = coalesce(
         (SELECT jsonb_agg(e.value ORDER BY e.ord)
            FROM jsonb_array_elements(a.document_ids) WITH ORDINALITY AS e(value, ord)
           WHERE EXISTS (SELECT 1 FROM documents d WHERE d.id::text = e.value #>> '{}')),
         '[]'::jsonb)
 WHERE a.document_ids <> '[]'::jsonb
   AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(a.document_ids) AS i(id)
               WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.id::text = i.id))
"""


def upgrade() -> None:
    op.execute(FUNCTION)
    op.execute(TRIGGER)
    op.execute(BACKFILL)


def downgrade() -> None:
    op.execute("DROP TRIGGER roost_agent_documents_gone ON documents")
    op.execute("DROP FUNCTION roost_agent_documents_gone()")
