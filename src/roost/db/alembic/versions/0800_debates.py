"""debates: debate_sessions (owned by created_by), debate_turns and debate_ballots (which
follow their debate), with row-level security.

Revision ID: 0800
Revises: 0710
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0800"
down_revision: str | Sequence[str] | None = "0710"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "debate_sessions",
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=50), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("current_round", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_rounds", sa.Integer(), nullable=False),
        sa.Column(
            "voting_method", sa.String(length=50), server_default=sa.text("'weighted'"), nullable=False
        ),
        sa.Column(
            "positions",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "participants",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("final_winner", sa.String(length=255), nullable=True),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_by", sa.UUID(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("task_id", sa.UUID(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'active', 'voting', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_debate_sessions_status"),
        ),
        sa.CheckConstraint(
            "voting_method IN ('majority', 'weighted', 'borda', 'condorcet')",
            name=op.f("ck_debate_sessions_voting_method"),
        ),
        sa.CheckConstraint("total_rounds >= 1", name=op.f("ck_debate_sessions_total_rounds_positive")),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_debate_sessions_created_by_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_debate_sessions")),
    )
    op.create_index(
        "ix_debate_sessions_created_by_created",
        "debate_sessions",
        ["created_by", sa.literal_column("created_at DESC")],
        unique=False,
    )
    op.create_index("ix_debate_sessions_status", "debate_sessions", ["status"], unique=False)
    op.create_table(
        "debate_ballots",
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.Column("participant_id", sa.String(length=255), nullable=False),
        sa.Column("ranking", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("weight", sa.Numeric(precision=12, scale=6), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "confidence", sa.Numeric(precision=5, scale=4), server_default=sa.text("0"), nullable=False
        ),
        sa.Column(
            "raw_response",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("tokens_used", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("llm_request_id", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["debate_sessions.id"],
            name=op.f("fk_debate_ballots_session_id_debate_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_debate_ballots")),
    )
    op.create_index(
        "uq_debate_ballots_session_participant",
        "debate_ballots",
        ["session_id", "participant_id"],
        unique=True,
    )
    op.create_table(
        "debate_turns",
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.Column("round_number", sa.Integer(), nullable=False),
        sa.Column("turn_number", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.String(length=255), nullable=False),
        sa.Column("position", sa.String(length=255), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "raw_response",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("tokens_used", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("response_time", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "confidence", sa.Numeric(precision=5, scale=4), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("llm_request_id", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("round_number >= 1", name=op.f("ck_debate_turns_round_number_positive")),
        sa.CheckConstraint("turn_number >= 1", name=op.f("ck_debate_turns_turn_number_positive")),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["debate_sessions.id"],
            name=op.f("fk_debate_turns_session_id_debate_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_debate_turns")),
    )
    op.create_index(
        "ix_debate_turns_session_round", "debate_turns", ["session_id", "round_number"], unique=False
    )
    op.create_index(
        "uq_debate_turns_session_turn", "debate_turns", ["session_id", "turn_number"], unique=True
    )
    op.execute("ALTER TABLE debate_sessions ENABLE ROW LEVEL SECURITY")
    op.execute("""CREATE POLICY debate_sessions_tenant ON debate_sessions
        USING (roost_row_visible(created_by)) WITH CHECK (roost_row_visible(created_by))""")
    # Turns and ballots have no owner column of their own: they follow their debate.
    op.execute("ALTER TABLE debate_turns ENABLE ROW LEVEL SECURITY")
    op.execute("""CREATE POLICY debate_turns_tenant ON debate_turns
        USING (EXISTS (SELECT 1 FROM debate_sessions s WHERE s.id = debate_turns.session_id))""")
    op.execute("ALTER TABLE debate_ballots ENABLE ROW LEVEL SECURITY")
    op.execute("""CREATE POLICY debate_ballots_tenant ON debate_ballots
        USING (EXISTS (SELECT 1 FROM debate_sessions s WHERE s.id = debate_ballots.session_id))""")


def downgrade() -> None:
    op.drop_table("debate_ballots")
    op.drop_table("debate_turns")
    op.drop_table("debate_sessions")
