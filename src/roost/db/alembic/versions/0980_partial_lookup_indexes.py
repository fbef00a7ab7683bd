"""audit_logs and usage_records: their lookup indexes on optional columns are partial
(``WHERE <column> IS NOT NULL``).

Most rows leave most of these columns empty (a worker's audit record has no correlation
id, a chat turn's usage no run or agent, an agent step's no session or API key), and
every such row still went into each index as a NULL entry, on the hottest write paths
(every model call, tool call and audited action).  Every lookup these indexes serve
filters ``<column> = :value``, which a partial index answers the same, including the
foreign keys' lookups on delete.

Revision ID: 0980
Revises: 0970
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0980"
down_revision: str | Sequence[str] | None = "0970"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, index, columns; the first column is the optional one)
PARTIAL = (
    ("audit_logs", "ix_audit_logs_persona_created", ("persona_id", "created_at")),
    ("audit_logs", "ix_audit_logs_run_id", ("run_id",)),
    ("audit_logs", "ix_audit_logs_correlation_id", ("correlation_id",)),
    ("audit_logs", "ix_audit_logs_trace_id", ("trace_id",)),
    ("usage_records", "ix_usage_records_session_id", ("session_id",)),
    ("usage_records", "ix_usage_records_llm_request_id", ("llm_request_id",)),
    ("usage_records", "ix_usage_records_provider_id", ("provider_id",)),
    ("usage_records", "ix_usage_records_agent_id", ("agent_id",)),
    ("usage_records", "ix_usage_records_run_id", ("run_id",)),
    ("usage_records", "ix_usage_records_subscription_id_created_at",
     ("subscription_id", "created_at")),
    ("usage_records", "ix_usage_records_api_key_id", ("api_key_id",)),
)


def upgrade() -> None:
    for table, name, columns in PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, list(columns),
                        postgresql_where=sa.text(f"{columns[0]} IS NOT NULL"))


def downgrade() -> None:
    for table, name, columns in PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, list(columns))
