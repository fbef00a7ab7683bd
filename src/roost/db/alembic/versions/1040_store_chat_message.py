"""store_chat_message: ``roost_confirm_and_scope(confirm, scope)`` and
``roost_store_chat_message(...)``, a chat message's whole store in one statement that
needs no transaction around it.

``roost_confirm_and_scope`` is what a known caller's request ``BEGIN`` carries
(roost.identity.resolver): ``roost_confirm_principal`` with the values remembered for the
credential (given as one JSON object; SQLSTATE 28000 when the credential no longer
resolves to them), then ``roost_apply_scope`` (migration 1010: the role switch and
``roost.*`` settings).  Either argument may be NULL (a transaction already scoped).

``roost_store_chat_message`` applies it, then bumps the session's counters (its row
locked to commit; the new ``message_count`` is the message's position), writes the
message as its session's owner's and its audit record (whose metadata gets the
position), and answers the session's owner, status, expiry and count with ``stored``.
A session the actor may not post to (not visible, or another's and the actor no
administrator) answers no row; with ``p_require_open``, a closed or expired session
answers its row with ``stored`` false and nothing is written.  Sent alone it is its own
implicit transaction: a ``reply: false`` post of a known caller in one round trip
(roost.chat.messages.record_as_known, docs/benchmarks.md).  ``SECURITY INVOKER``: the
writes run after the role switch, so row-level security checks them.

Revision ID: 1040
Revises: 1030
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1040"
down_revision: str | Sequence[str] | None = "1030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
CREATE FUNCTION roost_confirm_and_scope(p_confirm jsonb, p_scope jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  -- The confirmation first: it reads and touches the credential as the connecting role.
  IF p_confirm IS NOT NULL THEN
    PERFORM roost_confirm_principal(
      p_confirm->>'kind', p_confirm->>'credential', (p_confirm->>'user_id')::uuid,
      (p_confirm->>'is_admin')::boolean, p_confirm->>'group_ids',
      (p_confirm->>'user_rpm')::integer, (p_confirm->>'user_streams')::integer,
      (p_confirm->>'key_rpm')::integer, (p_confirm->>'key_streams')::integer);
  END IF;
  IF p_scope IS NOT NULL THEN
    PERFORM roost_apply_scope(p_scope);
  END IF;
END $$;
""")
    # The column lists are those roost.chat.messages writes for a new message and
    # roost.audit.service.entry_values fills, as this revision wrote them (a migration is
    # history); tests/chat/test_known_caller_statements.py compares them with the models.
    op.execute("""
CREATE FUNCTION roost_store_chat_message(
  p_confirm jsonb, p_scope jsonb, p_session_id uuid, p_actor_id uuid,
  p_actor_is_admin boolean, p_require_open boolean, p_message jsonb, p_content bytea,
  p_tool_calls bytea, p_audit jsonb
) RETURNS TABLE (user_id uuid, status text, expires_at timestamptz, message_count integer,
                 stored boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  bumped record;
BEGIN
  PERFORM roost_confirm_and_scope(p_confirm, p_scope);
  UPDATE chat_sessions s
     SET message_count = s.message_count + 1, last_activity_at = now(), updated_at = now()
   WHERE s.id = p_session_id AND (s.user_id = p_actor_id OR p_actor_is_admin)
     AND (NOT p_require_open
          OR (s.status = 'active' AND (s.expires_at IS NULL OR s.expires_at > now())))
  RETURNING s.user_id, s.status::text AS status, s.expires_at, s.message_count INTO bumped;
  IF NOT FOUND THEN  -- not the actor's to post to (no row), or closed or expired
    RETURN QUERY
      SELECT s.user_id, s.status::text, s.expires_at, s.message_count, false
      FROM chat_sessions s
      WHERE s.id = p_session_id AND (s.user_id = p_actor_id OR p_actor_is_admin);
    RETURN;
  END IF;
  INSERT INTO chat_messages (id, session_id, user_id, seq, role, content, tool_calls,
                             tool_call_name, tool_call_id, tokens_in, tokens_out, model,
                             llm_request_id, conversation_domain, plan_step,
                             confidence_score, embedding_model_used, created_at)
  SELECT m.id, m.session_id, bumped.user_id, bumped.message_count, m.role, p_content,
         p_tool_calls, m.tool_call_name, m.tool_call_id, m.tokens_in, m.tokens_out, m.model,
         m.llm_request_id, m.conversation_domain, m.plan_step, m.confidence_score,
         m.embedding_model_used, m.created_at
  FROM jsonb_populate_record(NULL::chat_messages, p_message) m;
  INSERT INTO audit_logs (id, created_at, action, user_id, persona_id, run_id, event_category,
                          resource_type, resource_id, changes, metadata, description,
                          ip_address, user_agent, correlation_id, trace_id, success,
                          error_message)
  SELECT a.id, a.created_at, a.action, a.user_id, a.persona_id, a.run_id, a.event_category,
         a.resource_type, a.resource_id, a.changes,
         coalesce(a.metadata, '{}'::jsonb) || jsonb_build_object('seq', bumped.message_count),
         a.description, a.ip_address, a.user_agent, a.correlation_id, a.trace_id, a.success,
         a.error_message
  FROM jsonb_populate_record(NULL::audit_logs, p_audit) a;
  RETURN QUERY SELECT bumped.user_id, bumped.status, bumped.expires_at, bumped.message_count,
                      true;
END $$;
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION roost_store_chat_message(jsonb, jsonb, uuid, uuid, boolean, "
               "boolean, jsonb, bytea, bytea, jsonb)")
    op.execute("DROP FUNCTION roost_confirm_and_scope(jsonb, jsonb)")
