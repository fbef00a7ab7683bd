"""record_tool_call: ``roost_apply_scope(scope)``, which scopes the current transaction to
a principal (the ``set_config`` values of ``tenancy.scope_settings``, the role switch
included; nothing but ``role`` and ``roost.*``), and ``roost_record_tool_call(scope, run,
event, audit)``, which applies it and then writes a tool call's ``tool_runs`` row, its
analytics event and its audit record, each given as a JSON object of its columns.

Sent alone, as its own implicit transaction, it is a call's whole record in one round
trip, committed when it ends: the scope's ``BEGIN`` and the ``COMMIT`` were two more
(roost.tools.calls._record_alone, docs/benchmarks.md "Tool call overhead").  The inserts
run after the role switch, so row-level security checks them as it checks any scoped
statement; the function is ``SECURITY INVOKER`` and may set only ``role`` and ``roost.*``.

Revision ID: 1010
Revises: 1000
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1010"
down_revision: str | Sequence[str] | None = "1000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Transaction-local (set_config's third argument): the scope ends with the statement's
    # implicit transaction, as a scoped transaction's ends at its COMMIT.
    op.execute("""
CREATE FUNCTION roost_apply_scope(p_scope jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  setting record;
BEGIN
  FOR setting IN SELECT key, value FROM jsonb_each_text(p_scope) LOOP
    IF setting.key <> 'role' AND setting.key NOT LIKE 'roost.%' THEN
      RAISE EXCEPTION 'a scope may not set %', setting.key
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config(setting.key, setting.value, true);
  END LOOP;
END $$;
""")
    # The column lists are those roost.tools.calls.CallRecord fills, as this revision wrote
    # them (a migration is history); tests/tools/test_record_function.py compares them.
    # Columns not listed keep their defaults (audit_logs.seq, the chain's columns).
    op.execute("""
CREATE FUNCTION roost_record_tool_call(
  p_scope jsonb, p_run jsonb, p_event jsonb, p_audit jsonb
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM roost_apply_scope(p_scope);
  INSERT INTO tool_runs (id, created_at, tool_id, user_id, tool_name, trace_id, status,
                         input, output, result_preview, error, started_at, finished_at,
                         duration_ms, session_id, message_id, run_id, run_step_id)
  SELECT id, created_at, tool_id, user_id, tool_name, trace_id, status,
         input, output, result_preview, error, started_at, finished_at,
         duration_ms, session_id, message_id, run_id, run_step_id
  FROM jsonb_populate_record(NULL::tool_runs, p_run);
  INSERT INTO clickhouse_analytics (id, event_type, event_data, user_id, session_id,
                                    "timestamp", exported, exported_at, export_attempts)
  SELECT id, event_type, event_data, user_id, session_id,
         "timestamp", exported, exported_at, export_attempts
  FROM jsonb_populate_record(NULL::clickhouse_analytics, p_event);
  INSERT INTO audit_logs (id, created_at, action, user_id, persona_id, run_id, event_category,
                          resource_type, resource_id, changes, metadata, description,
                          ip_address, user_agent, correlation_id, trace_id, success,
                          error_message)
  SELECT id, created_at, action, user_id, persona_id, run_id, event_category,
         resource_type, resource_id, changes, metadata, description,
         ip_address, user_agent, correlation_id, trace_id, success,
         error_message
  FROM jsonb_populate_record(NULL::audit_logs, p_audit);
END $$;
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION roost_record_tool_call(jsonb, jsonb, jsonb, jsonb)")
    op.execute("DROP FUNCTION roost_apply_scope(jsonb)")
