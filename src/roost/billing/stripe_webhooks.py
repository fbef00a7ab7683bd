"""Stripe webhooks: verified with the SDK, each event id processed once.

``POST /api/v1/billing/stripe/webhook`` (roost.billing.stripe_routes) hands the raw body
and the ``Stripe-Signature`` header to :func:`verify_event`, which checks the signature
with ``stripe.Webhook.construct_event`` against ``ROOST_STRIPE_WEBHOOK_SECRET`` (a bad or
missing signature, a stale timestamp or a body that is not an event is a 400 and nothing
is stored).  :func:`process_event` then, in one transaction:

1. inserts the event id into ``stripe_events`` with ``ON CONFLICT DO NOTHING``: a replayed
   (or concurrently redelivered) id finds the row taken and answers 200 doing nothing;
2. applies the event: ``customer.subscription.updated|deleted|paused|resumed`` set the
   Roost subscription's status (:data:`STATUS_MAP`) through
   :func:`roost.billing.subscriptions.set_status` (no sync back to Stripe; an ended
   trial goes to ``past_due`` by way of ``active``), ``invoice.paid`` marks the Roost
   invoice paid, ``invoice.payment_failed`` makes its subscription ``past_due`` (unless
   that invoice is no longer open);
3. stores the outcome: ``applied``, ``ignored`` (names no Roost subscription or invoice,
   no change, a transition the lifecycle refuses, a failure of a paid invoice, or a
   Stripe subscription Roost detached, with the reason in ``detail``) or
   ``unknown_type``, and audits an applied event as ``billing.stripe.<type>``.

Acts as :data:`roost.principal.SYSTEM` (Stripe is no Roost user; the route's session
runs as the schema owner, without row-level scope).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.billing import subscriptions
from roost.billing.models import Invoice, StripeEvent, Subscription
from roost.billing.stripe_sync import DETACHED, StripeUnavailable, import_stripe
from roost.db.base import utcnow
from roost.errors import BadRequest, RoostError, ServiceUnavailable
from roost.principal import SYSTEM

log = structlog.get_logger("roost.billing.stripe")

# Stripe's subscription statuses -> Roost's.
STATUS_MAP: Final[dict[str, str]] = {
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "paused": "paused",
    "canceled": "canceled",
    "unpaid": "past_due",  # retries exhausted, invoices left open
    "incomplete": "past_due",  # the first payment needs action
    "incomplete_expired": "canceled",  # the first payment never came
}
SUBSCRIPTION_EVENTS: Final = frozenset({
    "customer.subscription.updated", "customer.subscription.deleted",
    "customer.subscription.paused", "customer.subscription.resumed",
})
INVOICE_EVENTS: Final = frozenset({"invoice.paid", "invoice.payment_failed"})
HANDLED_EVENTS: Final = SUBSCRIPTION_EVENTS | INVOICE_EVENTS
MAX_DETAIL = 500
MAX_SIGNATURE = 4096  # Stripe's header is a timestamp and a few 64-hex signatures
# A replay ("duplicate") does nothing and is not stored again.
Outcome = Literal["applied", "ignored", "unknown_type", "duplicate"]


@dataclass(frozen=True)
class StripeEventIn:
    id: str
    type: str
    object: dict[str, Any]


@dataclass(frozen=True)
class WebhookResult:
    event_id: str
    type: str
    outcome: Outcome
    detail: str | None = None


def verify_event(secret: str, payload: bytes, signature: str | None) -> StripeEventIn:
    """The event, once the SDK verified its signature; ``BadRequest`` otherwise."""
    try:
        stripe = import_stripe()
    except StripeUnavailable as exc:
        raise ServiceUnavailable(f"Stripe webhooks need {exc}") from None
    if not signature:
        raise BadRequest("missing Stripe-Signature header: webhooks must come from Stripe")
    if len(signature) > MAX_SIGNATURE:
        raise BadRequest(f"invalid Stripe-Signature: longer than {MAX_SIGNATURE} characters")
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret)
        values = event.to_dict()
    except stripe.SignatureVerificationError:
        raise BadRequest("invalid Stripe-Signature: the body is not signed with this "
                         "endpoint's webhook secret, or the timestamp is too old") from None
    # Signed, but not an event: not UTF-8 or JSON, JSON that is not an object (the SDK
    # fails as it reads it), or nested too deep to read (RecursionError).
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError):
        raise BadRequest("the body is not a Stripe event (JSON with an id and a type)") from None
    event_id, event_type = values.get("id"), values.get("type")
    data = values.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 255
            and isinstance(event_type, str) and 0 < len(event_type) <= 100
            and isinstance(obj, dict)):
        raise BadRequest("the body is not a Stripe event: it needs an id (at most 255 "
                         "characters), a type and data.object")
    return StripeEventIn(event_id, event_type, obj)


class _Ignored(Exception):
    def __init__(self, reason: str, subscription_id: uuid.UUID | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.subscription_id = subscription_id


@dataclass(frozen=True)
class _Applied:
    subscription_id: uuid.UUID | None
    user_id: uuid.UUID | None
    resource_type: str
    resource_id: uuid.UUID
    changes: dict[str, Any]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 255 else None


def _roost_id(obj: dict[str, Any], key: str) -> uuid.UUID | None:
    metadata = obj.get("metadata")
    raw = metadata.get(key) if isinstance(metadata, dict) else None
    try:
        return uuid.UUID(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


async def _subscription_by_stripe(session: AsyncSession, stripe_id: str | None,
                                  roost_id: uuid.UUID | None) -> Subscription | None:
    """The Roost subscription a Stripe subscription is; the metadata's Roost id finds one
    whose sync died before storing the Stripe id (which is stored now)."""
    if stripe_id is None and roost_id is None:
        return None
    conditions = []
    if stripe_id is not None:
        conditions.append(Subscription.stripe_subscription_id == stripe_id)
    if roost_id is not None:
        conditions.append((Subscription.id == roost_id)
                          & Subscription.stripe_subscription_id.is_(None))
    sub = (await session.scalars(select(Subscription).where(or_(*conditions))
                                 .order_by(Subscription.stripe_subscription_id.is_(None))
                                 .limit(1))).one_or_none()
    if sub is not None and sub.stripe_subscription_id is None and stripe_id is not None:
        sub.stripe_subscription_id = stripe_id
        await session.flush()
    return sub


async def _set_status(session: AsyncSession, event: StripeEventIn, sub: Subscription,
                      new_status: str) -> _Applied:
    # Locked before the comparison: events delivered at once for one subscription each
    # read the old status unlocked, and every one was "applied" and audited a change made
    # once.
    await session.refresh(sub, with_for_update=True)
    old = sub.status
    if old == new_status:
        raise _Ignored(f"subscription is {old} already", sub.id)
    reason = f"Stripe {event.type} ({event.id})"
    try:
        async with session.begin_nested():  # a refused transition changes nothing
            if old == "trialing" and new_status == "past_due" and sub.trial_end is not None \
                    and sub.trial_end <= utcnow():
                # The trial ended and its first charge failed: the lifecycle has no
                # trialing -> past_due, so it becomes active (its paid period) first.
                await subscriptions.set_status(session, SYSTEM, sub, "active", reason,
                                               sync=False)
            await subscriptions.set_status(session, SYSTEM, sub, new_status, reason,
                                           sync=False)
    except RoostError as exc:
        raise _Ignored(exc.detail[:MAX_DETAIL], sub.id) from None
    return _Applied(sub.id, sub.user_id, "subscription", sub.id,
                    {"status": {"from": old, "to": new_status}})


async def _on_subscription(session: AsyncSession, event: StripeEventIn) -> _Applied:
    obj = event.object
    stripe_id = _str(obj.get("id"))
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and metadata.get(DETACHED):
        # Roost canceled it (its plan has no Stripe price now): its deletion is not the
        # Roost subscription's.
        raise _Ignored(f"Stripe subscription {stripe_id} no longer bills a Roost subscription "
                       f"(metadata.{DETACHED})")
    sub = await _subscription_by_stripe(session, stripe_id,
                                        _roost_id(obj, "roost_subscription_id"))
    if sub is None:
        raise _Ignored(f"no Roost subscription is Stripe subscription {stripe_id}")
    status = "canceled" if event.type == "customer.subscription.deleted" else obj.get("status")
    new_status = STATUS_MAP.get(status) if isinstance(status, str) else None
    if new_status is None:
        raise _Ignored(f"Stripe status {str(status)[:40]!r} maps to no Roost status", sub.id)
    return await _set_status(session, event, sub, new_status)


async def _invoice_of(session: AsyncSession, obj: dict[str, Any]) -> Invoice | None:
    """The Roost invoice a Stripe invoice is: by its Stripe id, else by the metadata's
    Roost id for an invoice whose sync died before storing the Stripe id (one synced as
    another Stripe invoice is not this one: paying it would mark the wrong invoice)."""
    stripe_id = _str(obj.get("id"))
    roost_id = _roost_id(obj, "roost_invoice_id")
    conditions = []
    if stripe_id is not None:
        conditions.append(Invoice.stripe_invoice_id == stripe_id)
    if roost_id is not None:
        conditions.append((Invoice.id == roost_id) & Invoice.stripe_invoice_id.is_(None))
    if not conditions:
        return None
    return (await session.scalars(select(Invoice).where(or_(*conditions))
                                  .order_by(Invoice.stripe_invoice_id.is_(None)).limit(1)
                                  .with_for_update())).one_or_none()


def _stripe_subscription_of_invoice(obj: dict[str, Any]) -> str | None:
    """The invoice's subscription: ``subscription`` (API versions before 2025-03-31) or
    ``parent.subscription_details.subscription`` (later ones)."""
    direct = obj.get("subscription")
    if isinstance(direct, dict):
        direct = direct.get("id")
    if _str(direct):
        return _str(direct)
    parent = obj.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    nested = details.get("subscription") if isinstance(details, dict) else None
    if isinstance(nested, dict):
        nested = nested.get("id")
    return _str(nested)


async def _on_invoice_paid(session: AsyncSession, event: StripeEventIn) -> _Applied:
    invoice = await _invoice_of(session, event.object)
    if invoice is None:
        raise _Ignored(f"no Roost invoice is Stripe invoice {_str(event.object.get('id'))}")
    if invoice.status != "open":
        raise _Ignored(f"invoice {invoice.number} is {invoice.status}", invoice.subscription_id)
    await session.execute(update(Invoice).where(Invoice.id == invoice.id).values(status="paid"))
    return _Applied(invoice.subscription_id, invoice.user_id, "invoice", invoice.id,
                    {"status": {"from": "open", "to": "paid"}, "number": invoice.number})


async def _on_payment_failed(session: AsyncSession, event: StripeEventIn) -> _Applied:
    invoice = await _invoice_of(session, event.object)
    sub: Subscription | None = None
    if invoice is not None:
        sub = await session.get(Subscription, invoice.subscription_id)
    if sub is None:
        sub = await _subscription_by_stripe(
            session, _stripe_subscription_of_invoice(event.object), None)
    if sub is None:
        raise _Ignored("the failed invoice names no Roost subscription")
    if invoice is not None and invoice.status != "open":
        # A failure Stripe reported late (a retry had paid it): it says nothing now.
        raise _Ignored(f"invoice {invoice.number} is {invoice.status}", sub.id)
    return await _set_status(session, event, sub, "past_due")


async def process_event(session: AsyncSession, event: StripeEventIn) -> WebhookResult:
    """Record and apply one verified event, once (see the module's docstring)."""
    inserted = await session.scalar(
        pg_insert(StripeEvent)
        .values(id=event.id, type=event.type, outcome="received")
        .on_conflict_do_nothing(index_elements=[StripeEvent.id])
        .returning(StripeEvent.id))
    if inserted is None:
        log.info("stripe_webhook", event_id=event.id, type=event.type, outcome="duplicate")
        return WebhookResult(event.id, event.type, "duplicate",
                             "this event id was processed already")
    applied: _Applied | None = None
    outcome: Outcome = "unknown_type"
    detail: str | None = None
    subscription_id: uuid.UUID | None = None
    try:
        if event.type in SUBSCRIPTION_EVENTS:
            applied = await _on_subscription(session, event)
        elif event.type == "invoice.paid":
            applied = await _on_invoice_paid(session, event)
        elif event.type == "invoice.payment_failed":
            applied = await _on_payment_failed(session, event)
    except _Ignored as ignored:
        outcome, detail, subscription_id = "ignored", ignored.reason, ignored.subscription_id
    if applied is not None:
        outcome, subscription_id = "applied", applied.subscription_id
    # The subscription if it still exists: an invoice a deleted user or group left behind
    # names one that went with its owner (the foreign key would refuse it: a 409 Stripe
    # retries for days).
    still = (None if subscription_id is None else
             select(Subscription.id).where(Subscription.id == subscription_id).scalar_subquery())
    await session.execute(
        update(StripeEvent).where(StripeEvent.id == event.id)
        .values(outcome=outcome, detail=detail, subscription_id=still))
    if applied is not None:
        await record(session, f"billing.stripe.{event.type}", user_id=applied.user_id,
                     resource_type=applied.resource_type, resource_id=applied.resource_id,
                     changes=applied.changes,
                     metadata={"stripe_event_id": event.id, "actor": SYSTEM.kind})
    log.info("stripe_webhook", event_id=event.id, type=event.type, outcome=outcome,
             detail=detail)
    return WebhookResult(event.id, event.type, outcome, detail)

