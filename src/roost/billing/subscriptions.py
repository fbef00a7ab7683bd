"""Subscriptions: a user or a group on a plan, with a status lifecycle and a period.

An administrator subscribes a user (or a group) to an active plan: the subscription
starts ``trialing`` (``trial_end`` = now + the trial days) when the plan or the request
gives trial days, ``active`` otherwise; its period runs from now for one calendar month
or year (``dateutil.relativedelta``: 31 January + 1 month is 28/29 February) and its
credits are the plan's included credits; it keeps the plan's price, currency and billing
period as its terms for the period (:func:`keep_terms`).  One live (not canceled)
subscription per user and per group: the service answers 409 naming the existing one
(concurrent subscribes of one subscriber queue on a transaction advisory lock), and the
partial unique indexes enforce it whatever writes the table.

Statuses move only along :data:`TRANSITIONS`; ``canceled`` is final.
:func:`set_status` is the one place a status changes (the admin API's cancel, pause and
resume, and Stripe's webhook with ``actor=roost.principal.SYSTEM``).  Every change is
audited and followed by :func:`roost.billing.stripe_sync.enqueue_sync`.  Leaving
``paused`` after the period ended bills that period and starts a new one then (the
periods spent paused are not billed).

Reads: administrators see every subscription; anyone else their own and their groups'
(row-level security says so too); another user's is a 404.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from dateutil.relativedelta import relativedelta
from sqlalchemy import false, func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.billing import stripe_sync
from roost.billing.invoices import InvoiceConfig, issue_invoice
from roost.billing.models import Plan, Subscription
from roost.billing.plans import find_plan, plans_by_id
from roost.billing.schemas import SubscriptionCreate
from roost.db.base import utcnow
from roost.db.lookup import one_or_404
from roost.errors import Conflict, Forbidden, NotFound, Unprocessable
from roost.identity.models import Group, User
from roost.pagination import newest_first
from roost.principal import Principal

# from -> the statuses it may move to; canceled is final.
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "trialing": frozenset({"active", "canceled", "paused"}),
    "active": frozenset({"past_due", "paused", "canceled"}),
    "past_due": frozenset({"active", "canceled", "paused"}),
    "paused": frozenset({"active", "canceled"}),
    "canceled": frozenset(),
}


@dataclass(frozen=True)
class SubscriptionView:
    """A subscription with its plan's key and its balance (what the API answers)."""

    subscription: Subscription
    plan: Plan

    def fields(self) -> dict[str, Any]:
        sub = self.subscription
        return {
            "id": sub.id, "user_id": sub.user_id, "group_id": sub.group_id,
            "plan_id": sub.plan_id, "plan_key": self.plan.key, "status": sub.status,
            "current_period_start": sub.current_period_start,
            "current_period_end": sub.current_period_end, "trial_end": sub.trial_end,
            "credits_limit": sub.credits_limit, "credits_used": sub.credits_used,
            "credits_reserved": sub.credits_reserved, "balance": balance(sub),
            "price": sub.price, "currency": sub.currency,
            "billing_period": sub.billing_period,
            "stripe_subscription_id": sub.stripe_subscription_id,
            "stripe_customer_id": sub.stripe_customer_id, "created_at": sub.created_at,
            "updated_at": sub.updated_at, "canceled_at": sub.canceled_at,
        }


def keep_terms(sub: Subscription, plan: Plan) -> None:
    """Give ``sub`` the plan's terms for the period it is in (subscribing, renewing,
    changing plan): invoices bill the period from them, so a plan edited meanwhile
    applies from the subscriber's next period.  Its credits limit is set by the caller
    (a renewal and a plan change set it; nothing else)."""
    sub.price = plan.price
    sub.currency = plan.currency
    sub.billing_period = plan.billing_period


def balance(sub: Subscription) -> int:
    return sub.credits_limit - sub.credits_used - sub.credits_reserved


RENEWED_STATUSES: Final = ("trialing", "active", "past_due")
MAX_PERIODS: Final = 240  # catching up more than 20 years of months is a data error


def period_step(billing_period: str, anchor: int | None = None) -> relativedelta:
    """One billing period.  ``anchor``: the day of the month periods end on, so they do
    not drift: 31 January -> 28 February -> 31 March (relativedelta clamps the day to the
    month's last)."""
    if billing_period == "year":
        return relativedelta(years=1, day=anchor)
    return relativedelta(months=1, day=anchor)


def _month_end(moment: datetime) -> int:
    return (moment + relativedelta(day=31)).day


def anchor_day(sub: Subscription) -> int:
    """The day of the month ``sub``'s periods end on, read from its current period (every
    period is computed from the one before, so the two ends tell it): the start's day,
    unless that was clamped to a short month's end; then the end's day, unless that was
    too; then the larger (31 Jan -> 28 Feb: 31; 28 Feb -> 28 Mar: 28; 30 Apr -> 31 May:
    31).  Not the day the subscription was created on: a resume restarts the periods on
    its own day (created on the 5th, resumed on 31 March, the periods drifted from 31
    July to 30 August)."""
    start, end = sub.current_period_start, sub.current_period_end
    if start.day != _month_end(start):
        return start.day
    if end.day != _month_end(end):
        return end.day
    day = max(start.day, end.day)
    created = sub.created_at
    if day < 31 and created is not None and created.month == start.month and created.day > day:
        return created.day  # a yearly period begun on 29 February: both ends on the 28th
    return day


async def roll_forward(session: AsyncSession, sub: Subscription, plan: Plan, now: datetime,
                       *, config: InvoiceConfig | None = None) -> int:
    """Bill each of ``sub``'s periods that ended by ``now`` (one invoice each: the first on
    the terms it ran on, the subscription's; the ones after it on the plan's, a plan
    edited meanwhile applying from there) and make the one holding ``now`` current: the
    invoices issued.  Renewal's work, and a cancellation's or pause's while renewal is
    behind (their active periods were never billed)."""
    step = period_step(plan.billing_period, anchor_day(sub))
    start, end, issued = sub.current_period_start, sub.current_period_end, 0
    while end <= now and issued < MAX_PERIODS:
        await issue_invoice(session, sub.id, start, end, config=config, now=now)
        issued += 1
        keep_terms(sub, plan)
        sub.credits_limit = plan.included_credits
        start, end = end, end + step
    sub.current_period_start, sub.current_period_end = start, end
    if issued:
        sub.credits_used = 0
    return issued


def period_end(start: datetime, billing_period: str) -> datetime:
    """The end of a period starting at ``start``: one calendar month or year later."""
    return start + (relativedelta(years=1) if billing_period == "year"
                    else relativedelta(months=1))


def _require_admin(actor: Principal) -> None:
    if not actor.is_admin:
        raise Forbidden("only administrators manage subscriptions")


def _subscriber(sub: Subscription) -> str:
    return f"user {sub.user_id}" if sub.user_id is not None else f"group {sub.group_id}"


def _visible(actor: Principal) -> Any:
    if actor.is_admin:
        return true()
    if actor.user_id is None:
        return false()
    if actor.group_ids:
        return or_(Subscription.user_id == actor.user_id,
                   Subscription.group_id.in_(list(actor.group_ids)))
    return Subscription.user_id == actor.user_id


async def _view(session: AsyncSession, sub: Subscription) -> SubscriptionView:
    plan = await session.get(Plan, sub.plan_id)
    assert plan is not None  # a foreign key with ON DELETE RESTRICT
    return SubscriptionView(sub, plan)


async def views(session: AsyncSession, subs: list[Subscription]) -> list[SubscriptionView]:
    plans = await plans_by_id(session, {s.plan_id for s in subs})
    return [SubscriptionView(s, plans[s.plan_id]) for s in subs]


async def _live_of(session: AsyncSession, *, user_id: uuid.UUID | None = None,
                   group_id: uuid.UUID | None = None) -> Subscription | None:
    stmt = select(Subscription).where(Subscription.status != "canceled")
    stmt = stmt.where(Subscription.user_id == user_id if user_id is not None
                      else Subscription.group_id == group_id)
    return await session.scalar(stmt.limit(1))


def _already(sub: Subscription) -> Conflict:
    return Conflict(f"{_subscriber(sub)} already has a live subscription {sub.id} (status "
                    f"{sub.status}): cancel it or change its plan",
                    extra={"subscription_id": str(sub.id)})


async def _audit(session: AsyncSession, actor: Principal, sub: Subscription, action: str,
                 changes: dict[str, Any]) -> None:
    # Recorded under the subscriber (the user reads their own audit records); the actor
    # is in the metadata.
    await record(session, f"billing.subscription.{action}", user_id=sub.user_id,
                 resource_type="subscription", resource_id=sub.id, changes=changes,
                 metadata={"actor": str(actor.user_id) if actor.user_id else actor.kind,
                           **({"group_id": str(sub.group_id)} if sub.group_id else {})})


async def create_subscription(session: AsyncSession, actor: Principal,
                              body: SubscriptionCreate) -> SubscriptionView:
    _require_admin(actor)
    plan = await find_plan(session, actor, body.plan, share=True)  # its terms, as they are
    if not plan.active:
        raise Conflict(f"plan {plan.key!r} is inactive: nobody new subscribes to it",
                       extra={"field": "plan"})
    if body.user_id is not None:
        if await session.scalar(select(User.id).where(User.id == body.user_id)) is None:
            raise NotFound(f"user {body.user_id} does not exist", extra={"field": "user_id"})
    elif await session.scalar(select(Group.id).where(Group.id == body.group_id)) is None:
        raise NotFound(f"group {body.group_id} does not exist", extra={"field": "group_id"})
    # Concurrent subscribes of one subscriber queue here until the first commits; the
    # next then sees its row and answers 409 naming it.
    await session.execute(select(func.pg_advisory_xact_lock(
        func.hashtextextended(f"roost.billing.subscribe:{body.user_id or body.group_id}", 0))))
    existing = await _live_of(session, user_id=body.user_id, group_id=body.group_id)
    if existing is not None:
        raise _already(existing)
    now = utcnow()
    trial_days = plan.trial_days if body.trial_days is None else body.trial_days
    sub = Subscription(
        user_id=body.user_id, group_id=body.group_id, plan_id=plan.id,
        status="trialing" if trial_days > 0 else "active",
        trial_end=now + timedelta(days=trial_days) if trial_days > 0 else None,
        current_period_start=now, current_period_end=period_end(now, plan.billing_period),
        credits_limit=plan.included_credits, credits_used=0, credits_reserved=0,
        created_at=now, updated_at=now)
    keep_terms(sub, plan)
    session.add(sub)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:  # the partial unique index (the lock above makes it rare)
        raise Conflict(f"{'user' if body.user_id else 'group'} "
                       f"{body.user_id or body.group_id} already has a live subscription"
                       ) from None
    await _audit(session, actor, sub, "create",
                 {"plan": plan.key, "status": sub.status, "credits_limit": sub.credits_limit,
                  "trial_days": trial_days})
    await stripe_sync.enqueue_sync(session, "subscription", sub.id)
    return SubscriptionView(sub, plan)


async def get_subscription(session: AsyncSession, actor: Principal, subscription_id: uuid.UUID,
                           *, lock: bool = False) -> Subscription:
    return await one_or_404(
        session, select(Subscription).where(Subscription.id == subscription_id,
                                            _visible(actor)),
        lock=lock, missing=f"subscription {subscription_id} does not exist")


async def get_view(session: AsyncSession, actor: Principal,
                   subscription_id: uuid.UUID) -> SubscriptionView:
    return await _view(session, await get_subscription(session, actor, subscription_id))


async def my_subscription(session: AsyncSession, actor: Principal) -> SubscriptionView:
    """The caller's live subscription: their own, else one of their groups' (the oldest)."""
    if actor.user_id is None:
        raise NotFound("the operator token has no user and so no subscription: act as a user")
    sub = await _live_of(session, user_id=actor.user_id)
    if sub is None and actor.group_ids:
        sub = await session.scalar(
            select(Subscription).where(Subscription.status != "canceled",
                                       Subscription.group_id.in_(list(actor.group_ids)))
            .order_by(Subscription.created_at, Subscription.id).limit(1))
    if sub is None:
        raise NotFound("you have no live subscription (nor do your groups): an "
                       "administrator subscribes you to a plan")
    return await _view(session, sub)


async def list_subscriptions(
    session: AsyncSession, actor: Principal, *, status: str | None = None,
    user_id: uuid.UUID | None = None, group_id: uuid.UUID | None = None,
    plan: str | None = None, limit: int = 50, cursor: str | None = None,
) -> tuple[list[SubscriptionView], str | None]:
    """Newest first; administrators see all, anyone else their own and their groups'."""
    stmt = select(Subscription).where(_visible(actor))
    if status is not None:
        stmt = stmt.where(Subscription.status == status)
    if user_id is not None:
        stmt = stmt.where(Subscription.user_id == user_id)
    if group_id is not None:
        stmt = stmt.where(Subscription.group_id == group_id)
    if plan is not None:
        # A deactivated plan's subscriptions go on: they are listed by it too (only the
        # caller's visible subscriptions are, whatever the plan).
        found = await find_plan(session, actor, plan, inactive_too=True)
        stmt = stmt.where(Subscription.plan_id == found.id)
    rows, next_cursor = await newest_first(session, stmt, Subscription.created_at,
                                           Subscription.id, limit=limit, cursor=cursor)
    return await views(session, rows), next_cursor


async def set_status(session: AsyncSession, actor: Principal, sub: Subscription,
                     new_status: str, reason: str | None, *, sync: bool = True,
                     action: str = "status") -> Subscription:
    """Move ``sub`` to ``new_status`` along :data:`TRANSITIONS` (409 naming from and to
    otherwise); the same status is no change (nothing audited).  Locks the row, audits
    ``billing.subscription.<action>`` with ``reason`` and queues the Stripe sync unless
    ``sync`` is false (the webhook applying Stripe's own change)."""
    if new_status not in TRANSITIONS:
        raise Unprocessable(f"unknown subscription status {new_status!r}: one of "
                            f"{', '.join(TRANSITIONS)}", extra={"field": "status"})
    await session.refresh(sub, with_for_update=True)
    old = sub.status
    if old == new_status:
        return sub
    if new_status not in TRANSITIONS[old]:
        allowed = ", ".join(sorted(TRANSITIONS[old])) or "nothing: canceled is final"
        raise Conflict(f"subscription {sub.id} cannot go from {old} to {new_status} "
                       f"(from {old}: {allowed})",
                       extra={"from": old, "to": new_status})
    now = utcnow()
    changes: dict[str, Any] = {"from": old, "to": new_status}
    if old in RENEWED_STATUSES and new_status not in RENEWED_STATUSES \
            and sub.current_period_end <= now:
        # Renewal is behind (the server was down): the periods it was active in are
        # billed first, else a cancellation billed only the stale one (renewal's last
        # invoice) and a pause left the ones after it unbilled for good.
        plan = await session.get(Plan, sub.plan_id)
        assert plan is not None  # the foreign key
        changes["caught_up"] = await roll_forward(session, sub, plan, now)
    if old == "paused" and new_status != "canceled" and sub.current_period_end <= now:
        changes["period"] = await _restart_period(session, sub, now)
    sub.status = new_status
    sub.updated_at = now
    if new_status == "canceled":
        sub.canceled_at = now
    if new_status == "active" and sub.trial_end is not None and sub.trial_end > now:
        # Active ends the trial (resume ends it early): its period bills the plan fee.
        changes["trial_end"] = {"from": sub.trial_end.isoformat(), "to": now.isoformat()}
        sub.trial_end = now
    await session.flush()
    if reason:
        changes["reason"] = reason
    await _audit(session, actor, sub, action, changes)
    if sync:
        await stripe_sync.enqueue_sync(session, "subscription", sub.id)
    return sub


async def _restart_period(session: AsyncSession, sub: Subscription,
                          now: datetime) -> dict[str, str]:
    """A paused subscription leaving ``paused`` after its period ended (renewal skipped
    it): that period is billed, as renewal would have, and a new one starts now on the
    plan's terms; the periods it spent paused (it allowed nothing) are not billed."""
    await issue_invoice(session, sub.id, sub.current_period_start, sub.current_period_end)
    plan = await session.get(Plan, sub.plan_id)
    assert plan is not None  # the foreign key
    before = f"{sub.current_period_start.isoformat()} to {sub.current_period_end.isoformat()}"
    keep_terms(sub, plan)
    sub.credits_limit = plan.included_credits
    sub.credits_used = 0
    sub.current_period_start, sub.current_period_end = now, period_end(now, plan.billing_period)
    return {"from": before, "to": f"{now.isoformat()} to {sub.current_period_end.isoformat()}"}


async def _lifecycle(session: AsyncSession, actor: Principal, subscription_id: uuid.UUID,
                     new_status: str, action: str, reason: str | None) -> SubscriptionView:
    _require_admin(actor)
    sub = await get_subscription(session, actor, subscription_id)
    if sub.status == new_status:
        raise Conflict(f"subscription {sub.id} is {new_status} already",
                       extra={"from": sub.status, "to": new_status})
    await set_status(session, actor, sub, new_status, reason, action=action)
    return await _view(session, sub)


async def cancel(session: AsyncSession, actor: Principal, subscription_id: uuid.UUID,
                 reason: str | None = None) -> SubscriptionView:
    return await _lifecycle(session, actor, subscription_id, "canceled", "cancel", reason)


async def pause(session: AsyncSession, actor: Principal, subscription_id: uuid.UUID,
                reason: str | None = None) -> SubscriptionView:
    return await _lifecycle(session, actor, subscription_id, "paused", "pause", reason)


async def resume(session: AsyncSession, actor: Principal, subscription_id: uuid.UUID,
                 reason: str | None = None) -> SubscriptionView:
    return await _lifecycle(session, actor, subscription_id, "active", "resume", reason)


async def change_plan(session: AsyncSession, actor: Principal, subscription_id: uuid.UUID,
                      plan_ref: str) -> SubscriptionView:
    """Move a live subscription to another active plan in the same currency: its credits
    limit and its terms (price, billing period) become the new plan's at once (credits
    used stay; the running period is billed on the new plan); the period is unchanged."""
    _require_admin(actor)
    sub = await get_subscription(session, actor, subscription_id, lock=True)
    if sub.status == "canceled":
        raise Conflict(f"subscription {sub.id} is canceled: subscribe anew",
                       extra={"from": "canceled"})
    plan = await find_plan(session, actor, plan_ref, share=True)
    if not plan.active:
        raise Conflict(f"plan {plan.key!r} is inactive: nobody new subscribes to it",
                       extra={"field": "plan"})
    old = await session.get(Plan, sub.plan_id)
    assert old is not None
    if plan.id == old.id:
        raise Conflict(f"subscription {sub.id} is on plan {plan.key!r} already",
                       extra={"field": "plan"})
    if plan.currency != sub.currency:
        raise Conflict(f"plan {plan.key!r} is billed in {plan.currency}, the subscription "
                       f"(plan {old.key!r}) in {sub.currency}: cancel and subscribe anew",
                       extra={"field": "plan"})
    changes = {"from_plan": old.key, "to_plan": plan.key,
               "credits_limit": [sub.credits_limit, plan.included_credits],
               "price": [str(sub.price), str(plan.price)]}
    sub.plan_id = plan.id
    sub.credits_limit = plan.included_credits
    keep_terms(sub, plan)
    sub.updated_at = utcnow()
    await session.flush()
    await _audit(session, actor, sub, "change_plan", changes)
    await stripe_sync.enqueue_sync(session, "subscription", sub.id)
    return SubscriptionView(sub, plan)


async def find_user_subscription(session: AsyncSession, actor: Principal,
                                 login: str) -> Subscription:
    """The live subscription of the user with this username or e-mail (CLI)."""
    user_id = await user_id_of(session, login)
    sub = await _live_of(session, user_id=user_id)
    if sub is None or not (actor.is_admin or actor.user_id == user_id):
        raise NotFound(f"user {login!r} has no live subscription")
    return sub


async def user_id_of(session: AsyncSession, login: str) -> uuid.UUID:
    value = login.strip().lower()
    found = await session.scalar(select(User.id).where(
        or_(User.username == value, User.email == value)))
    if found is None:
        raise NotFound(f"no user {login!r} (give a username or e-mail)")
    return found
