"""Tables of the debates domain: HelixAgent's ``debate_sessions`` and ``debate_turns``
(docs/seed-map.toml), and ``debate_ballots``, every participant's ranking of the positions.

A debate is its creator's (``created_by``, the owner; row-level security, migration 0800):
turns and ballots follow their debate.  Durability (roost.debates.runner): a turn is
stored once, unique ``(session_id, turn_number)``, in the transaction that records its
model call; a resumed debate skips the turns and ballots already stored.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, Numeric, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, UUIDPrimaryKey
from roost.identity import models as _identity_models  # noqa: F401 - "users", for the foreign keys

DEBATE_STATUSES: Final = ("pending", "active", "voting", "completed", "failed", "cancelled")
TERMINAL_STATUSES: Final = ("completed", "failed", "cancelled")
VOTING_METHODS: Final = ("majority", "weighted", "borda", "condorcet")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class DebateSession(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "debate_sessions"
    __table_args__ = (
        CheckConstraint(_in("status", DEBATE_STATUSES), name="status"),
        CheckConstraint(_in("voting_method", VOTING_METHODS), name="voting_method"),
        CheckConstraint("total_rounds >= 1", name="total_rounds_positive"),
        Index("ix_debate_sessions_created_by_created", "created_by", text("created_at DESC")),
        Index("ix_debate_sessions_status", "status"),
    )

    topic: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(50), server_default=text("'pending'"),
                                        default="pending")
    current_round: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    total_rounds: Mapped[int] = mapped_column(Integer)
    voting_method: Mapped[str] = mapped_column(String(50), server_default=text("'weighted'"),
                                               default="weighted")
    # ["position", ...] in the creator's order (the order breaks ties: docs/debates.md).
    positions: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"),
                                                 default=list)
    # [{"id", "agent_id"?, "model"?, "provider"?, "position", "weight"}, ...] as resolved.
    participants: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"),
                                                    default=list)
    final_winner: Mapped[str | None] = mapped_column(String(255))
    # "metadata" is reserved on declarative classes; the column keeps the seed's name.
    # Holds "result" (the tally: roost.debates.voting.Result.as_json) once decided.
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", server_default=text("'{}'::jsonb"), default=dict)
    created_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    error_message: Mapped[str | None] = mapped_column(Text)
    task_id: Mapped[uuid.UUID | None]  # the queue job running it (background_tasks.id)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class DebateTurn(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "debate_turns"
    __table_args__ = (
        CheckConstraint("round_number >= 1", name="round_number_positive"),
        CheckConstraint("turn_number >= 1", name="turn_number_positive"),
        Index("uq_debate_turns_session_turn", "session_id", "turn_number", unique=True),
        Index("ix_debate_turns_session_round", "session_id", "round_number"),
    )

    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("debate_sessions.id", ondelete="CASCADE"))
    round_number: Mapped[int] = mapped_column(Integer)
    turn_number: Mapped[int] = mapped_column(Integer)
    participant_id: Mapped[str] = mapped_column(String(255))
    position: Mapped[str] = mapped_column(String(255))
    content: Mapped[str] = mapped_column(Text)
    raw_response: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"),
                                                         default=dict)
    tokens_used: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    response_time: Mapped[int] = mapped_column(server_default=text("0"), default=0)  # ms
    confidence: Mapped[Decimal] = mapped_column(Numeric(5, 4), server_default=text("0"),
                                                default=Decimal(0))
    llm_request_id: Mapped[uuid.UUID | None]


class DebateBallot(UUIDPrimaryKey, CreatedAt, Base):
    """One participant's ranking of every position (best first), as the model answered."""

    __tablename__ = "debate_ballots"
    __table_args__ = (
        Index("uq_debate_ballots_session_participant", "session_id", "participant_id",
              unique=True),
    )

    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("debate_sessions.id", ondelete="CASCADE"))
    participant_id: Mapped[str] = mapped_column(String(255))
    ranking: Mapped[list[Any]] = mapped_column()
    weight: Mapped[Decimal] = mapped_column(Numeric(12, 6), server_default=text("1"),
                                            default=Decimal(1))
    confidence: Mapped[Decimal] = mapped_column(Numeric(5, 4), server_default=text("0"),
                                                default=Decimal(0))
    raw_response: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"),
                                                         default=dict)
    tokens_used: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    llm_request_id: Mapped[uuid.UUID | None]
