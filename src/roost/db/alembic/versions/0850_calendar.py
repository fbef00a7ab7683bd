"""calendar: calendars and events (seed 001's tables with what RFC 5545 needs: uid, time
zone, all-day, RDATE/EXDATE, the derived recurrence_end), owner-only row-level security
(an event copies its calendar's user_id).

Revision ID: 0850
Revises: 0840
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0850"
down_revision: str | Sequence[str] | None = "0840"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNED = "roost_row_visible(user_id)"
JSONB = postgresql.JSONB(astext_type=sa.Text())
TIMES = postgresql.ARRAY(sa.DateTime(timezone=True))


def upgrade() -> None:
    op.create_table(
        "calendars",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=255), server_default=sa.text("'Default Calendar'"),
                  nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("timezone", sa.String(length=64), server_default=sa.text("'UTC'"),
                  nullable=False),
        sa.Column("color", sa.String(length=7), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("length(btrim(name)) > 0", name=op.f("ck_calendars_name_not_blank")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_calendars_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendars")),
    )
    op.create_index("uq_calendars_user_name", "calendars", ["user_id", "name"], unique=True)
    op.create_table(
        "events",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("calendar_id", sa.UUID(), nullable=False),
        sa.Column("uid", sa.String(length=255), nullable=False),
        sa.Column("google_event_id", sa.String(length=255), nullable=True),
        sa.Column("summary", sa.String(length=1000), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default=sa.text("'UTC'"),
                  nullable=False),
        sa.Column("all_day", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("category", sa.String(length=50), server_default=sa.text("'general'"),
                  nullable=False),
        sa.Column("movability_score", sa.Float(), server_default=sa.text("0.5"), nullable=False),
        sa.Column("is_movable", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("semantic_keywords", JSONB, nullable=True),
        sa.Column("semantic_embedding_id", sa.String(length=255), nullable=True),
        sa.Column("semantic_category", sa.String(length=100), nullable=True),
        sa.Column("semantic_tags", JSONB, nullable=True),
        sa.Column("event_type", sa.String(length=50), server_default=sa.text("'meeting'"),
                  nullable=False),
        sa.Column("attendees", JSONB, nullable=True),
        sa.Column("location", sa.String(length=1000), nullable=True),
        sa.Column("recurrence_rule", sa.Text(), nullable=True),
        sa.Column("rdates", TIMES, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("exdates", TIMES, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("recurrence_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminder_minutes", sa.Integer(), server_default=sa.text("15"), nullable=True),
        sa.Column("importance_weight", sa.Float(), server_default=sa.text("1.0"), nullable=False),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'confirmed'"),
                  nullable=False),
        sa.Column("transparent", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("status IN ('confirmed', 'tentative', 'cancelled')",
                           name=op.f("ck_events_status")),
        sa.CheckConstraint("end_time >= start_time", name=op.f("ck_events_end_after_start")),
        sa.CheckConstraint("movability_score >= 0 AND movability_score <= 1",
                           name=op.f("ck_events_movability_score_range")),
        sa.ForeignKeyConstraint(["calendar_id"], ["calendars.id"],
                                name=op.f("fk_events_calendar_id_calendars"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_events_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_calendar_range", "events",
                    ["calendar_id", "start_time", "recurrence_end"], unique=False)
    op.create_index("ix_events_user_range", "events",
                    ["user_id", "start_time", "recurrence_end"], unique=False)
    op.create_index("uq_events_calendar_uid", "events", ["calendar_id", "uid"], unique=True)
    op.create_index("uq_events_user_google_event_id", "events", ["user_id", "google_event_id"],
                    unique=True)
    for table in ("calendars", "events"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {table}_owner ON {table} FOR ALL USING ({OWNED}) "
                   f"WITH CHECK ({OWNED})")


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("calendars")
