"""Invoices: a pure function of the usage ledger and the subscription's terms (the plan's
price, currency and billing period it kept for the period) for a period, numbered from a
gapless sequence (docs/billing.md, "Invoices").

``compute_invoice`` does no I/O: one plan line, then one usage line per (model, request
type), sorted, each summing the ledger's 6-decimal costs and rounding once to cents
(ROUND_HALF_UP); tax is the subtotal times the rate, rounded to cents.  ``issue_invoice``
feeds it the same sums computed by PostgreSQL (exact ``numeric`` sums, so both paths give
the same amounts), takes the next number of the year's series in the invoice's own
transaction (a rollback gives the number back: no gap) and stores the invoice once per
(subscription, period start): running it again returns the stored invoice unchanged, and
a period overlapping an issued one is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple, Protocol

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.billing import stripe_sync
from roost.billing.models import (
    INVOICE_STATUSES,
    MAX_AMOUNT,
    Invoice,
    Plan,
    Subscription,
    UsageRecord,
)
from roost.config import Settings, get_settings
from roost.db.base import utcnow
from roost.errors import Conflict, Forbidden, NotFound, Unprocessable
from roost.identity.models import Group, User
from roost.pagination import newest_first, where_equal
from roost.principal import SYSTEM, Principal

CENT = Decimal("0.01")
ZERO = Decimal(0)


class Period(NamedTuple):
    """``[start, end)``."""

    start: datetime
    end: datetime


class LedgerRow(Protocol):
    """What an invoice reads of a ``usage_records`` row (the ORM row fits)."""

    @property
    def subscription_id(self) -> uuid.UUID | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def model(self) -> str | None: ...
    @property
    def request_type(self) -> str: ...
    @property
    def tokens_input(self) -> int: ...
    @property
    def tokens_output(self) -> int: ...
    @property
    def credits_used(self) -> int: ...
    @property
    def cost(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...


@dataclass(frozen=True)
class UsageTotal:
    """The ledger's rows of one (model, request type, currency) in a period, summed; the
    cost is the exact sum of the 6-decimal costs (rounded only per invoice line)."""

    model: str | None
    request_type: str
    currency: str
    events: int
    tokens_input: int
    tokens_output: int
    credits: int
    cost: Decimal


@dataclass(frozen=True)
class InvoiceLine:
    kind: str  # "plan" | "usage"
    description: str
    model: str | None
    feature: str | None  # the request type of a usage line
    quantity: int
    tokens_input: int
    tokens_output: int
    credits: int
    amount: Decimal

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "description": self.description, "model": self.model,
                "feature": self.feature, "quantity": self.quantity,
                "tokens_input": self.tokens_input, "tokens_output": self.tokens_output,
                "credits": self.credits, "amount": str(self.amount)}


@dataclass(frozen=True)
class InvoiceDraft:
    subscription_id: uuid.UUID
    plan_id: uuid.UUID
    user_id: uuid.UUID | None
    group_id: uuid.UUID | None
    period_start: datetime
    period_end: datetime
    currency: str
    lines: tuple[InvoiceLine, ...]
    subtotal: Decimal
    tax_rate: Decimal
    tax: Decimal
    total: Decimal

    def lines_json(self) -> list[dict[str, Any]]:
        return [line.as_json() for line in self.lines]

    def as_json(self) -> dict[str, Any]:
        return {"subscription_id": str(self.subscription_id), "plan_id": str(self.plan_id),
                "user_id": str(self.user_id) if self.user_id else None,
                "group_id": str(self.group_id) if self.group_id else None,
                "period_start": self.period_start.isoformat(),
                "period_end": self.period_end.isoformat(), "currency": self.currency,
                "lines": self.lines_json(), "subtotal": str(self.subtotal),
                "tax_rate": str(self.tax_rate), "tax": str(self.tax), "total": str(self.total)}


@dataclass(frozen=True)
class InvoiceConfig:
    tax_rate: Decimal = ZERO
    prefix: str = "INV"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> InvoiceConfig:
        s = settings or get_settings()
        return cls(tax_rate=s.billing_tax_rate, prefix=s.billing_invoice_prefix)


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


# --------------------------------------------------------------------------- pure


def summarize(rows: Iterable[LedgerRow], subscription_id: uuid.UUID,
              period: Period) -> list[UsageTotal]:
    """The rows of ``subscription_id`` created in ``period``, summed per (model, request
    type, currency); other rows are ignored (the same filter ``issue_invoice`` queries)."""
    sums: dict[tuple[str | None, str, str], list[Any]] = {}
    for row in rows:
        if row.subscription_id != subscription_id or not (
                period.start <= row.created_at < period.end):
            continue
        acc = sums.setdefault((row.model, row.request_type, row.currency), [0, 0, 0, 0, ZERO])
        acc[0] += 1
        acc[1] += row.tokens_input
        acc[2] += row.tokens_output
        acc[3] += row.credits_used
        acc[4] += row.cost
    return [UsageTotal(model, rtype, cur, n, ti, to, cr, cost)
            for (model, rtype, cur), (n, ti, to, cr, cost) in sums.items()]


def _line_key(key: tuple[str | None, str]) -> tuple[bool, str, str]:
    model, request_type = key  # by model (lines without one last), then request type
    return (model is None, model or "", request_type)


def _plan_line(plan: Plan, subscription: Subscription, period: Period) -> InvoiceLine:
    """The plan fee on the terms the subscription kept for its period (its price, billing
    period and credits), not the plan's as edited since: those apply from the next
    period.  The plan gives only its name."""
    in_trial = subscription.trial_end is not None and period.end <= subscription.trial_end
    every = "monthly" if subscription.billing_period == "month" else "yearly"
    return InvoiceLine(
        kind="plan", description=f"{plan.name} plan, {every}" + (" (trial)" if in_trial else ""),
        model=None, feature=None, quantity=1, tokens_input=0, tokens_output=0,
        credits=int(subscription.credits_limit or 0),
        amount=ZERO.quantize(CENT) if in_trial else cents(Decimal(subscription.price)))


def invoice_from_totals(plan: Plan, subscription: Subscription, totals: Iterable[UsageTotal],
                        period: Period, tax_rate: Decimal) -> InvoiceDraft:
    """The invoice of ``period`` from the ledger's sums (see ``compute_invoice``)."""
    if period.end <= period.start:
        raise Unprocessable("the invoice period must end after it starts")
    # Stored as numeric(6, 4): compute with the rate the invoice will show.
    tax_rate = Decimal(tax_rate).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    if not ZERO <= tax_rate <= 1:
        raise Unprocessable("the tax rate must be between 0 and 1")
    currency = subscription.currency
    lines: dict[tuple[str | None, str], list[Any]] = {}
    for t in totals:
        if t.currency != currency and t.cost != 0:
            raise Unprocessable(
                f"usage in {t.currency} (model {t.model or '-'}, {t.request_type}) cannot be "
                f"invoiced on a plan priced in {currency}: currencies are never mixed; price "
                f"the model in {currency}, or cancel and subscribe anew on a {t.currency} plan")
        acc = lines.setdefault((t.model, t.request_type), [0, 0, 0, 0, ZERO])
        acc[0] += t.events
        acc[1] += t.tokens_input
        acc[2] += t.tokens_output
        acc[3] += t.credits
        acc[4] += t.cost if t.currency == currency else ZERO
    usage = [
        InvoiceLine(kind="usage", description=f"{model or 'no model'}: {rtype}", model=model,
                    feature=rtype, quantity=n, tokens_input=ti, tokens_output=to, credits=cr,
                    amount=cents(cost))
        for (model, rtype), (n, ti, to, cr, cost) in sorted(lines.items(),
                                                          key=lambda kv: _line_key(kv[0]))
    ]
    all_lines = (_plan_line(plan, subscription, period), *usage)
    subtotal = sum((line.amount for line in all_lines), ZERO.quantize(CENT))
    tax = cents(subtotal * tax_rate)
    if subtotal + tax > MAX_AMOUNT:  # the total holds the most (tax is at most the subtotal)
        raise Unprocessable(
            f"the invoice of subscription {subscription.id} for {period.start.isoformat()} "
            f"to {period.end.isoformat()} would total {subtotal + tax} {currency}: more than "
            f"an invoice holds ({MAX_AMOUNT})",
            extra={"subscription_id": str(subscription.id)})
    return InvoiceDraft(
        subscription_id=subscription.id, plan_id=plan.id, user_id=subscription.user_id,
        group_id=subscription.group_id, period_start=period.start, period_end=period.end,
        currency=currency, lines=all_lines, subtotal=subtotal, tax_rate=tax_rate, tax=tax,
        total=subtotal + tax)


def compute_invoice(plan: Plan, subscription: Subscription, usage_rows: Iterable[LedgerRow],
                    period: Period, tax_rate: Decimal) -> InvoiceDraft:
    """The invoice of ``subscription`` for ``period``: a pure function (no I/O) of the
    subscription's terms (price, currency, billing period, credits; the plan gives its
    name) and the ledger's rows (those of other subscriptions or outside the period are
    ignored).  The order of the rows does not matter.  Usage in another currency than
    the subscription's is refused (Unprocessable) unless it cost nothing."""
    return invoice_from_totals(plan, subscription, summarize(usage_rows, subscription.id, period),
                               period, tax_rate)


# --------------------------------------------------------------------------- storage


async def ledger_totals(session: AsyncSession, subscription_id: uuid.UUID,
                        period: Period) -> list[UsageTotal]:
    """``summarize`` in SQL (exact numeric sums)."""
    u = UsageRecord
    stmt = (select(u.model, u.request_type, u.currency, func.count(),
                   func.coalesce(func.sum(u.tokens_input), 0),
                   func.coalesce(func.sum(u.tokens_output), 0),
                   func.coalesce(func.sum(u.credits_used), 0), func.coalesce(func.sum(u.cost), 0))
            .where(u.subscription_id == subscription_id, u.created_at >= period.start,
                   u.created_at < period.end)
            .group_by(u.model, u.request_type, u.currency))
    return [UsageTotal(model, rtype, cur, int(n), int(ti), int(to), int(cr), Decimal(cost))
            for model, rtype, cur, n, ti, to, cr, cost in (await session.execute(stmt)).all()]


async def subscribers_ledger_totals(session: AsyncSession, subscription_id: uuid.UUID,
                                    period: Period) -> list[UsageTotal]:
    """``ledger_totals`` over every row charged to the subscription, for a caller who may
    read the subscription (a group's member too: the ledger's row-level security shows
    them only their own rows; migration 1340)."""
    rows = (await session.execute(text(
        "SELECT * FROM roost_subscription_usage(:s, :start, :end)"),
        {"s": subscription_id, "start": period.start, "end": period.end})).all()
    return [UsageTotal(r.model, r.request_type, r.currency, int(r.requests),
                       int(r.tokens_input), int(r.tokens_output), int(r.credits),
                       Decimal(r.cost)) for r in rows]


async def draft_invoice(session: AsyncSession, subscription: Subscription, period: Period,
                        tax_rate: Decimal, *, as_subscriber: bool = False) -> InvoiceDraft:
    """The period's draft; ``as_subscriber``: summed for a caller who may read the
    subscription but not every member's usage (a preview)."""
    plan = await session.get(Plan, subscription.plan_id)
    if plan is None:  # the foreign key forbids it
        raise NotFound("the subscription's plan no longer exists")
    totals = await (subscribers_ledger_totals if as_subscriber else ledger_totals)(
        session, subscription.id, period)
    return invoice_from_totals(plan, subscription, totals, period, tax_rate)


async def next_number(session: AsyncSession, series: str) -> int:
    """The next value of ``series`` (created at 1), in the caller's transaction: the row
    stays locked until it ends, and a rollback gives the number back."""
    value = await session.scalar(text(
        "INSERT INTO invoice_sequences AS s (name, last_value) VALUES (:name, 1) "
        "ON CONFLICT (name) DO UPDATE SET last_value = s.last_value + 1 "
        "RETURNING s.last_value"), {"name": series})
    assert value is not None
    return int(value)


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise Unprocessable(f"{name} must carry a time zone offset")
    return moment


async def _subscription_for_update(session: AsyncSession,
                                   subscription_id: uuid.UUID) -> Subscription:
    sub = await session.scalar(select(Subscription).where(Subscription.id == subscription_id)
                               .with_for_update())
    if sub is None:
        raise NotFound(f"no subscription {subscription_id}")
    return sub


async def issue_invoice(
    session: AsyncSession, subscription_id: uuid.UUID, period_start: datetime,
    period_end: datetime, *, actor: Principal = SYSTEM, config: InvoiceConfig | None = None,
    now: datetime | None = None,
) -> Invoice:
    """The invoice of the subscription for ``[period_start, period_end)``: the stored one
    if it exists (unchanged); a period overlapping another invoice of the subscription
    is a Conflict (its usage would be billed twice); else computed from the ledger and
    the subscription's terms, numbered
    ``PREFIX-YEAR-NNNNNN`` (the year it is issued) and stored, in the caller's
    transaction.  Administrators (and Roost's own jobs) only."""
    if not actor.is_admin:
        raise Forbidden("only administrators issue invoices")
    period = Period(_aware(period_start, "period_start"), _aware(period_end, "period_end"))
    if period.end <= period.start:
        raise Unprocessable("period_end must be after period_start")
    cfg = config or InvoiceConfig.from_settings()
    # The subscription's lock serialises issuers of one subscription: the second finds
    # the first's invoice instead of failing on the unique (subscription, period_start).
    sub = await _subscription_for_update(session, subscription_id)
    existing = await session.scalar(select(Invoice).where(
        Invoice.subscription_id == sub.id, Invoice.period_start == period.start))
    if existing is not None and existing.period_end == period.end:
        return existing
    # One of the same start but another end is an overlap: returned as "issued", it left
    # the rest of its period on no invoice.  Another period overlapping an issued one
    # would bill its usage (and plan fee) twice.
    overlapping = await session.scalar(
        select(Invoice).where(Invoice.subscription_id == sub.id,
                              Invoice.period_start < period.end,
                              Invoice.period_end > period.start)
        .order_by(Invoice.period_start).limit(1))
    if overlapping is not None:
        raise Conflict(
            f"the period {period.start.isoformat()} to {period.end.isoformat()} overlaps "
            f"invoice {overlapping.number} ({overlapping.period_start.isoformat()} to "
            f"{overlapping.period_end.isoformat()}) of this subscription: its usage is "
            "billed there already", extra={"invoice_id": str(overlapping.id)})
    draft = await draft_invoice(session, sub, period, cfg.tax_rate)
    # One moment for the number's year and the "Issued" date: read apart, an invoice issued
    # at New Year's midnight could be numbered in one year and dated in the other.
    issued_at = now or utcnow()
    year = issued_at.year
    seq = await next_number(session, f"{cfg.prefix}-{year}")
    invoice = Invoice(
        number=f"{cfg.prefix}-{year}-{seq:06d}", sequence=seq, created_at=issued_at,
        subscription_id=sub.id,
        user_id=sub.user_id, group_id=sub.group_id, plan_id=draft.plan_id,
        period_start=period.start, period_end=period.end, currency=draft.currency,
        lines=draft.lines_json(), subtotal=draft.subtotal, tax_rate=draft.tax_rate,
        tax=draft.tax, total=draft.total, status="open")
    session.add(invoice)
    await session.flush()
    await stripe_sync.enqueue_sync(session, "invoice", invoice.id)
    await record(session, "billing.invoice.issue", user_id=sub.user_id,
                 resource_type="invoice", resource_id=invoice.id,
                 changes={"number": invoice.number, "total": str(invoice.total),
                          "currency": invoice.currency},
                 metadata={"subscription_id": str(sub.id),
                           "period_start": period.start.isoformat(),
                           "period_end": period.end.isoformat(), "actor": actor.kind})
    return invoice


def _within_life(sub: Subscription, start: datetime) -> None:
    """A named period starts while the subscription lived: one starting before it was
    created, or after it was canceled, would bill a plan fee for time it did not exist
    (and take the period start its real period has)."""
    if start < sub.created_at:
        raise Unprocessable(
            f"the period starts {start.isoformat()}, before the subscription was created "
            f"({sub.created_at.isoformat()}): there is nothing to bill",
            extra={"field": "period_start"})
    if sub.canceled_at is not None and start >= sub.canceled_at:
        raise Unprocessable(
            f"the period starts {start.isoformat()}, after the subscription was canceled "
            f"({sub.canceled_at.isoformat()}): there is nothing to bill",
            extra={"field": "period_start"})


async def _invoiced(session: AsyncSession, subscription_id: uuid.UUID, start: datetime,
                    end: datetime) -> bool:
    return await session.scalar(select(Invoice.id).where(
        Invoice.subscription_id == subscription_id, Invoice.period_start == start,
        Invoice.period_end == end)) is not None


async def issue_current(session: AsyncSession, actor: Principal, subscription_id: uuid.UUID,
                        *, period_start: datetime | None = None,
                        period_end: datetime | None = None,
                        config: InvoiceConfig | None = None) -> Invoice:
    """``POST /invoices``: the subscription's current period unless a period is named;
    a period that has not ended is refused (409) unless the subscription is canceled."""
    if not actor.is_admin:
        raise Forbidden("only administrators issue invoices")
    if (period_start is None) != (period_end is None):
        raise Unprocessable("give both period_start and period_end, or neither (the "
                            "subscription's current period)")
    if period_start is not None and period_end is not None:
        _aware(period_start, "period_start")
        _aware(period_end, "period_end")
    sub = await _subscription_for_update(session, subscription_id)
    if period_start is not None:
        _within_life(sub, period_start)
        current = (sub.current_period_start, sub.current_period_end)
        if period_end is not None and period_start < current[1] and period_end > current[0] \
                and (period_start, period_end) != current and not await _invoiced(
                    session, sub.id, *current):
            # A part of the current period: renewal could then never bill the period (its
            # invoice overlapped the part: a 409 every run, the period stuck).  (Once the
            # period is invoiced, issuing refuses the overlap naming that invoice.)
            raise Conflict(
                f"a named period must not overlap the current period "
                f"({current[0].isoformat()} to {current[1].isoformat()}) unless it is that "
                "period: leave the period out to invoice the current one",
                extra={"field": "period_end"})
    start = period_start or sub.current_period_start
    end = period_end or sub.current_period_end
    if end > utcnow() and sub.status != "canceled":
        existing = await session.scalar(select(Invoice).where(
            Invoice.subscription_id == sub.id, Invoice.period_start == start))
        if existing is None:
            raise Conflict(
                f"the period {start.isoformat()} to {end.isoformat()} has not ended: an "
                "invoice is issued once its period is over (or the subscription is "
                "canceled); GET /api/v1/billing/subscriptions/"
                f"{sub.id}/invoice-preview shows the draft")
        return existing
    return await issue_invoice(session, sub.id, start, end, actor=actor, config=config)


# --------------------------------------------------------------------------- reading


def _visible(principal: Principal) -> Any:
    owned = Invoice.user_id == principal.user_id
    if principal.group_ids:
        return owned | Invoice.group_id.in_(principal.group_ids)
    return owned


async def get_invoice(session: AsyncSession, principal: Principal,
                      invoice_id: uuid.UUID) -> Invoice:
    stmt = select(Invoice).where(Invoice.id == invoice_id)
    if not principal.is_admin:
        if principal.user_id is None:
            raise NotFound(f"no invoice {invoice_id}")
        stmt = stmt.where(_visible(principal))
    invoice = await session.scalar(stmt)
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    return invoice


async def list_invoices(
    session: AsyncSession, principal: Principal, *, subscription_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None, status: str | None = None, limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Invoice], str | None]:
    """Newest first.  Administrators see all (filtered); anyone else their own and their
    groups' (the filters narrow that further)."""
    if status is not None and status not in INVOICE_STATUSES:
        raise Unprocessable(f"status must be one of {', '.join(INVOICE_STATUSES)}")
    stmt = where_equal(select(Invoice), (Invoice.subscription_id, subscription_id),
                       (Invoice.user_id, user_id), (Invoice.status, status))
    if not principal.is_admin:
        if principal.user_id is None:
            return [], None
        stmt = stmt.where(_visible(principal))
    rows, next_cursor = await newest_first(session, stmt, Invoice.created_at, Invoice.id,
                                           limit=limit, cursor=cursor)
    return rows, next_cursor


async def preview_invoice(session: AsyncSession, principal: Principal,
                          subscription_id: uuid.UUID,
                          config: InvoiceConfig | None = None) -> InvoiceDraft:
    """The draft of the subscription's current period, neither stored nor numbered."""
    stmt = select(Subscription).where(Subscription.id == subscription_id)
    if not principal.is_admin:
        if principal.user_id is None:
            raise NotFound(f"no subscription {subscription_id}")
        owned = Subscription.user_id == principal.user_id
        if principal.group_ids:
            owned = owned | Subscription.group_id.in_(principal.group_ids)
        stmt = stmt.where(owned)
    sub = await session.scalar(stmt)
    if sub is None:
        raise NotFound(f"no subscription {subscription_id}")
    cfg = config or InvoiceConfig.from_settings()
    return await draft_invoice(session, sub, Period(sub.current_period_start,
                                                    sub.current_period_end), cfg.tax_rate,
                               as_subscriber=True)


@dataclass(frozen=True)
class BillTo:
    name: str
    email: str | None = None
    extra: Sequence[str] = field(default_factory=tuple)


async def bill_to(session: AsyncSession, invoice: Invoice) -> BillTo:
    """Who the invoice is addressed to: the user (username, e-mail) or the group."""
    if invoice.user_id is not None:
        user = await session.get(User, invoice.user_id)
        if user is not None:
            return BillTo(user.full_name or user.username, user.email,
                          (user.username,) if user.full_name else ())
    if invoice.group_id is not None:
        group = await session.get(Group, invoice.group_id)
        if group is not None:
            return BillTo(f"Group {group.name}")
    return BillTo("(account deleted)")


async def plan_name(session: AsyncSession, plan_id: uuid.UUID) -> str:
    plan = await session.get(Plan, plan_id)
    return plan.name if plan is not None else "(plan deleted)"


__all__ = ["InvoiceConfig", "InvoiceDraft", "InvoiceLine", "LedgerRow", "Period", "UsageTotal",
           "compute_invoice", "draft_invoice", "get_invoice", "invoice_from_totals",
           "issue_current", "issue_invoice", "list_invoices", "next_number", "preview_invoice",
           "summarize"]
