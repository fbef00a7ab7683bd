"""Answers and bodies of the usage API: reports (``/api/v1/billing/usage`` and
``/api/v1/llm/usage``) and the ledger's batch ingest (``/api/v1/billing/usage-events``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints
from pydantic_core import PydanticCustomError

from roost.billing.usage import GroupBy
from roost.identity.common import nfc
from roost.inputs import IsoDatetime, StrictInput, holds_control, is_blank

MAX_BATCH = 10_000
MAX_EVENT_COST = Decimal("1000000")  # one event's cost, sent or from the price table


class UsageRowOut(BaseModel):
    key: str | None = Field(description="The UTC day (YYYY-MM-DD), the model, the request "
                                        "type, or the user's/provider's/agent's/API key's "
                                        "id; null for events without one")
    username: str | None = Field(default=None, description="With group_by=user")
    label: str | None = Field(default=None, description="With group_by=provider, agent or "
                                                        "api_key: its name")
    requests: int
    tokens_input: int
    tokens_output: int
    credits_used: int
    cost: Decimal | None = Field(description="Money in `currency`, from the model price table "
                                             "(a decimal string); null when the row's usage "
                                             "was priced in several currencies (see `costs`)")
    currency: str | None = Field(default=None, description="The currency of `cost`; null "
                                                           "when several, or not known")
    costs: dict[str, Decimal] = Field(default_factory=dict, description="The cost per "
                                      "currency (amounts in two currencies never added)")
    avg_latency_ms: float | None
    failures: int


class UsageTotalsOut(BaseModel):
    requests: int
    tokens_input: int
    tokens_output: int
    credits_used: int
    cost: Decimal | None = Field(description="In `currency`; null when several (see `costs`)")
    currency: str | None = None
    costs: dict[str, Decimal] = Field(default_factory=dict)
    failures: int


class UsageReportOut(BaseModel):
    group_by: GroupBy
    source: Literal["postgres", "clickhouse"] = "postgres"
    since: datetime
    until: datetime = Field(description="Exclusive")
    rows: list[UsageRowOut]
    totals: UsageTotalsOut


def _no_control(value: str) -> str:
    if holds_control(value):
        raise PydanticCustomError("control_character", "must not contain a control character")
    if is_blank(value):  # zero-width characters only: a row no one can tell from another
        raise PydanticCustomError("blank", "must not be blank (white space or invisible "
                                           "characters only)")
    return value


# The keys Roost gives its own rows (a model call's ``llm:<request id>``, a tool call's
# ``tool:<tool run id>``, ``once:<uuid>`` for rows older than keys): a client's event under
# one would be taken for Roost's, and Roost's own row then dropped as its replay.
ROOST_KEY_PREFIXES = ("llm:", "tool:", "once:")


def _not_roosts(value: str) -> str:
    if value.lower().startswith(ROOST_KEY_PREFIXES):
        raise PydanticCustomError(
            "reserved_key", "keys starting with llm:, tool: or once: are Roost's own")
    return value


Key = Annotated[str, StringConstraints(min_length=1, max_length=200,
                                       pattern=r"^[\x21-\x7e]+$"), AfterValidator(_not_roosts)]


def _composed(value: str) -> str:
    """``value`` in NFC: a model typed with a decomposed "é" (macOS keyboards) is the same
    name, one report row and one price, as the gateway's rows write it."""
    value = nfc(value)
    if len(value) > 255:  # composing rarely lengthens a name; the column holds 255
        raise PydanticCustomError("string_too_long", "must have at most 255 characters")
    return value


# A model name is stored as text and shown in reports: no NUL (PostgreSQL refuses it with
# an anonymous 400) nor other control characters, a 422 naming the field instead.
Name = Annotated[str, StringConstraints(min_length=1, max_length=255),
                 AfterValidator(_no_control), AfterValidator(_composed)]
Count = Annotated[int, Field(ge=0, le=1_000_000_000)]


class UsageEventIn(StrictInput):
    """One billable event reported by a client (its own metering, a tool it ran)."""

    idempotency_key: Key = Field(description="Unique per event, derived from what caused "
                                             "it: a replay with the same key is ignored")
    user_id: uuid.UUID
    request_type: Annotated[str, StringConstraints(min_length=1, max_length=50,
                                                   pattern=r"^[a-z0-9_.:-]+$")]
    model: Name | None = None
    tokens_input: Count = 0
    tokens_output: Count = 0
    credits: Count | None = Field(default=None, description="Default: from the tokens "
                                                            "(ROOST_LLM_CREDITS_PER_1K_TOKENS)")
    cost: Annotated[Decimal, Field(ge=0, le=MAX_EVENT_COST, max_digits=18,
                                   decimal_places=6)] | None = Field(
        default=None, description="Default: from the model price table")
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    latency_ms: Annotated[int, Field(ge=0, le=86_400_000)] | None = None
    success: bool = True
    agent_id: uuid.UUID | None = None
    occurred_at: IsoDatetime | None = Field(default=None, description="Default: now")


class UsageEventsIn(StrictInput):
    events: list[UsageEventIn] = Field(min_length=1, max_length=MAX_BATCH)


class UsageEventsOut(BaseModel):
    accepted: int = Field(description="New events written to the ledger")
    duplicates: int = Field(description="Events whose idempotency key was already there")
    credits_charged: int
