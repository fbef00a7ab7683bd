"""Billing and analytics: plans, subscriptions (seed 004), credit_reservations,
model_prices, invoices, invoice_sequences, stripe_events; usage_records becomes the
idempotent ledger (idempotency_key, cost, currency, api_key_id, subscription_id);
clickhouse_analytics and streaming_analytics (HelixAgent, seed 002).

Revision ID: 0910
Revises: 0900
Create Date: 2026-12-02

Row-level security: plans and model_prices are everyone's to read, the administrators'
to change; subscriptions, reservations and invoices are their user's or their group's
(``roost_row_visible(user_id, group_id)``) and only administrators create or delete
them (a member's own calls update the subscription's credit counters); the outbox is
the administrators' (anyone adds events about themselves); streaming rows are their
user's; stripe_events and invoice_sequences have no policy for users at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0910"
down_revision: str | Sequence[str] | None = "0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


GLOBAL_READ = ("plans", "model_prices")
SUBSCRIBER_TABLES = ("subscriptions", "credit_reservations", "invoices")
RLS_TABLES = (
    *GLOBAL_READ,
    *SUBSCRIBER_TABLES,
    "clickhouse_analytics",
    "streaming_analytics",
    "stripe_events",
    "invoice_sequences",
)
SUBSCRIBER = "roost_row_visible(user_id, group_id)"
POLICIES = (
    *(
        stmt
        for t in GLOBAL_READ
        for stmt in (
            f"CREATE POLICY {t}_read ON {t} FOR SELECT USING (true)",
            f"CREATE POLICY {t}_write ON {t} FOR ALL USING (roost_is_admin()) WITH CHECK (roost_is_admin())",
        )
    ),
    f"CREATE POLICY subscriptions_read ON subscriptions FOR SELECT USING ({SUBSCRIBER})",
    f"CREATE POLICY subscriptions_meter ON subscriptions FOR UPDATE USING ({SUBSCRIBER}) "
    f"WITH CHECK ({SUBSCRIBER})",
    "CREATE POLICY subscriptions_admin ON subscriptions FOR ALL USING (roost_is_admin()) "
    "WITH CHECK (roost_is_admin())",
    "CREATE POLICY credit_reservations_owner ON credit_reservations "
    "USING (roost_is_admin() OR roost_row_visible(user_id)) "
    "WITH CHECK (roost_is_admin() OR roost_row_visible(user_id))",
    f"CREATE POLICY invoices_read ON invoices FOR SELECT USING ({SUBSCRIBER})",
    "CREATE POLICY invoices_admin ON invoices FOR ALL USING (roost_is_admin()) WITH CHECK (roost_is_admin())",
    "CREATE POLICY clickhouse_analytics_admin ON clickhouse_analytics FOR ALL "
    "USING (roost_is_admin()) WITH CHECK (roost_is_admin())",
    "CREATE POLICY clickhouse_analytics_emit ON clickhouse_analytics FOR INSERT "
    "WITH CHECK (user_id IS NULL OR roost_row_visible(user_id))",
    "CREATE POLICY streaming_analytics_owner ON streaming_analytics "
    "USING (roost_row_visible(user_id)) WITH CHECK (roost_row_visible(user_id))",
    "CREATE POLICY stripe_events_admin ON stripe_events FOR ALL USING (roost_is_admin()) "
    "WITH CHECK (roost_is_admin())",
    "CREATE POLICY invoice_sequences_admin ON invoice_sequences FOR ALL "
    "USING (roost_is_admin()) WITH CHECK (roost_is_admin())",
)

# Sensible defaults (USD per million tokens, list prices of late 2026; an administrator
# edits them).  A model no pattern matches costs nothing (local models).
DEFAULT_PRICES = (
    ("gpt-4o-mini*", "0.15", "0.60"),
    ("gpt-4o*", "2.50", "10.00"),
    ("gpt-4.1-mini*", "0.40", "1.60"),
    ("gpt-4.1*", "2.00", "8.00"),
    ("o3-mini*", "1.10", "4.40"),
    ("claude-3-5-haiku*", "0.80", "4.00"),
    ("claude-*haiku*", "1.00", "5.00"),
    ("claude-*sonnet*", "3.00", "15.00"),
    ("claude-*opus*", "15.00", "75.00"),
    ("gemini-2.0-flash*", "0.10", "0.40"),
    ("gemini-*pro*", "1.25", "10.00"),
    ("text-embedding-3-small", "0.02", "0"),
    ("text-embedding-3-large", "0.13", "0"),
)


def upgrade() -> None:
    op.create_table(
        "clickhouse_analytics",
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("event_data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("session_id", sa.UUID(), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("exported", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("export_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clickhouse_analytics")),
    )
    op.create_index(
        "ix_clickhouse_analytics_unexported",
        "clickhouse_analytics",
        ["timestamp"],
        unique=False,
        postgresql_where=sa.text("NOT exported"),
    )
    op.create_index(
        "ix_clickhouse_analytics_user_id_timestamp",
        "clickhouse_analytics",
        ["user_id", "timestamp"],
        unique=False,
    )
    op.create_table(
        "invoice_sequences",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("last_value", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_invoice_sequences")),
    )
    op.create_table(
        "model_prices",
        sa.Column("model_pattern", sa.String(length=255), nullable=False),
        sa.Column("input_per_million", sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column("output_per_million", sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default=sa.text("'USD'"), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_model_prices_currency_iso")),
        sa.CheckConstraint(
            "input_per_million >= 0 AND output_per_million >= 0",
            name=op.f("ck_model_prices_prices_not_negative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_prices")),
        sa.UniqueConstraint("model_pattern", name=op.f("uq_model_prices_model_pattern")),
    )
    op.create_table(
        "plans",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("price", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default=sa.text("'USD'"), nullable=False),
        sa.Column("billing_period", sa.String(length=16), server_default=sa.text("'month'"), nullable=False),
        sa.Column("included_credits", sa.BigInteger(), nullable=False),
        sa.Column(
            "limits",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("trial_days", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("stripe_price_id", sa.String(length=100), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("billing_period IN ('month', 'year')", name=op.f("ck_plans_billing_period")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_plans_currency_iso")),
        sa.CheckConstraint("included_credits >= 0", name=op.f("ck_plans_credits_not_negative")),
        sa.CheckConstraint("price >= 0", name=op.f("ck_plans_price_not_negative")),
        sa.CheckConstraint("trial_days >= 0", name=op.f("ck_plans_trial_days_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("key", name=op.f("uq_plans_key")),
    )
    op.create_table(
        "streaming_analytics",
        sa.Column("stream_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("chunk_number", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.BigInteger(), nullable=False),
        sa.Column("tokens_delta", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("provider", sa.String(length=255), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_streaming_analytics")),
    )
    op.create_index(
        "ix_streaming_analytics_model_timestamp", "streaming_analytics", ["model", "timestamp"], unique=False
    )
    op.create_index("ix_streaming_analytics_stream_id", "streaming_analytics", ["stream_id"], unique=False)
    op.create_index(
        "ix_streaming_analytics_user_id_timestamp",
        "streaming_analytics",
        ["user_id", "timestamp"],
        unique=False,
    )
    op.create_table(
        "subscriptions",
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("group_id", sa.UUID(), nullable=True),
        sa.Column("plan_id", sa.UUID(), nullable=False),
        sa.Column("stripe_subscription_id", sa.String(length=100), nullable=True),
        sa.Column("stripe_customer_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'active'"), nullable=False),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trial_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("credits_used", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("credits_limit", sa.BigInteger(), nullable=False),
        sa.Column("credits_reserved", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.CheckConstraint(
            "status IN ('trialing', 'active', 'past_due', 'paused', 'canceled')",
            name=op.f("ck_subscriptions_status"),
        ),
        sa.CheckConstraint(
            "(user_id IS NULL) <> (group_id IS NULL)", name=op.f("ck_subscriptions_one_subscriber")
        ),
        sa.CheckConstraint("credits_limit >= 0", name=op.f("ck_subscriptions_limit_not_negative")),
        sa.CheckConstraint("credits_reserved >= 0", name=op.f("ck_subscriptions_reserved_not_negative")),
        sa.CheckConstraint("credits_used >= 0", name=op.f("ck_subscriptions_used_not_negative")),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_subscriptions_group_id_groups"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_subscriptions_plan_id_plans"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_subscriptions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint("stripe_subscription_id", name=op.f("uq_subscriptions_stripe_subscription_id")),
    )
    op.create_index("ix_subscriptions_period_end", "subscriptions", ["current_period_end"], unique=False)
    op.create_index("ix_subscriptions_plan_id", "subscriptions", ["plan_id"], unique=False)
    op.create_index(
        "uq_subscriptions_live_group",
        "subscriptions",
        ["group_id"],
        unique=True,
        postgresql_where=sa.text("status <> 'canceled' AND group_id IS NOT NULL"),
    )
    op.create_index(
        "uq_subscriptions_live_user",
        "subscriptions",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("status <> 'canceled' AND user_id IS NOT NULL"),
    )
    op.create_table(
        "credit_reservations",
        sa.Column("subscription_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("actual", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'held'"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('held', 'settled', 'released')", name=op.f("ck_credit_reservations_status")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_credit_reservations_amount_positive")),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_credit_reservations_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credit_reservations_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_reservations")),
    )
    op.create_index(
        "ix_credit_reservations_held",
        "credit_reservations",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'held'"),
    )
    op.create_index(
        "ix_credit_reservations_subscription_id", "credit_reservations", ["subscription_id"], unique=False
    )
    op.create_table(
        "invoices",
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("subscription_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("group_id", sa.UUID(), nullable=True),
        sa.Column("plan_id", sa.UUID(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("subtotal", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("tax_rate", sa.Numeric(precision=6, scale=4), nullable=False),
        sa.Column("tax", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("total", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'open'"), nullable=False),
        sa.Column("stripe_invoice_id", sa.String(length=100), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('open', 'paid', 'void')", name=op.f("ck_invoices_status")),
        sa.CheckConstraint("period_end > period_start", name=op.f("ck_invoices_period_ordered")),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_invoices_group_id_groups"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_invoices_plan_id_plans"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_invoices_subscription_id_subscriptions"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_invoices_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("number", name="uq_invoices_number"),
        sa.UniqueConstraint("subscription_id", "period_start", name="uq_invoices_subscription_period"),
    )
    op.create_index("ix_invoices_group_id", "invoices", ["group_id"], unique=False)
    op.create_index("ix_invoices_user_id", "invoices", ["user_id"], unique=False)
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("subscription_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_stripe_events_subscription_id_subscriptions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    # Existing rows get the key their writer would have given them (one row per request).
    op.add_column("usage_records", sa.Column("idempotency_key", sa.String(length=200), nullable=True))
    op.execute(
        "UPDATE usage_records SET idempotency_key = CASE WHEN llm_request_id IS NOT NULL "
        "THEN 'llm:' || llm_request_id::text ELSE 'once:' || id::text END"
    )
    op.execute(
        "UPDATE usage_records u SET idempotency_key = 'once:' || u.id::text "
        "WHERE EXISTS (SELECT 1 FROM usage_records o WHERE o.idempotency_key = "
        "u.idempotency_key AND o.id < u.id)"
    )
    op.alter_column("usage_records", "idempotency_key", nullable=False)
    op.alter_column("usage_records", "idempotency_key",
                    server_default=sa.text("('once:'::text || (gen_random_uuid())::text)"))
    op.add_column(
        "usage_records",
        sa.Column("cost", sa.Numeric(precision=18, scale=6), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "usage_records",
        sa.Column("currency", sa.String(length=3), server_default=sa.text("'USD'"), nullable=False),
    )
    op.add_column("usage_records", sa.Column("api_key_id", sa.UUID(), nullable=True))
    op.add_column("usage_records", sa.Column("subscription_id", sa.UUID(), nullable=True))
    op.create_index("ix_usage_records_api_key_id", "usage_records", ["api_key_id"], unique=False)
    op.create_index(
        "ix_usage_records_subscription_id_created_at",
        "usage_records",
        ["subscription_id", "created_at"],
        unique=False,
    )
    op.create_unique_constraint("uq_usage_records_idempotency_key", "usage_records", ["idempotency_key"])
    op.create_foreign_key(
        op.f("fk_usage_records_subscription_id_subscriptions"),
        "usage_records",
        "subscriptions",
        ["subscription_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_foreign_key(
        op.f("fk_usage_records_api_key_id_api_keys"),
        "usage_records",
        "api_keys",
        ["api_key_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.execute(
        "ALTER TABLE usage_records ADD CONSTRAINT ck_usage_records_amounts_not_negative "
        "CHECK (tokens_input >= 0 AND tokens_output >= 0 AND credits_used >= 0) NOT VALID"
    )
    op.execute(
        "ALTER TABLE usage_records ADD CONSTRAINT ck_usage_records_cost_not_negative CHECK (cost >= 0)"
    )
    # Whether anyone is metered at all, for every transaction whatever its row-level
    # scope, and a NOTIFY when that may change (not on credit counters: status only), so
    # each process caches the answer (roost.billing.credits) and an install without
    # subscriptions pays no lookup per model or tool call.
    op.execute("""
CREATE FUNCTION roost_billing_active() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT EXISTS (SELECT 1 FROM subscriptions WHERE status <> 'canceled')
$$""")
    op.execute("""
CREATE FUNCTION roost_billing_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('roost_billing', TG_OP);
  RETURN NULL;
END $$""")
    op.execute("CREATE TRIGGER subscriptions_notify AFTER INSERT OR UPDATE OF status OR DELETE "
               "ON subscriptions FOR EACH STATEMENT EXECUTE FUNCTION roost_billing_changed()")
    op.execute("CREATE TRIGGER subscriptions_notify_truncate AFTER TRUNCATE ON subscriptions "
               "FOR EACH STATEMENT EXECUTE FUNCTION roost_billing_changed()")
    for table in RLS_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for policy in POLICIES:
        op.execute(policy)
    prices = sa.table(
        "model_prices",
        sa.column("id", sa.UUID()),
        sa.column("model_pattern", sa.String()),
        sa.column("input_per_million", sa.Numeric()),
        sa.column("output_per_million", sa.Numeric()),
        sa.column("note", sa.Text()),
    )
    op.bulk_insert(
        prices,
        [
            {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, f"roost:model_price:{pattern}"),
                "model_pattern": pattern,
                "input_per_million": Decimal(inp),
                "output_per_million": Decimal(out),
                "note": "factory default",
            }
            for pattern, inp, out in DEFAULT_PRICES
        ],
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER subscriptions_notify_truncate ON subscriptions")
    op.execute("DROP TRIGGER subscriptions_notify ON subscriptions")
    op.execute("DROP FUNCTION roost_billing_changed()")
    op.execute("DROP FUNCTION roost_billing_active()")
    op.drop_constraint(op.f("ck_usage_records_cost_not_negative"), "usage_records", type_="check")
    op.drop_constraint(op.f("ck_usage_records_amounts_not_negative"), "usage_records", type_="check")
    op.drop_constraint(op.f("fk_usage_records_api_key_id_api_keys"), "usage_records", type_="foreignkey")
    op.drop_constraint(
        op.f("fk_usage_records_subscription_id_subscriptions"), "usage_records", type_="foreignkey"
    )
    op.drop_constraint("uq_usage_records_idempotency_key", "usage_records", type_="unique")
    op.drop_index("ix_usage_records_subscription_id_created_at", table_name="usage_records")
    op.drop_index("ix_usage_records_api_key_id", table_name="usage_records")
    op.drop_column("usage_records", "subscription_id")
    op.drop_column("usage_records", "api_key_id")
    op.drop_column("usage_records", "currency")
    op.drop_column("usage_records", "cost")
    op.drop_column("usage_records", "idempotency_key")
    op.drop_table("stripe_events")
    op.drop_index("ix_invoices_user_id", table_name="invoices")
    op.drop_index("ix_invoices_group_id", table_name="invoices")
    op.drop_table("invoices")
    op.drop_index("ix_credit_reservations_subscription_id", table_name="credit_reservations")
    op.drop_index(
        "ix_credit_reservations_held",
        table_name="credit_reservations",
        postgresql_where=sa.text("status = 'held'"),
    )
    op.drop_table("credit_reservations")
    op.drop_index(
        "uq_subscriptions_live_user",
        table_name="subscriptions",
        postgresql_where=sa.text("status <> 'canceled' AND user_id IS NOT NULL"),
    )
    op.drop_index(
        "uq_subscriptions_live_group",
        table_name="subscriptions",
        postgresql_where=sa.text("status <> 'canceled' AND group_id IS NOT NULL"),
    )
    op.drop_index("ix_subscriptions_plan_id", table_name="subscriptions")
    op.drop_index("ix_subscriptions_period_end", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_index("ix_streaming_analytics_user_id_timestamp", table_name="streaming_analytics")
    op.drop_index("ix_streaming_analytics_stream_id", table_name="streaming_analytics")
    op.drop_index("ix_streaming_analytics_model_timestamp", table_name="streaming_analytics")
    op.drop_table("streaming_analytics")
    op.drop_table("plans")
    op.drop_table("model_prices")
    op.drop_table("invoice_sequences")
    op.drop_index("ix_clickhouse_analytics_user_id_timestamp", table_name="clickhouse_analytics")
    op.drop_index(
        "ix_clickhouse_analytics_unexported",
        table_name="clickhouse_analytics",
        postgresql_where=sa.text("NOT exported"),
    )
    op.drop_table("clickhouse_analytics")
