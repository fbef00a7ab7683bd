"""Stripe: subscriptions and invoices sync to Stripe through the ``stripe`` SDK when
``ROOST_STRIPE_SECRET_KEY`` is set (the ``stripe`` extra); without it nothing here runs.

Roost is the source of truth; Stripe collects the money.  A change to a subscription or
an invoice calls :func:`enqueue_sync` in the same transaction, which queues the job
``billing.stripe.sync`` (retried with backoff).  The job reads the row, calls Stripe
*outside* any transaction, and writes the Stripe ids back:

- a subscription gets a Stripe Customer (one per user or group, ``metadata.roost_user_id``
  / ``roost_group_id``; reused by the subscriber's later subscriptions) and a Stripe
  Subscription on its plan's ``stripe_price_id`` (a later plan change swaps the price);
  a canceled one cancels the Stripe subscription.  A plan without a Stripe price is
  skipped with a logged reason; moved to one, the subscription's Stripe subscription is
  canceled (marked ``metadata.roost_detached``, whose events the webhook ignores) and
  its id cleared.
- an invoice becomes a draft Stripe invoice (``pending_invoice_items_behavior=exclude``)
  with one invoice item per line, plus the tax; Stripe finalises and charges it, and the
  ``invoice.paid`` webhook marks Roost's paid.  When the subscription is in Stripe on a
  plan with a Stripe price, its Stripe subscription bills the plan fee itself: the plan
  line is left out (the tax is then on the usage), and an invoice with nothing else is
  not sent.

Every creating call carries an idempotency key derived from the Roost row
(``roost-invoice-<id>``, ``roost-subscription-<id>``, ...): a job that dies after Stripe
created an object but before Roost stored its id gets the same object back on retry
(Stripe keeps keys for 24 hours; after that the stored id is what prevents a second).

The API key is never logged; Stripe errors are logged by type, status and code only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Final, Literal

import structlog
from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.billing.models import Invoice, Plan, Subscription
from roost.config import Settings, get_settings
from roost.db.base import utcnow
from roost.identity.models import Group, User
from roost.tasks.handlers import PermanentError
from roost.tasks.service import enqueue

if TYPE_CHECKING:
    import stripe

    from roost.db.engine import Database

log = structlog.get_logger("roost.billing.stripe")

SyncKind = Literal["subscription", "invoice"]
SYNC_TASK: Final = "billing.stripe.sync"
# ISO 4217 currencies without minor units, as Stripe lists them (amounts are whole units).
ZERO_DECIMAL_CURRENCIES: Final = frozenset({
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND",
    "VUV", "XAF", "XOF", "XPF",
})
# Stripe counts these in thousandths (fils, baisa, millimes), and takes only multiples of
# ten of them: amounts are rounded to the hundredth, as Stripe asks.
THREE_DECIMAL_CURRENCIES: Final = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
NETWORK_RETRIES: Final = 2
# Metadata of a Stripe subscription Roost canceled because its plan has no Stripe price
# any more (the Roost subscription's id): the webhook ignores its events.
DETACHED: Final = "roost_detached"
# Detach-and-return cycles of one subscription within Stripe's idempotency day that a
# creation follows (_create_subscription); more is a loop, not a customer.
MAX_RECREATIONS: Final = 20


class StripeUnavailable(RuntimeError):
    """The ``stripe`` extra is not installed."""


@dataclass(frozen=True)
class StripeConfig:
    api_key: str
    api_base: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeConfig | None:
        if settings.stripe_secret_key is None:
            return None
        key = settings.stripe_secret_key.get_secret_value()
        return cls(api_key=key, api_base=settings.stripe_api_base) if key else None

    def __repr__(self) -> str:  # never show the key
        return f"StripeConfig(api_base={self.api_base!r})"


def import_stripe() -> Any:
    try:
        import stripe
    except ImportError as exc:
        raise StripeUnavailable(
            "the stripe extra is not installed: pip install 'roost[stripe]'") from exc
    return stripe


async def enqueue_sync(session: AsyncSession, kind: SyncKind, object_id: uuid.UUID) -> None:
    """Queue (in the caller's transaction) the sync of one subscription or invoice to
    Stripe; a no-op when no Stripe key is configured.  Called by roost.billing's
    subscription and invoice services after each change."""
    if StripeConfig.from_settings(get_settings()) is None:
        return
    await enqueue(session, SYNC_TASK, {"kind": kind, "id": str(object_id)})


# --- the client ---------------------------------------------------------------------------


class _Client:
    """A ``StripeClient`` on the SDK's async httpx transport, closed after the job."""

    def __init__(self, config: StripeConfig) -> None:
        self.stripe = import_stripe()
        self.http = self.stripe.HTTPXClient()
        bases = {"api": config.api_base.rstrip("/")} if config.api_base else None
        self.client: stripe.StripeClient = self.stripe.StripeClient(
            config.api_key, base_addresses=bases, http_client=self.http,
            max_network_retries=NETWORK_RETRIES)
        self.v1 = self.client.v1

    async def close(self) -> None:
        await self.http.close_async()


class SyncFailed(Exception):
    """Stripe refused the request in a way a retry cannot fix (bad key, unknown price):
    the job goes to the dead letters; fix the cause and retry it from there."""


def _describe(exc: Exception) -> dict[str, Any]:
    """What may be logged of a Stripe error: never its message (it can echo a masked key
    or customer data), only the type, HTTP status, code and request id."""
    return {"error": type(exc).__name__, "http_status": getattr(exc, "http_status", None),
            "code": getattr(exc, "code", None), "request_id": getattr(exc, "request_id", None)}


def _permanent(stripe_mod: Any, exc: Exception) -> bool:
    """Authentication, permission and invalid-request errors (4xx but 409 and 429) do not
    heal by themselves; connection errors, rate limits and 5xx are retried."""
    if isinstance(exc, stripe_mod.AuthenticationError | stripe_mod.PermissionError):
        return True
    if isinstance(exc, stripe_mod.InvalidRequestError):
        status = getattr(exc, "http_status", None) or 400
        return status not in (409, 429)
    return False


# --- sync ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SubView:
    id: uuid.UUID
    user_id: uuid.UUID | None
    group_id: uuid.UUID | None
    status: str
    trial_end: datetime | None
    stripe_customer_id: str | None
    stripe_subscription_id: str | None
    plan_key: str
    stripe_price_id: str | None
    email: str | None
    name: str | None
    customer_stored: bool  # stripe_customer_id is this subscription's own


async def _load_subscription(session: AsyncSession, sub_id: uuid.UUID) -> _SubView | None:
    row = (await session.execute(
        select(Subscription, Plan.key, Plan.stripe_price_id)
        .join(Plan, Plan.id == Subscription.plan_id).where(Subscription.id == sub_id)
    )).one_or_none()
    if row is None:
        return None
    sub, plan_key, price = row
    email = name = None
    if sub.user_id is not None:
        user = (await session.execute(select(User.email, User.username, User.full_name)
                                      .where(User.id == sub.user_id))).one_or_none()
        if user is not None:
            email, name = user.email, user.full_name or user.username
    elif sub.group_id is not None:
        name = await session.scalar(select(Group.name).where(Group.id == sub.group_id))
    customer = sub.stripe_customer_id
    if customer is None:  # the subscriber's earlier subscriptions may have one
        owner = (Subscription.user_id == sub.user_id if sub.user_id is not None
                 else Subscription.group_id == sub.group_id)
        customer = await session.scalar(
            select(Subscription.stripe_customer_id)
            .where(owner, Subscription.stripe_customer_id.is_not(None))
            .order_by(Subscription.created_at.desc()).limit(1))
    return _SubView(sub.id, sub.user_id, sub.group_id, sub.status, sub.trial_end, customer,
                    sub.stripe_subscription_id, plan_key, price, email, name,
                    sub.stripe_customer_id is not None)


async def _ensure_customer(database: Database, client: _Client, view: _SubView) -> str:
    if view.stripe_customer_id is not None:
        if not view.customer_stored:  # reused from the subscriber's earlier subscription
            async with database.transaction() as session:
                await session.execute(
                    update(Subscription).where(Subscription.id == view.id,
                                               Subscription.stripe_customer_id.is_(None))
                    .values(stripe_customer_id=view.stripe_customer_id))
        return view.stripe_customer_id
    if view.user_id is not None:
        owner_key, metadata = f"user-{view.user_id}", {"roost_user_id": str(view.user_id)}
    else:
        owner_key, metadata = f"group-{view.group_id}", {"roost_group_id": str(view.group_id)}
    params: dict[str, Any] = {"metadata": metadata}
    if view.email:
        params["email"] = view.email
    if view.name:
        params["name"] = view.name
    customer = await client.v1.customers.create_async(
        params, {"idempotency_key": f"roost-customer-{owner_key}"})
    async with database.transaction() as session:
        await session.execute(
            update(Subscription).where(Subscription.id == view.id)
            .values(stripe_customer_id=customer.id))
    log.info("stripe_customer_created", subscription_id=str(view.id), customer=customer.id)
    return str(customer.id)


async def sync_subscription(database: Database, config: StripeConfig,
                            sub_id: uuid.UUID) -> dict[str, Any]:
    """Bring Stripe in line with one Roost subscription; returns what was done."""
    async with database.transaction() as session:
        view = await _load_subscription(session, sub_id)
    if view is None:
        log.info("stripe_sync_skipped", subscription_id=str(sub_id), reason="no such subscription")
        return {"skipped": "no such subscription"}
    client = _Client(config)
    try:
        return await _sync_subscription(database, client, view)
    finally:
        await client.close()


async def _sync_subscription(database: Database, client: _Client,
                             view: _SubView) -> dict[str, Any]:
    if view.status == "canceled":
        return await _cancel(database, client, view)
    if view.stripe_price_id is None:
        if view.stripe_subscription_id is not None:  # moved off a plan billed in Stripe
            return await _detach(database, client, view)
        reason = f"plan {view.plan_key!r} has no stripe_price_id"
        log.info("stripe_sync_skipped", subscription_id=str(view.id), reason=reason)
        return {"skipped": reason}
    customer = await _ensure_customer(database, client, view)
    if view.stripe_subscription_id is None:
        params: dict[str, Any] = {
            "customer": customer, "items": [{"price": view.stripe_price_id}],
            "metadata": {"roost_subscription_id": str(view.id)},
        }
        if view.status == "trialing" and view.trial_end is not None and view.trial_end > utcnow():
            params["trial_end"] = int(view.trial_end.timestamp())
        created = await _create_subscription(client, view, params)
        async with database.transaction() as session:
            await session.execute(
                update(Subscription).where(Subscription.id == view.id)
                .values(stripe_subscription_id=created.id))
        log.info("stripe_subscription_created", subscription_id=str(view.id),
                 stripe_subscription=created.id)
        return {"customer": customer, "subscription": created.id, "created": True}
    # It exists: follow a plan change (the subscription's one item gets the new price).
    remote = await client.v1.subscriptions.retrieve_async(view.stripe_subscription_id)
    items = remote.to_dict().get("items", {}).get("data") or []
    current = items[0].get("price", {}).get("id") if items else None
    if items and current != view.stripe_price_id and remote.status != "canceled":
        await client.v1.subscriptions.update_async(
            view.stripe_subscription_id,
            {"items": [{"id": items[0]["id"], "price": view.stripe_price_id}]},
            {"idempotency_key": f"roost-subscription-{view.id}-price-{view.stripe_price_id}"})
        log.info("stripe_subscription_price_changed", subscription_id=str(view.id))
        return {"customer": customer, "subscription": view.stripe_subscription_id,
                "price_changed": True}
    return {"customer": customer, "subscription": view.stripe_subscription_id}


async def _create_subscription(client: _Client, view: _SubView,
                               params: dict[str, Any]) -> Any:
    """Create the Stripe subscription under a key derived from the Roost one, so a job
    retried after Stripe created it gets that one back.  Stripe replays a key's first
    answer for a day: a subscription detached (:func:`_detach`) and moved back to a priced
    plan the same day got its canceled Stripe subscription back.  One found canceled by
    Roost's detach is followed by a creation under a key naming it."""
    key = f"roost-subscription-{view.id}"
    for _ in range(MAX_RECREATIONS):
        created = await client.v1.subscriptions.create_async(params, {"idempotency_key": key})
        current = await client.v1.subscriptions.retrieve_async(created.id)
        metadata = current.to_dict().get("metadata") or {}
        if current.status != "canceled" or metadata.get(DETACHED) != str(view.id):
            return created
        key = f"roost-subscription-{view.id}-after-{created.id}"
    raise SyncFailed(f"subscription {view.id}: Stripe answered canceled subscriptions "
                     f"{MAX_RECREATIONS} times")


async def _cancel(database: Database, client: _Client, view: _SubView) -> dict[str, Any]:
    if view.stripe_subscription_id is None:
        return {"skipped": "canceled before it reached Stripe"}
    stripe_mod = client.stripe
    try:
        remote = await client.v1.subscriptions.retrieve_async(view.stripe_subscription_id)
    except stripe_mod.InvalidRequestError as exc:
        if getattr(exc, "http_status", None) == 404:
            return {"skipped": "the Stripe subscription no longer exists"}
        raise
    if remote.status == "canceled":
        return {"subscription": view.stripe_subscription_id, "canceled": False}
    await client.v1.subscriptions.cancel_async(
        view.stripe_subscription_id, None,
        {"idempotency_key": f"roost-subscription-{view.id}-cancel"})
    log.info("stripe_subscription_canceled", subscription_id=str(view.id))
    return {"subscription": view.stripe_subscription_id, "canceled": True}


async def _detach(database: Database, client: _Client, view: _SubView) -> dict[str, Any]:
    """The subscription moved to a plan without a Stripe price: its Stripe subscription
    would go on billing the old plan's fee, so it is canceled in Stripe and forgotten
    (its invoices then charge the plan fee themselves).  It is marked
    ``metadata.roost_detached`` first, which makes the webhook ignore its events: the
    ``customer.subscription.deleted`` this cancel causes must not cancel the Roost one."""
    stripe_id = view.stripe_subscription_id
    assert stripe_id is not None
    stripe_mod = client.stripe
    try:
        remote = await client.v1.subscriptions.retrieve_async(stripe_id)
    except stripe_mod.InvalidRequestError as exc:
        if getattr(exc, "http_status", None) != 404:
            raise
        remote = None
    if remote is not None and remote.status != "canceled":
        await client.v1.subscriptions.update_async(
            stripe_id, {"metadata": {DETACHED: str(view.id), "roost_subscription_id": ""}},
            {"idempotency_key": f"roost-subscription-{view.id}-detach-{stripe_id}"})
        await client.v1.subscriptions.cancel_async(
            stripe_id, None,
            {"idempotency_key": f"roost-subscription-{view.id}-cancel-{stripe_id}"})
    async with database.transaction() as session:
        await session.execute(
            update(Subscription).where(Subscription.id == view.id,
                                       Subscription.stripe_subscription_id == stripe_id)
            .values(stripe_subscription_id=None))
    log.info("stripe_subscription_detached", subscription_id=str(view.id),
             reason=f"plan {view.plan_key!r} has no stripe_price_id")
    return {"subscription": stripe_id, "detached": True}


def minor_units(amount: Decimal, currency: str) -> int:
    """An amount in the currency's smallest unit as Stripe counts it (cents; yen for JPY;
    fils for KWD, a multiple of ten), rounded half up."""
    code = currency.upper()
    if code in THREE_DECIMAL_CURRENCIES:
        return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)) * 10
    exponent = 0 if code in ZERO_DECIMAL_CURRENCIES else 2
    return int((amount * (10 ** exponent)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def invoice_items(invoice: Invoice, *, plan_billed_by_stripe: bool = False) -> list[tuple[str, int]]:
    """(description, amount in minor units) per non-zero line, then the tax; a rounding
    line keeps the sum equal to Roost's total when per-line rounding drifts (zero-decimal
    currencies).  ``plan_billed_by_stripe``: the subscription is a Stripe subscription on
    the plan's price, which bills the plan fee itself, so the plan line is left out and
    the tax is the rate times the usage alone."""
    currency = invoice.currency
    lines = [line for line in invoice.lines
             if not (plan_billed_by_stripe and line.get("kind") == "plan")]
    items: list[tuple[str, int]] = []
    exact = Decimal(0)
    for line in lines:
        value = Decimal(str(line.get("amount") or "0"))
        exact += value
        amount = minor_units(value, currency)
        if amount == 0:
            continue
        what = str(line.get("description") or line.get("model") or line.get("feature")
                   or line.get("kind") or "usage")
        items.append((what[:500], amount))
    subtotal = exact if plan_billed_by_stripe else invoice.subtotal
    drift = minor_units(subtotal, currency) - sum(amount for _, amount in items)
    if drift:
        items.append(("Rounding", drift))
    tax = minor_units(subtotal * invoice.tax_rate if plan_billed_by_stripe else invoice.tax,
                      currency)
    if tax:
        items.append((f"Tax ({(invoice.tax_rate * 100).normalize():f} %)", tax))
    return items


async def sync_invoice(database: Database, config: StripeConfig,
                       invoice_id: uuid.UUID) -> dict[str, Any]:
    """Create the Stripe invoice of one Roost invoice (once); returns what was done."""
    async with database.transaction() as session:
        invoice = await session.get(Invoice, invoice_id)
        view = (await _load_subscription(session, invoice.subscription_id)
                if invoice is not None else None)
    if invoice is None or view is None:
        log.info("stripe_sync_skipped", invoice_id=str(invoice_id), reason="no such invoice")
        return {"skipped": "no such invoice"}
    if invoice.stripe_invoice_id is not None:
        return {"invoice": invoice.stripe_invoice_id}
    if invoice.status == "void":
        log.info("stripe_sync_skipped", invoice_id=str(invoice_id), reason="void")
        return {"skipped": "void"}
    # Stripe's subscription bills the fee only on a plan with a Stripe price: one moved to
    # a plan without charges it here, even before its sync detached the Stripe one.
    plan_billed_by_stripe = (view.stripe_subscription_id is not None
                             and view.stripe_price_id is not None)
    items = invoice_items(invoice, plan_billed_by_stripe=plan_billed_by_stripe)
    if not items:
        reason = ("only the plan fee, which the Stripe subscription bills"
                  if plan_billed_by_stripe else "nothing to charge")
        log.info("stripe_sync_skipped", invoice_id=str(invoice_id), reason=reason)
        return {"skipped": reason}
    client = _Client(config)
    try:
        customer = await _ensure_customer(database, client, view)
        currency = invoice.currency.lower()
        created = await client.v1.invoices.create_async(
            {"customer": customer, "currency": currency, "auto_advance": True,
             "collection_method": "charge_automatically",
             "pending_invoice_items_behavior": "exclude", "description": invoice.number,
             "metadata": {"roost_invoice_id": str(invoice.id),
                          "roost_invoice_number": invoice.number}},
            {"idempotency_key": f"roost-invoice-{invoice.id}"})
        for n, (description, amount) in enumerate(items):
            await client.v1.invoice_items.create_async(
                {"customer": customer, "invoice": created.id, "amount": amount,
                 "currency": currency, "description": description,
                 "metadata": {"roost_invoice_id": str(invoice.id), "line": str(n)}},
                {"idempotency_key": f"roost-invoice-{invoice.id}-item-{n}"})
    finally:
        await client.close()
    async with database.transaction() as session:
        await session.execute(update(Invoice).where(Invoice.id == invoice.id)
                              .values(stripe_invoice_id=created.id))
    log.info("stripe_invoice_created", invoice_id=str(invoice.id), stripe_invoice=created.id)
    return {"invoice": created.id, "customer": customer, "created": True}


class SyncPayload(BaseModel):
    kind: SyncKind
    id: uuid.UUID


async def run_job(database: Database, payload: SyncPayload) -> dict[str, Any]:
    """The job ``billing.stripe.sync`` (roost.billing.jobs): a refusal a retry cannot fix
    dead-letters the job at once; network errors, rate limits and Stripe's 5xx are
    retried with backoff."""
    config = StripeConfig.from_settings(get_settings())
    if config is None:
        return {"skipped": "no Stripe key configured (ROOST_STRIPE_SECRET_KEY)"}
    try:
        return await run_sync(database, config, payload.kind, payload.id)
    except (SyncFailed, StripeUnavailable) as exc:
        raise PermanentError(str(exc)) from None


async def run_sync(database: Database, config: StripeConfig, kind: SyncKind,
                   object_id: uuid.UUID) -> dict[str, Any]:
    """Sync one object; raises :class:`SyncFailed` when Stripe refuses for good (a
    ``RuntimeError`` naming the SDK's error otherwise)."""
    stripe_mod = import_stripe()
    try:
        if kind == "subscription":
            return await sync_subscription(database, config, object_id)
        return await sync_invoice(database, config, object_id)
    except stripe_mod.StripeError as exc:
        detail = _describe(exc)
        log.warning("stripe_sync_failed", kind=kind, id=str(object_id), **detail)
        if _permanent(stripe_mod, exc):
            raise SyncFailed(f"Stripe refused the {kind} sync: {detail}") from None
        raise RuntimeError(f"Stripe {kind} sync failed, will retry: {detail}") from None
