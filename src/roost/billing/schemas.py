"""Bodies and answers of the plans, subscriptions and model prices API.

Money is ``Decimal`` (JSON numbers or strings in, strings out), never float: a price
with more decimals than its column keeps, a negative one or one past the column's range
is a 422, not a rounded value.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from roost.inputs import StrictInput, holds_control

PLAN_KEY_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,63}$"
CURRENCY_PATTERN: Final = r"^[A-Z]{3}$"
MAX_PLAN_PRICE: Final = Decimal(10) ** 10  # exclusive; the column holds 12 integer digits
MAX_CREDITS: Final = 10**12
MAX_TRIAL_DAYS: Final = 365
MAX_PRICE_PER_MILLION: Final = Decimal(10) ** 9  # exclusive
LIMIT_KEYS: Final = ("models_allowed", "max_agents", "max_documents", "runs_per_day")

BillingPeriod = Literal["month", "year"]
SubscriptionStatus = Literal["trialing", "active", "past_due", "paused", "canceled"]



def _currency() -> Any:
    return Field(default=None, pattern=CURRENCY_PATTERN, description=(
        "ISO 4217 code, three upper-case letters (USD, EUR...)"))


def _no_control(value: str | None, field: str) -> str | None:
    if value is not None and holds_control(value):
        raise ValueError(f"{field} contains a control character")
    return value


def _plan_ref(value: str) -> str:
    _no_control(value, "plan")
    return value


# A plan's key or id, as a subscription names it: no NUL (PostgreSQL refuses it with an
# anonymous 400) nor other control characters, a 422 naming the field instead.
PlanRef = Annotated[str, AfterValidator(_plan_ref)]


# --- plans -------------------------------------------------------------------------------


class PlanLimits(StrictInput):
    """A plan's feature limits; a missing or null limit is no limit (unknown keys: 422)."""

    models_allowed: list[str] | None = Field(default=None, max_length=100, description=(
        "Model names or fnmatch globs (gpt-4o*, claude-*); null: every model"))
    max_agents: int | None = Field(default=None, ge=0, le=10**9)
    max_documents: int | None = Field(default=None, ge=0, le=10**12)
    runs_per_day: int | None = Field(default=None, ge=0, le=10**9)

    @field_validator("models_allowed")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or ():
            if not 1 <= len(pattern) <= 255 or pattern != pattern.strip():
                raise ValueError("models_allowed holds 1-255 character patterns without "
                                 "surrounding spaces")
            _no_control(pattern, "models_allowed")
        return value


class PlanFields(StrictInput):
    """Every field optional: PATCH (PlanCreate requires what a plan needs)."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=20_000)
    price: Decimal | None = Field(default=None, ge=0, lt=MAX_PLAN_PRICE, decimal_places=2,
                                  description="Per billing period, at most 2 decimals")
    currency: str | None = _currency()
    billing_period: BillingPeriod | None = None
    included_credits: int | None = Field(default=None, ge=0, le=MAX_CREDITS)
    limits: PlanLimits | None = Field(default=None, description=(
        "Replaces the plan's limits as a whole"))
    trial_days: int | None = Field(default=None, ge=0, le=MAX_TRIAL_DAYS)
    stripe_price_id: str | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("description")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        """Free text (line breaks and tabs allowed), but no NUL: PostgreSQL refuses it."""
        if value is not None and "\x00" in value:
            raise ValueError("text contains a NUL character")
        return value

    @field_validator("stripe_price_id")
    @classmethod
    def _price_id(cls, value: str | None) -> str | None:
        return _no_control(value, "stripe_price_id")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        """Stored without surrounding white space; nothing but white space is no name, and
        no control character (NUL, an ANSI escape...) within: CLI tables print it."""
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("name is empty (or only white space)")
        return _no_control(value, "name")


class PlanCreate(PlanFields):
    key: str = Field(pattern=PLAN_KEY_PATTERN, description=(
        "Lower-case slug used in URLs and the CLI (pro, team-2026)"))
    name: str = Field(min_length=1, max_length=255)
    price: Decimal = Field(ge=0, lt=MAX_PLAN_PRICE, decimal_places=2)
    currency: str = Field(default="USD", pattern=CURRENCY_PATTERN)
    billing_period: BillingPeriod = "month"
    included_credits: int = Field(ge=0, le=MAX_CREDITS)
    trial_days: int = Field(default=0, ge=0, le=MAX_TRIAL_DAYS)


class PlanUpdate(PlanFields):
    active: bool | None = Field(default=None, description="true reactivates a plan")


class PlanLimitsOut(BaseModel):
    models_allowed: list[str] | None = None
    max_agents: int | None = None
    max_documents: int | None = None
    runs_per_day: int | None = None


class PlanOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    key: str
    name: str
    description: str | None
    price: Decimal
    currency: str
    billing_period: str
    included_credits: int
    limits: PlanLimitsOut
    trial_days: int
    active: bool
    stripe_price_id: str | None
    created_at: datetime
    updated_at: datetime

    @field_validator("limits", mode="before")
    @classmethod
    def _limits(cls, value: Any) -> Any:
        if isinstance(value, dict):  # stored JSON: keep the known keys
            return {k: value.get(k) for k in LIMIT_KEYS}
        return value


# --- subscriptions -----------------------------------------------------------------------


class SubscriptionCreate(StrictInput):
    user_id: uuid.UUID | None = Field(default=None, description="The subscriber: a user...")
    group_id: uuid.UUID | None = Field(default=None, description="...or a group (one of the two)")
    plan: PlanRef = Field(min_length=1, max_length=64, description="The plan's key or id")
    trial_days: int | None = Field(default=None, ge=0, le=MAX_TRIAL_DAYS, description=(
        "Overrides the plan's trial days (0: no trial)"))

    @model_validator(mode="after")
    def _one_subscriber(self) -> SubscriptionCreate:
        if (self.user_id is None) == (self.group_id is None):
            raise ValueError("give exactly one of user_id and group_id")
        return self


class ChangePlan(StrictInput):
    plan: PlanRef = Field(min_length=1, max_length=64,
                          description="The new plan's key or id")


class StatusChange(StrictInput):
    reason: str | None = Field(default=None, max_length=500, description="Kept in the audit log")

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        return _no_control(value, "reason")


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID | None
    group_id: uuid.UUID | None
    plan_id: uuid.UUID
    plan_key: str
    status: str
    current_period_start: datetime
    current_period_end: datetime
    trial_end: datetime | None
    credits_limit: int
    credits_used: int
    credits_reserved: int
    balance: int = Field(description="credits_limit - credits_used - credits_reserved")
    price: Decimal = Field(description="The plan's price this period is billed at (a plan's "
                                       "new price applies from the next period)")
    currency: str
    billing_period: str
    stripe_subscription_id: str | None
    stripe_customer_id: str | None
    created_at: datetime
    updated_at: datetime
    canceled_at: datetime | None


# --- model prices ------------------------------------------------------------------------


class PriceFields(StrictInput):
    input_per_million: Decimal | None = Field(
        default=None, ge=0, lt=MAX_PRICE_PER_MILLION, decimal_places=6,
        description="Per million input tokens, at most 6 decimals")
    output_per_million: Decimal | None = Field(
        default=None, ge=0, lt=MAX_PRICE_PER_MILLION, decimal_places=6,
        description="Per million output tokens, at most 6 decimals")
    currency: str | None = _currency()
    note: str | None = Field(default=None, max_length=2000)

    @field_validator("note")
    @classmethod
    def _note(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("note contains a NUL character")
        return value


class PriceCreate(PriceFields):
    model_pattern: str = Field(min_length=1, max_length=255, description=(
        "An exact model name, or an fnmatch glob (gpt-4o*): an exact name beats a glob, "
        "the longest matching glob beats shorter ones"))
    input_per_million: Decimal = Field(ge=0, lt=MAX_PRICE_PER_MILLION, decimal_places=6)
    output_per_million: Decimal = Field(ge=0, lt=MAX_PRICE_PER_MILLION, decimal_places=6)
    currency: str = Field(default="USD", pattern=CURRENCY_PATTERN)

    @field_validator("model_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if value != value.strip() or any(c.isspace() for c in value):
            raise ValueError("model_pattern contains white space")
        _no_control(value, "model_pattern")
        return value


class PriceUpdate(PriceFields):
    pass


class PriceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    model_pattern: str
    input_per_million: Decimal
    output_per_million: Decimal
    currency: str
    note: str | None
    created_at: datetime
    updated_at: datetime
