"""Rows the Stripe tests start from: a plan, a user's subscription, an invoice; and
Stripe events signed as Stripe signs them (the SDK's own helper)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from roost.billing.models import Invoice, Plan, StripeEvent, Subscription
from roost.db.base import utcnow
from roost.db.engine import Database


async def make_subscription(database: Database, user_id: uuid.UUID, *, status: str = "active",
                            stripe_subscription_id: str | None = None,
                            stripe_price_id: str | None = "price_pro_monthly",
                            plan_key: str | None = None) -> uuid.UUID:
    now = utcnow()
    async with database.transaction() as session:
        plan = Plan(key=plan_key or f"pro-{uuid.uuid4().hex[:8]}", name="Pro",
                    price=Decimal("20.00"), currency="USD", billing_period="month",
                    included_credits=1000, stripe_price_id=stripe_price_id)
        session.add(plan)
        await session.flush()
        sub = Subscription(user_id=user_id, plan_id=plan.id, status=status,
                           stripe_subscription_id=stripe_subscription_id,
                           current_period_start=now, current_period_end=now + timedelta(days=30),
                           trial_end=now + timedelta(days=14) if status == "trialing" else None,
                           credits_limit=1000)
        session.add(sub)
        await session.flush()
        return sub.id


async def make_invoice(database: Database, subscription_id: uuid.UUID, *,
                       lines: list[dict[str, Any]], subtotal: str, tax_rate: str = "0",
                       tax: str = "0", stripe_invoice_id: str | None = None) -> uuid.UUID:
    now = utcnow()
    async with database.transaction() as session:
        sub = await session.get(Subscription, subscription_id)
        assert sub is not None
        sequence = int(time.time_ns() % 1_000_000)
        invoice = Invoice(
            number=f"INV-2026-{sequence:06d}", sequence=sequence, subscription_id=sub.id,
            user_id=sub.user_id, plan_id=sub.plan_id, period_start=now - timedelta(days=30),
            period_end=now, currency="USD", lines=lines, subtotal=Decimal(subtotal),
            tax_rate=Decimal(tax_rate), tax=Decimal(tax),
            total=Decimal(subtotal) + Decimal(tax), stripe_invoice_id=stripe_invoice_id)
        session.add(invoice)
        await session.flush()
        return invoice.id


async def subscription(database: Database, sub_id: uuid.UUID) -> Subscription:
    async with database.transaction() as session:
        sub = await session.get(Subscription, sub_id)
        assert sub is not None
        return sub


async def stripe_events(database: Database) -> list[StripeEvent]:
    async with database.transaction() as session:
        return list((await session.scalars(select(StripeEvent).order_by(StripeEvent.id))).all())


async def count(database: Database, stmt: Any) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)


def event(event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or f"evt_{uuid.uuid4().hex[:24]}", "object": "event",
            "api_version": "2025-03-31.basil", "created": int(time.time()), "livemode": False,
            "type": event_type, "data": {"object": obj}}


def signed(body: dict[str, Any] | bytes, secret: str, *,
           timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The body as Stripe sends it and its ``Stripe-Signature`` header (the SDK computes
    the v1 HMAC exactly as Stripe does)."""
    import stripe  # the tests using this are marked needs_stripe

    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    header = stripe.WebhookSignature.generate_signature_header(raw.decode(), secret,
                                                               timestamp=timestamp)
    return raw, {"Stripe-Signature": header, "Content-Type": "application/json"}
