"""chat_history_function: ``roost_chat_history(confirm, scope, session, owner, before_seq,
limit)``, a page of a chat session's history in one statement that needs no transaction
around it: ``roost_confirm_and_scope`` (migration 1040: the database confirms a caller
the process remembers and scopes the statement's implicit transaction, role switch
included), then the session (visible to the caller, and the owner's when ``owner`` is
given) with its newest messages before ``before_seq`` beside it, as
roost.chat.messages' history statement reads them.  No row: no such session for the
caller (404).  The history read of a known caller without read replicas
(roost.chat.messages.read_confirming, docs/benchmarks.md).  ``SECURITY INVOKER``: the
reads run after the role switch, so row-level security filters them.

Revision ID: 1050
Revises: 1040
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1050"
down_revision: str | Sequence[str] | None = "1040"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The columns are roost.chat.messages._MESSAGE_COLUMNS, in its order, after "found"
    # (tests/chat/test_known_caller_statements.py compares them).  The cursor is a bound on the
    # (session_id, seq) index, also in a generic plan (no "IS NULL OR" on it).
    op.execute("""
CREATE FUNCTION roost_chat_history(
  p_confirm jsonb, p_scope jsonb, p_session_id uuid, p_owner_id uuid, p_before_seq integer,
  p_limit integer
) RETURNS TABLE (found uuid, id uuid, session_id uuid, seq integer, role text, content bytea,
                 tool_call_name text, tool_call_id text, tool_calls bytea, tokens_in integer,
                 tokens_out integer, model text, llm_request_id uuid,
                 conversation_domain text, plan_step integer,
                 confidence_score double precision, embedding_model_used text,
                 created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM roost_confirm_and_scope(p_confirm, p_scope);
  RETURN QUERY
    SELECT s.id, m.id, m.session_id, m.seq, m.role::text, m.content,
           m.tool_call_name::text, m.tool_call_id::text, m.tool_calls, m.tokens_in,
           m.tokens_out, m.model::text, m.llm_request_id, m.conversation_domain::text,
           m.plan_step, m.confidence_score, m.embedding_model_used::text, m.created_at
    FROM chat_sessions s
    LEFT JOIN LATERAL (
      SELECT c.* FROM chat_messages c
      WHERE c.session_id = s.id AND c.seq < coalesce(p_before_seq, 2147483647)
      ORDER BY c.seq DESC LIMIT p_limit
    ) m ON true
    WHERE s.id = p_session_id AND (p_owner_id IS NULL OR s.user_id = p_owner_id);
END $$;
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION roost_chat_history(jsonb, jsonb, uuid, uuid, integer, integer)")
