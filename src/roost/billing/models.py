"""Billing tables: ``plans``, ``subscriptions`` and ``usage_records`` (seed 004, every
column: docs/seed-map.toml), with what the seed's diagram only names, designed here:
``credit_reservations``, ``model_prices``, ``invoices``, ``invoice_sequences`` and
``stripe_events``.

A subscription keeps its plan's terms (price, currency, billing period; its included
credits are ``credits_limit``) for the period it is in: a plan edited meanwhile applies
from the subscriber's next period (roost.billing.renewals).

Credits are integers; money is ``Numeric`` (``decimal.Decimal`` in Python), never float.
A subscription's balance is ``credits_limit - credits_used - credits_reserved``: a
reservation moves credits into ``credits_reserved`` with one conditional UPDATE, so
concurrent callers can never reserve past the limit (roost.billing.credits).

``usage_records`` is the append-only ledger: one row per billable event, unique by its
``idempotency_key`` (derived from what caused it: ``llm:<request id>``,
``tool:<tool run id>``, or a client's key), so a retried request or job never bills
twice.  Invoices are computed from it (roost.billing.invoices).

Row-level security (migration 0910): plans and prices are readable by everyone and
changed by administrators; a subscription, its reservations, usage and invoices are
their user's (or their group's members') and the administrators'; Stripe events are
the administrators'.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    FetchedValue,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, Timestamps, UUIDPrimaryKey, uuid7
from roost.identity import models as _identity_models  # noqa: F401 - "users", "groups"

BILLING_PERIODS: Final = ("month", "year")
SUBSCRIPTION_STATUSES: Final = ("trialing", "active", "past_due", "paused", "canceled")
# Statuses whose subscription gates usage (a paused or canceled one allows nothing, a
# past_due one still serves until the operator or Stripe says otherwise).
LIVE_STATUSES: Final = ("trialing", "active", "past_due", "paused")
RESERVATION_STATUSES: Final = ("held", "settled", "released")
INVOICE_STATUSES: Final = ("open", "paid", "void")
MONEY = Numeric(18, 6)  # prices per million tokens need the decimals
MAX_MONEY: Final = Decimal("999999999999.999999")  # the largest MONEY value
AMOUNT = Numeric(14, 2)  # invoice amounts
MAX_AMOUNT: Final = Decimal("999999999999.99")  # the largest AMOUNT value


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Plan(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint(_in("billing_period", BILLING_PERIODS), name="billing_period"),
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint("included_credits >= 0", name="credits_not_negative"),
        CheckConstraint("trial_days >= 0", name="trial_days_not_negative"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
    )

    key: Mapped[str] = mapped_column(String(64), unique=True)  # "pro", used in URLs and CLI
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    price: Mapped[Decimal] = mapped_column(AMOUNT)
    currency: Mapped[str] = mapped_column(String(3), server_default=text("'USD'"), default="USD")
    billing_period: Mapped[str] = mapped_column(String(16), server_default=text("'month'"),
                                                default="month")
    included_credits: Mapped[int] = mapped_column(BigInteger)
    # {"models_allowed": [...] | null, "max_agents": n, "max_documents": n,
    #  "runs_per_day": n}; a missing or null limit is no limit (roost.billing.limits).
    limits: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"),
                                                   default=dict)
    trial_days: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    stripe_price_id: Mapped[str | None] = mapped_column(String(100))


class Subscription(UUIDPrimaryKey, Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(_in("status", SUBSCRIPTION_STATUSES), name="status"),
        CheckConstraint("(user_id IS NULL) <> (group_id IS NULL)", name="one_subscriber"),
        CheckConstraint("credits_reserved >= 0", name="reserved_not_negative"),
        CheckConstraint("credits_used >= 0", name="used_not_negative"),
        CheckConstraint("credits_limit >= 0", name="limit_not_negative"),
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
        CheckConstraint(_in("billing_period", BILLING_PERIODS), name="billing_period"),
        # One live subscription per user and per group (canceled ones are history).
        Index("uq_subscriptions_live_user", "user_id", unique=True,
              postgresql_where=text("status <> 'canceled' AND user_id IS NOT NULL")),
        Index("uq_subscriptions_live_group", "group_id", unique=True,
              postgresql_where=text("status <> 'canceled' AND group_id IS NOT NULL")),
        Index("ix_subscriptions_plan_id", "plan_id"),
        Index("ix_subscriptions_period_end", "current_period_end"),
    )

    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    group_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("groups.id",
                                                                  ondelete="CASCADE"))
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id", ondelete="RESTRICT"))
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'active'"),
                                        default="active")
    current_period_start: Mapped[datetime] = mapped_column()
    current_period_end: Mapped[datetime] = mapped_column()
    trial_end: Mapped[datetime | None] = mapped_column()
    credits_used: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    # The plan's included credits for this period (a plan change sets them at once).
    credits_limit: Mapped[int] = mapped_column(BigInteger)
    # The plan's terms for the current period (migration 1120), kept here when it
    # subscribes, renews or changes plan: the period is billed from them, so a plan's new
    # price or period applies from each subscriber's next period.  A row inserted without
    # them (plain SQL) takes its plan's (the trigger roost_subscription_terms).
    price: Mapped[Decimal] = mapped_column(AMOUNT, server_default=FetchedValue())
    currency: Mapped[str] = mapped_column(String(3), server_default=FetchedValue())
    billing_period: Mapped[str] = mapped_column(String(16), server_default=FetchedValue())
    # Held by calls in flight (credit_reservations with status 'held').
    credits_reserved: Mapped[int] = mapped_column(BigInteger, server_default=text("0"),
                                                  default=0)
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    canceled_at: Mapped[datetime | None] = mapped_column()


class CreditReservation(UUIDPrimaryKey, CreatedAt, Base):
    """Credits held for one call in flight; settled with the actual amount, or released
    (the call failed, or the holder died and the sweeper expired it)."""

    __tablename__ = "credit_reservations"
    __table_args__ = (
        CheckConstraint(_in("status", RESERVATION_STATUSES), name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_credit_reservations_held", "expires_at", postgresql_where=text("status = 'held'")),
        Index("ix_credit_reservations_subscription_id", "subscription_id"),
    )

    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # llm | tool | run
    reference: Mapped[str | None] = mapped_column(String(200))  # e.g. llm:<request id>
    amount: Mapped[int] = mapped_column(BigInteger)
    actual: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'held'"),
                                        default="held")
    expires_at: Mapped[datetime] = mapped_column()
    settled_at: Mapped[datetime | None] = mapped_column()


class ModelPrice(UUIDPrimaryKey, Timestamps, Base):
    """What a model costs per million tokens.  ``model_pattern`` is an exact name or a
    glob (``gpt-4o*``); the most specific match wins (roost.billing.prices)."""

    __tablename__ = "model_prices"
    __table_args__ = (
        CheckConstraint("input_per_million >= 0 AND output_per_million >= 0",
                        name="prices_not_negative"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
    )

    model_pattern: Mapped[str] = mapped_column(String(255), unique=True)
    input_per_million: Mapped[Decimal] = mapped_column(MONEY)
    output_per_million: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3), server_default=text("'USD'"), default="USD")
    note: Mapped[str | None] = mapped_column(Text)


class UsageRecord(UUIDPrimaryKey, CreatedAt, Base):
    """One row per billable event (an LLM call, a tool run, an ingested client event)."""

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_usage_records_idempotency_key"),
        Index("ix_usage_records_user_id_created_at", "user_id", "created_at"),
        Index("ix_usage_records_user_id_request_type", "user_id", "request_type"),
        Index("ix_usage_records_created_at", "created_at"),
        # Lookups on optional columns are partial (migration 0980): see audit_logs.
        Index("ix_usage_records_session_id", "session_id",
              postgresql_where=text("session_id IS NOT NULL")),
        Index("ix_usage_records_llm_request_id", "llm_request_id",
              postgresql_where=text("llm_request_id IS NOT NULL")),
        Index("ix_usage_records_provider_id", "provider_id",
              postgresql_where=text("provider_id IS NOT NULL")),
        Index("ix_usage_records_agent_id", "agent_id",
              postgresql_where=text("agent_id IS NOT NULL")),
        Index("ix_usage_records_run_id", "run_id",
              postgresql_where=text("run_id IS NOT NULL")),
        Index("ix_usage_records_subscription_id_created_at", "subscription_id", "created_at",
              postgresql_where=text("subscription_id IS NOT NULL")),
        Index("ix_usage_records_api_key_id", "api_key_id",
              postgresql_where=text("api_key_id IS NOT NULL")),
        CheckConstraint("tokens_input >= 0 AND tokens_output >= 0 AND credits_used >= 0",
                        name="amounts_not_negative"),
        CheckConstraint("cost >= 0", name="cost_not_negative"),
    )

    # The user whose usage it is: an id without a foreign key either (migration 1100):
    # the ledger outlives the account (deleting a user keeps their rows; row-level
    # security then shows them to administrators only).
    user_id: Mapped[uuid.UUID | None]
    request_type: Mapped[str] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(255))
    tokens_input: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    tokens_output: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    credits_used: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    # The agent and run a call was made for, its chat session, request and provider: ids
    # without foreign keys (migration 1090): a ledger row outlives what it names, and is
    # often written after it was deleted (an agent deleted while its run's call answered).
    agent_id: Mapped[uuid.UUID | None]
    run_id: Mapped[uuid.UUID | None]
    session_id: Mapped[uuid.UUID | None]
    llm_request_id: Mapped[uuid.UUID | None]
    provider_id: Mapped[uuid.UUID | None]
    success: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    # The ledger: what caused the event (unique), what it cost, whose subscription paid.
    # Callers that can be retried pass their own key; the default (a fresh one, also for
    # a plain SQL insert) is for one-off rows that nothing can replay.
    idempotency_key: Mapped[str] = mapped_column(
        String(200), default=lambda: f"once:{uuid7()}",
        server_default=text("('once:'::text || (gen_random_uuid())::text)"))
    cost: Mapped[Decimal] = mapped_column(MONEY, server_default=text("0"), default=Decimal(0))
    currency: Mapped[str] = mapped_column(String(3), server_default=text("'USD'"), default="USD")
    api_key_id: Mapped[uuid.UUID | None]  # no key either (migration 1090)
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="SET NULL"))


class InvoiceSequence(Base):
    """The gapless invoice number counter: incremented in the invoice's own transaction,
    so a rolled-back invoice gives its number back."""

    __tablename__ = "invoice_sequences"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_value: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)


class Invoice(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("subscription_id", "period_start", name="uq_invoices_subscription_period"),
        UniqueConstraint("number", name="uq_invoices_number"),
        CheckConstraint(_in("status", INVOICE_STATUSES), name="status"),
        CheckConstraint("period_end > period_start", name="period_ordered"),
        Index("ix_invoices_user_id", "user_id"),
        Index("ix_invoices_group_id", "group_id"),
    )

    number: Mapped[str] = mapped_column(String(32))  # "INV-2026-000001"
    sequence: Mapped[int] = mapped_column(BigInteger)
    # The subscription it billed, kept as history without a key (migration 1130): the
    # subscription goes with its user or group, the invoice stays.
    subscription_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    group_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("groups.id",
                                                                  ondelete="SET NULL"))
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id", ondelete="RESTRICT"))
    period_start: Mapped[datetime] = mapped_column()
    period_end: Mapped[datetime] = mapped_column()
    currency: Mapped[str] = mapped_column(String(3))
    # [{"kind": "plan"|"usage", "description", "model", "feature", "quantity",
    #   "tokens_input", "tokens_output", "credits", "amount"}], amounts as strings
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    subtotal: Mapped[Decimal] = mapped_column(AMOUNT)
    tax_rate: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    tax: Mapped[Decimal] = mapped_column(AMOUNT)
    total: Mapped[Decimal] = mapped_column(AMOUNT)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'open'"),
                                        default="open")
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255))


class StripeEvent(CreatedAt, Base):
    """Each Stripe webhook event id, processed once."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # evt_...
    type: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(32))  # applied | ignored | unknown_type
    detail: Mapped[str | None] = mapped_column(Text)
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="SET NULL"))
