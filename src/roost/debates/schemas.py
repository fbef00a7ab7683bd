"""Bodies and answers of the debates API."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from roost.debates.prompts import position_key
from roost.inputs import StrictInput, is_blank, strip_invisible
from roost.llm.schemas import ModelName, ProviderName

MAX_PARTICIPANTS: Final = 20
MAX_POSITIONS: Final = 20
MAX_ROUNDS: Final = 20

VotingMethod = Literal["majority", "weighted", "borda", "condorcet"]
DebateStatus = Literal["pending", "active", "voting", "completed", "failed", "cancelled"]


class ParticipantIn(StrictInput):
    """An agent of yours (its instructions and preferred model), or a model (optionally on
    one named provider)."""

    refuse_nul = True  # stored as text and jsonb, which hold no NUL

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
    agent_id: uuid.UUID | None = None
    # As an agent's preferred model and provider: blank or multi-line names are a 422 at
    # once, not an unknown model after the earlier participants' turns were paid for.
    model: ModelName | None = None
    provider: ProviderName | None = None
    position: str | None = Field(default=None, description="The position it argues; default: "
                                                           "round-robin over the positions")
    weight: float = Field(default=1.0, ge=0.000001, le=1000,
                          description="Its ballot's weight (weighted, borda, condorcet): "
                                      "0.000001 to 1000, at most 6 decimal places")

    @field_validator("weight")
    @classmethod
    def _six_decimals(cls, value: float) -> float:
        """Weights are stored as NUMERIC(12, 6) and counted exactly: one with more decimal
        places would be rounded (1.0000004 tying with 1), so it is refused."""
        exponent = Decimal(repr(value)).as_tuple().exponent
        if isinstance(exponent, int) and exponent < -6:
            raise ValueError("a weight has at most 6 decimal places")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.agent_id is None) == (self.model is None):
            raise ValueError("give either agent_id or model")
        if self.provider is not None and self.model is None:
            raise ValueError("provider goes with model (an agent names its own provider)")
        return self


class DebateCreate(StrictInput):
    refuse_nul = True  # stored as text and jsonb, which hold no NUL
    topic: str = Field(min_length=1, max_length=4000)
    description: str | None = Field(default=None, max_length=20_000)
    positions: list[str] = Field(min_length=2, max_length=MAX_POSITIONS)
    participants: list[ParticipantIn] = Field(min_length=2, max_length=MAX_PARTICIPANTS)
    total_rounds: int = Field(default=2, ge=1, le=MAX_ROUNDS)
    voting_method: VotingMethod = "weighted"

    @field_validator("topic")
    @classmethod
    def _topic_not_blank(cls, value: str) -> str:
        if is_blank(value):  # white space alone gives the participants nothing to argue
            raise ValueError("the topic must not be blank")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # Stored composed (NFC): two spellings of one text are one position.
        # Surrounding invisible characters (a pasted zero-width space) dropped too: no
        # ballot names them, and the position was unknown to every ballot.
        cleaned = [strip_invisible(unicodedata.normalize("NFC", p)) for p in self.positions]
        if any(is_blank(p) or len(p) > 255 for p in cleaned):
            raise ValueError("every position is 1 to 255 characters (not blank)")
        if len({position_key(p) for p in cleaned}) != len(cleaned):
            raise ValueError("the positions must be distinct")
        self.positions = cleaned
        ids = [p.id for p in self.participants]
        if len(set(ids)) != len(ids):
            raise ValueError("participant ids must be distinct")
        for p in self.participants:
            if p.position is not None:
                match = [q for q in cleaned if position_key(q) == position_key(p.position)]
                if not match:
                    raise ValueError(f"participant {p.id!r} argues a position that is not "
                                     "one of the positions")
                p.position = match[0]
        return self


class TurnOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    round_number: int
    turn_number: int
    participant_id: str
    position: str
    content: str
    tokens_used: int
    response_time: int
    confidence: Decimal
    llm_request_id: uuid.UUID | None
    created_at: datetime


class BallotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    participant_id: str
    ranking: list[str]
    weight: Decimal
    confidence: Decimal
    tokens_used: int
    llm_request_id: uuid.UUID | None
    created_at: datetime


class DebateOut(BaseModel):
    id: uuid.UUID
    topic: str
    description: str | None
    status: DebateStatus
    current_round: int
    total_rounds: int
    voting_method: VotingMethod
    positions: list[str]
    participants: list[dict[str, Any]]
    final_winner: str | None
    result: dict[str, Any] | None = Field(description="The tally (docs/debates.md) once "
                                                      "decided")
    metadata: dict[str, Any]
    error_message: str | None
    created_by: uuid.UUID
    task_id: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class DebateDetail(DebateOut):
    turns: list[TurnOut]
    ballots: list[BallotOut]
