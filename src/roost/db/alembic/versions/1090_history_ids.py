"""history_ids: the usage ledger, tool runs and run steps name what they were for by id,
without foreign keys.

``usage_records`` (agent, run, chat session, LLM request, provider, API key),
``tool_runs`` (tool, run, run step) and ``run_steps`` (tool) referred to those rows with
``ON DELETE SET NULL`` keys.  Such a row is often written *after* what it names was
deleted: an agent or persona deleted while its run's model call was answering, an MCP
server deleted while its tool ran, a workflow or chat session deleted while a node's or
an answer's call finished.  The key then refused the ledger row, the tool run or the
step's result: the call's usage was lost (a metered call never charged, its hold left
for the sweeper), the run's job failed and was retried (the model asked twice, a tool
that ran recorded as interrupted).  History must outlive what it describes, as
``audit_logs`` always did (no keys there on purpose): the ids stay as they were written,
and a reader joins what still exists.  The owner's keys (``user_id``, deleted with the
user) and the subscription that paid stay.

Revision ID: 1090
Revises: 1080
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1090"
down_revision: str | Sequence[str] | None = "1080"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, referenced table)
_KEYS: tuple[tuple[str, str, str], ...] = (
    ("usage_records", "agent_id", "agents"),
    ("usage_records", "run_id", "runs"),
    ("usage_records", "session_id", "chat_sessions"),
    ("usage_records", "llm_request_id", "llm_requests"),
    ("usage_records", "provider_id", "llm_providers"),
    ("usage_records", "api_key_id", "api_keys"),
    ("tool_runs", "tool_id", "tools"),
    ("tool_runs", "run_id", "runs"),
    ("tool_runs", "run_step_id", "run_steps"),
    ("run_steps", "tool_id", "tools"),
)


def upgrade() -> None:
    for table, column, target in _KEYS:
        op.drop_constraint(f"fk_{table}_{column}_{target}", table, type_="foreignkey")


def downgrade() -> None:
    for table, column, target in _KEYS:
        # Ids of rows deleted meanwhile cannot be keys again: cleared, as SET NULL did.
        op.execute(f"UPDATE {table} t SET {column} = NULL WHERE {column} IS NOT NULL AND "  # noqa: S608 - constant names
                   f"NOT EXISTS (SELECT 1 FROM {target} x WHERE x.id = t.{column})")
        op.create_foreign_key(f"fk_{table}_{column}_{target}", table, target, [column], ["id"],
                              ondelete="SET NULL")
