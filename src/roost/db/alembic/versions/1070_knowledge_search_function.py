"""knowledge_search_function: ``roost_knowledge_search(confirm, scope, ef_search,
iterative, statement, query, limit, <filters>, text, pool)``, a knowledge search (vector,
text or hybrid) in one statement that needs no transaction around it.

It applies ``roost_confirm_and_scope`` (migration 1040: the database confirms a caller
the process remembers and scopes the statement's implicit transaction, role switch
included; NULLs skip either, inside a transaction already scoped), sets the HNSW
settings transaction-locally (``hnsw.ef_search``; ``hnsw.iterative_scan =
relaxed_order`` when ``iterative``), then runs ``statement`` with the query vector, the
limit, the filter values, the query text and the candidate pool as ``$1``..``$12``.  The
statement is roost.knowledge.search's (``search_sql``: the k-NN's ORDER BY and
predicate are the model's partial HNSW index's; only ints, a quoted model name and fixed
clauses are written into it), so the function holds no copy of that SQL; a dynamic
statement is planned with its values, as the driver's own statement was.  The caller
names the result's columns (``AS r(id uuid, distance double precision, ...)``).

``SECURITY INVOKER``, like every statement the application sends: the statement runs
with the rights of whoever calls the function, after the role switch, so row-level
security filters it, and it grants nothing its caller could not do already.

Revision ID: 1070
Revises: 1060
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1070"
down_revision: str | Sequence[str] | None = "1060"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNATURE = ("jsonb, jsonb, integer, boolean, text, vector, integer, uuid, uuid[], uuid, "
              "uuid, uuid, text, jsonb, uuid[], text, integer")


def upgrade() -> None:
    # The parameters after the statement are roost.knowledge.search.STATEMENT_PARAMETERS,
    # in that order ($1..$12 of the statement).
    op.execute("""
CREATE FUNCTION roost_knowledge_search(
  p_confirm jsonb, p_scope jsonb, p_ef_search integer, p_iterative boolean,
  p_statement text, p_query vector, p_limit integer, p_scope_user uuid,
  p_scope_groups uuid[], p_owner_id uuid, p_group_id uuid, p_persona_id uuid,
  p_collection text, p_tags jsonb, p_document_ids uuid[], p_text text, p_pool integer
) RETURNS SETOF record LANGUAGE plpgsql AS $$
BEGIN
  PERFORM roost_confirm_and_scope(p_confirm, p_scope);
  PERFORM set_config('hnsw.ef_search', p_ef_search::text, true);
  IF p_iterative THEN
    PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
  END IF;
  RETURN QUERY EXECUTE p_statement
    USING p_query, p_limit, p_scope_user, p_scope_groups, p_owner_id, p_group_id,
          p_persona_id, p_collection, p_tags, p_document_ids, p_text, p_pool;
END $$;
""")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION roost_knowledge_search({_SIGNATURE})")
