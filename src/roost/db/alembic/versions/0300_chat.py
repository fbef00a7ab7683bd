"""Chat and the LLM gateway: chat_sessions, chat_messages, chat_history, session_state,
chat_session_summaries (YouWorker, AIWE, seed 004), llm_providers, llm_requests,
llm_responses (HelixAgent) and usage_records (seed 004).

Revision ID: 0300
Revises: 0210
Create Date: 2026-11-25

Row-level security follows migration 0200's recipe: every user-owned table admits its
owner and administrators (``roost_row_visible(user_id)``).  ``llm_providers`` is global
configuration: everyone acting for a principal may read it (routing needs it), only
administrators may change it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0300"
down_revision: str | Sequence[str] | None = "0210"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


OWNER_TABLES = (
    "chat_sessions",
    "chat_messages",
    "chat_history",
    "session_state",
    "chat_session_summaries",
    "llm_requests",
    "llm_responses",
    "usage_records",
)
POLICIES = (
    *(
        f"CREATE POLICY {t}_owner ON {t} USING (roost_row_visible(user_id)) "
        f"WITH CHECK (roost_row_visible(user_id))"
        for t in OWNER_TABLES
    ),
    "CREATE POLICY llm_providers_read ON llm_providers FOR SELECT USING (true)",
    "CREATE POLICY llm_providers_insert ON llm_providers FOR INSERT WITH CHECK (roost_is_admin())",
    "CREATE POLICY llm_providers_update ON llm_providers FOR UPDATE USING (roost_is_admin()) "
    "WITH CHECK (roost_is_admin())",
    "CREATE POLICY llm_providers_delete ON llm_providers FOR DELETE USING (roost_is_admin())",
)


def upgrade() -> None:
    op.create_table(
        "llm_providers",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("api_key_encrypted", sa.Text(), nullable=True),
        sa.Column("base_url", sa.String(length=500), nullable=True),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("weight", sa.Numeric(precision=5, scale=2), server_default=sa.text("1.0"), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "config",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("health_status", sa.String(length=16), server_default=sa.text("'unknown'"), nullable=False),
        sa.Column("health_error", sa.Text(), nullable=True),
        sa.Column("last_health_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("response_time", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("modelsdev_provider_id", sa.String(length=255), nullable=True),
        sa.Column(
            "models",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("total_models", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("enabled_models", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_models_sync", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "health_status IN ('healthy', 'degraded', 'unhealthy', 'unknown')",
            name=op.f("ck_llm_providers_health_status"),
        ),
        sa.CheckConstraint("type IN ('openai', 'anthropic', 'local')", name=op.f("ck_llm_providers_type")),
        sa.CheckConstraint("weight >= 0", name=op.f("ck_llm_providers_weight")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_providers")),
        sa.UniqueConstraint("name", name="uq_llm_providers_name"),
    )
    op.create_index(
        "ix_llm_providers_enabled_priority", "llm_providers", ["enabled", "priority"], unique=False
    )
    op.create_table(
        "chat_sessions",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("title", sa.String(length=256), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("enable_tools", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'active'"), nullable=False),
        sa.Column("message_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("request_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'archived', 'expired')", name=op.f("ck_chat_sessions_status")
        ),
        sa.CheckConstraint("message_count >= 0 AND request_count >= 0", name=op.f("ck_chat_sessions_counts")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_chat_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_sessions")),
    )
    op.create_index(
        "ix_chat_sessions_user_id_created_at", "chat_sessions", ["user_id", "created_at"], unique=False
    )
    op.create_index(
        "uq_chat_sessions_user_id_external_id",
        "chat_sessions",
        ["user_id", "external_id"],
        unique=True,
        postgresql_where=sa.text("external_id IS NOT NULL"),
    )
    op.create_table(
        "chat_history",
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=64), server_default=sa.text("'message'"), nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_chat_history_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_chat_history_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_history")),
    )
    op.create_index(
        "ix_chat_history_session_id_created_at",
        "chat_history",
        ["session_id", "created_at", "id"],
        unique=False,
    )
    op.create_index("ix_chat_history_user_id", "chat_history", ["user_id"], unique=False)
    op.create_table(
        "llm_requests",
        sa.Column("session_id", sa.UUID(), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("request_type", sa.String(length=50), server_default=sa.text("'chat'"), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("prompt", sa.LargeBinary(), nullable=False),
        sa.Column("messages", sa.LargeBinary(), nullable=False),
        sa.Column(
            "model_params",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("ensemble_config", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("memory_enhanced", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "memory",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed')", name=op.f("ck_llm_requests_status")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_llm_requests_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_llm_requests_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_requests")),
    )
    op.create_index("ix_llm_requests_session_id", "llm_requests", ["session_id"], unique=False)
    op.create_index("ix_llm_requests_status", "llm_requests", ["status"], unique=False)
    op.create_index(
        "ix_llm_requests_user_id_created_at", "llm_requests", ["user_id", "created_at"], unique=False
    )
    op.create_table(
        "session_state",
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column(
            "state",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_session_state_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_session_state_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_session_state")),
    )
    op.create_index("ix_session_state_user_id", "session_state", ["user_id"], unique=False)
    op.create_table(
        "chat_messages",
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("tool_calls", sa.LargeBinary(), nullable=True),
        sa.Column("tool_call_name", sa.String(length=256), nullable=True),
        sa.Column("tool_call_id", sa.String(length=128), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("llm_request_id", sa.UUID(), nullable=True),
        sa.Column("conversation_domain", sa.String(length=64), nullable=True),
        sa.Column("plan_step", sa.Integer(), nullable=True),
        sa.Column("confidence_score", sa.Float(), nullable=True),
        sa.Column("embedding_model_used", sa.String(length=128), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "role IN ('system', 'developer', 'user', 'assistant', 'tool')", name=op.f("ck_chat_messages_role")
        ),
        sa.CheckConstraint("seq > 0", name=op.f("ck_chat_messages_seq")),
        sa.ForeignKeyConstraint(
            ["llm_request_id"],
            ["llm_requests.id"],
            name=op.f("fk_chat_messages_llm_request_id_llm_requests"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_chat_messages_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_chat_messages_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
        sa.UniqueConstraint("session_id", "seq", name="uq_chat_messages_session_id_seq"),
    )
    op.create_index("ix_chat_messages_llm_request_id", "chat_messages", ["llm_request_id"], unique=False)
    op.create_index("ix_chat_messages_user_id", "chat_messages", ["user_id"], unique=False)
    op.create_table(
        "chat_session_summaries",
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("total_tokens_used", sa.Integer(), nullable=True),
        sa.Column("conversation_domain", sa.String(length=64), nullable=True),
        sa.Column("summary", sa.LargeBinary(), nullable=False),
        sa.Column(
            "key_topics",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "decisions_made",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "user_preferences",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "tools_used",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("plans_created", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("expert_questions_asked", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("session_rating", sa.Float(), nullable=True),
        sa.Column(
            "complexity_level", sa.String(length=16), server_default=sa.text("'medium'"), nullable=False
        ),
        sa.Column(
            "resolution_status", sa.String(length=16), server_default=sa.text("'completed'"), nullable=False
        ),
        sa.Column(
            "search_keywords",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("follow_up_suggested", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "follow_up_tasks",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("llm_request_id", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "complexity_level IN ('low', 'medium', 'high')",
            name=op.f("ck_chat_session_summaries_complexity_level"),
        ),
        sa.CheckConstraint(
            "resolution_status IN ('completed', 'partial', 'unresolved', 'abandoned')",
            name=op.f("ck_chat_session_summaries_resolution_status"),
        ),
        sa.CheckConstraint(
            "session_rating IS NULL OR (session_rating >= 0 AND session_rating <= 5)",
            name=op.f("ck_chat_session_summaries_session_rating"),
        ),
        sa.ForeignKeyConstraint(
            ["llm_request_id"],
            ["llm_requests.id"],
            name=op.f("fk_chat_session_summaries_llm_request_id_llm_requests"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_chat_session_summaries_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_chat_session_summaries_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_session_summaries")),
        sa.UniqueConstraint("session_id", name="uq_chat_session_summaries_session_id"),
    )
    op.create_index(
        "ix_chat_session_summaries_llm_request_id", "chat_session_summaries", ["llm_request_id"], unique=False
    )
    op.create_index("ix_chat_session_summaries_user_id", "chat_session_summaries", ["user_id"], unique=False)
    op.create_table(
        "llm_responses",
        sa.Column("request_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("provider_id", sa.UUID(), nullable=True),
        sa.Column("provider_name", sa.String(length=255), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column(
            "raw_response",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("tokens_prompt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tokens_completion", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tokens_total", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "confidence", sa.Numeric(precision=5, scale=4), server_default=sa.text("0.0"), nullable=False
        ),
        sa.Column("response_time", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("finish_reason", sa.String(length=50), nullable=True),
        sa.Column("selected", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('success', 'error', 'timeout', 'cancelled')", name=op.f("ck_llm_responses_outcome")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["llm_providers.id"],
            name=op.f("fk_llm_responses_provider_id_llm_providers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["llm_requests.id"],
            name=op.f("fk_llm_responses_request_id_llm_requests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_llm_responses_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_responses")),
    )
    op.create_index("ix_llm_responses_provider_id", "llm_responses", ["provider_id"], unique=False)
    op.create_index("ix_llm_responses_request_id", "llm_responses", ["request_id"], unique=False)
    op.create_index(
        "ix_llm_responses_selected",
        "llm_responses",
        ["selected"],
        unique=False,
        postgresql_where=sa.text("selected"),
    )
    op.create_index("ix_llm_responses_user_id", "llm_responses", ["user_id"], unique=False)
    op.create_table(
        "usage_records",
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("request_type", sa.String(length=50), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("tokens_input", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tokens_output", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("credits_used", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("agent_id", sa.UUID(), nullable=True),
        sa.Column("session_id", sa.UUID(), nullable=True),
        sa.Column("llm_request_id", sa.UUID(), nullable=True),
        sa.Column("provider_id", sa.UUID(), nullable=True),
        sa.Column("success", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["llm_request_id"],
            ["llm_requests.id"],
            name=op.f("fk_usage_records_llm_request_id_llm_requests"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["llm_providers.id"],
            name=op.f("fk_usage_records_provider_id_llm_providers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_usage_records_session_id_chat_sessions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_usage_records_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
    )
    op.create_index("ix_usage_records_created_at", "usage_records", ["created_at"], unique=False)
    op.create_index("ix_usage_records_llm_request_id", "usage_records", ["llm_request_id"], unique=False)
    op.create_index("ix_usage_records_provider_id", "usage_records", ["provider_id"], unique=False)
    op.create_index("ix_usage_records_session_id", "usage_records", ["session_id"], unique=False)
    op.create_index(
        "ix_usage_records_user_id_created_at", "usage_records", ["user_id", "created_at"], unique=False
    )
    op.create_index(
        "ix_usage_records_user_id_request_type", "usage_records", ["user_id", "request_type"], unique=False
    )

    for table in (*OWNER_TABLES, "llm_providers"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for statement in POLICIES:
        op.execute(statement)


def downgrade() -> None:
    # Policies go with their tables.
    op.drop_index("ix_usage_records_user_id_request_type", table_name="usage_records")
    op.drop_index("ix_usage_records_user_id_created_at", table_name="usage_records")
    op.drop_index("ix_usage_records_session_id", table_name="usage_records")
    op.drop_index("ix_usage_records_provider_id", table_name="usage_records")
    op.drop_index("ix_usage_records_llm_request_id", table_name="usage_records")
    op.drop_index("ix_usage_records_created_at", table_name="usage_records")
    op.drop_table("usage_records")
    op.drop_index("ix_llm_responses_user_id", table_name="llm_responses")
    op.drop_index(
        "ix_llm_responses_selected", table_name="llm_responses", postgresql_where=sa.text("selected")
    )
    op.drop_index("ix_llm_responses_request_id", table_name="llm_responses")
    op.drop_index("ix_llm_responses_provider_id", table_name="llm_responses")
    op.drop_table("llm_responses")
    op.drop_index("ix_chat_session_summaries_user_id", table_name="chat_session_summaries")
    op.drop_index("ix_chat_session_summaries_llm_request_id", table_name="chat_session_summaries")
    op.drop_table("chat_session_summaries")
    op.drop_index("ix_chat_messages_user_id", table_name="chat_messages")
    op.drop_index("ix_chat_messages_llm_request_id", table_name="chat_messages")
    op.drop_table("chat_messages")
    op.drop_index("ix_session_state_user_id", table_name="session_state")
    op.drop_table("session_state")
    op.drop_index("ix_llm_requests_user_id_created_at", table_name="llm_requests")
    op.drop_index("ix_llm_requests_status", table_name="llm_requests")
    op.drop_index("ix_llm_requests_session_id", table_name="llm_requests")
    op.drop_table("llm_requests")
    op.drop_index("ix_chat_history_user_id", table_name="chat_history")
    op.drop_index("ix_chat_history_session_id_created_at", table_name="chat_history")
    op.drop_table("chat_history")
    op.drop_index(
        "uq_chat_sessions_user_id_external_id",
        table_name="chat_sessions",
        postgresql_where=sa.text("external_id IS NOT NULL"),
    )
    op.drop_index("ix_chat_sessions_user_id_created_at", table_name="chat_sessions")
    op.drop_table("chat_sessions")
    op.drop_index("ix_llm_providers_enabled_priority", table_name="llm_providers")
    op.drop_table("llm_providers")
