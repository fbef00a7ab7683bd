"""Plans: what a subscription costs, the credits it includes and its feature limits.

Administrators create and change them; everyone reads the active ones (row-level
security lets everyone read every plan; the service hides inactive ones from
non-administrators).  Deleting a plan deactivates it: nobody new subscribes to it, the
subscriptions on it keep working.  A plan is named by its key (``pro``) or its id.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.billing.models import Plan, Subscription
from roost.billing.schemas import PlanCreate, PlanLimits, PlanUpdate
from roost.db.base import utcnow
from roost.db.lookup import one_or_404
from roost.errors import BadRequest, Conflict, Forbidden, Unprocessable
from roost.pagination import MALFORMED_CURSOR, decode_cursor, encode_cursor, page_of
from roost.principal import Principal

CENTS: Final = Decimal("0.01")
PLAN_NOT_NULL: Final = ("name", "price", "currency", "billing_period", "included_credits",
                        "trial_days", "active")


def require_admin(actor: Principal, what: str = "plans") -> None:
    if not actor.is_admin:
        raise Forbidden(f"only administrators change {what}")


def limits_json(limits: PlanLimits | None) -> dict[str, Any]:
    """The stored form: the limits that are set (a missing one is no limit)."""
    if limits is None:
        return {}
    return limits.model_dump(exclude_none=True)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, PlanLimits):
        return limits_json(value)
    return value


async def _flush_unique(session: AsyncSession, key: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"a plan with key {key!r} exists already",
                       extra={"field": "key"}) from None


async def create_plan(session: AsyncSession, actor: Principal, body: PlanCreate) -> Plan:
    require_admin(actor)
    existing = await session.scalar(select(Plan.id).where(Plan.key == body.key))
    if existing is not None:
        raise Conflict(f"a plan with key {body.key!r} exists already ({existing})",
                       extra={"field": "key"})
    plan = Plan(key=body.key, name=body.name,
                description=body.description, price=body.price.quantize(CENTS),
                currency=body.currency, billing_period=body.billing_period,
                included_credits=body.included_credits, limits=limits_json(body.limits),
                trial_days=body.trial_days, stripe_price_id=body.stripe_price_id, active=True)
    session.add(plan)
    await _flush_unique(session, body.key)
    await session.refresh(plan)
    await record(session, "billing.plan.create", user_id=actor.user_id, resource_type="plan",
                 resource_id=plan.id, changes={"key": plan.key, "price": str(plan.price),
                                               "currency": plan.currency,
                                               "included_credits": plan.included_credits})
    return plan


def _ref_condition(ref: str) -> Any:
    try:
        return Plan.id == uuid.UUID(ref)
    except ValueError:
        return Plan.key == ref


async def find_plan(session: AsyncSession, actor: Principal, ref: str, *,
                    lock: bool = False, share: bool = False, inactive_too: bool = False,
                    ) -> Plan:
    """The plan named by key or id.  Non-administrators see active plans only (unless
    ``inactive_too``: a filter by the plan of their own subscriptions); an unknown (or
    hidden) one is a 404.  ``lock``: ``FOR UPDATE`` (to change it); ``share``: ``FOR
    SHARE`` (a subscription takes its terms: a change of the plan waits for it, and it
    reads the plan as changed)."""
    stmt = select(Plan).where(_ref_condition(ref))
    if not actor.is_admin and not inactive_too:
        stmt = stmt.where(Plan.active)
    if share and not lock:
        stmt = stmt.with_for_update(read=True)
    return await one_or_404(session, stmt, lock=lock, missing=f"no plan with key or id {ref!r}",
                            extra={"field": "plan"})


async def list_plans(session: AsyncSession, actor: Principal, *,
                     include_inactive: bool = False, limit: int = 50,
                     cursor: str | None = None) -> tuple[list[Plan], str | None]:
    """Plans by key; inactive ones only for administrators who ask for them."""
    stmt = select(Plan)
    if not (include_inactive and actor.is_admin):
        stmt = stmt.where(Plan.active)
    if cursor is not None:
        after = decode_cursor(cursor).get("key")
        if not isinstance(after, str):
            raise BadRequest(MALFORMED_CURSOR)
        stmt = stmt.where(Plan.key > after)
    rows = (await session.scalars(stmt.order_by(Plan.key).limit(limit + 1))).all()
    return page_of(rows, limit, lambda p: encode_cursor({"key": p.key}))


async def update_plan(session: AsyncSession, actor: Principal, ref: str,
                      body: PlanUpdate) -> Plan:
    """Change a plan.  Subscriptions keep their current period's terms (price, billing
    period, credits: roost.billing.subscriptions.keep_terms); the new ones apply from
    their next period (renewal).  The currency cannot change while live subscriptions
    are on the plan (409): a subscription keeps one currency for life, as a plan change
    does."""
    require_admin(actor)
    plan = await find_plan(session, actor, ref, lock=True)
    given = body.model_fields_set
    for fld in PLAN_NOT_NULL:
        if fld in given and getattr(body, fld) is None:
            raise Unprocessable(f"{fld} cannot be null", extra={"field": fld})
    if "currency" in given and body.currency != plan.currency:
        live = await session.scalar(select(func.count()).select_from(Subscription).where(
            Subscription.plan_id == plan.id, Subscription.status != "canceled"))
        if live:
            raise Conflict(
                f"plan {plan.key!r} has {live} live subscription(s) billed in "
                f"{plan.currency}: its currency cannot change while they are on it (a "
                f"subscription keeps one currency); create a plan in {body.currency} and "
                "subscribe anew", extra={"field": "currency", "live_subscriptions": live})
    changes: dict[str, Any] = {}
    for fld in sorted(given):
        value: Any = getattr(body, fld)
        if fld == "limits":
            value = limits_json(value)
        elif fld == "price":
            value = value.quantize(CENTS)
        if getattr(plan, fld) != value:
            changes[fld] = _plain(value)
            setattr(plan, fld, value)
    if changes:
        plan.updated_at = utcnow()
        await session.flush()
        await session.refresh(plan)
        await record(session, "billing.plan.update", user_id=actor.user_id,
                     resource_type="plan", resource_id=plan.id,
                     changes={"key": plan.key, **changes})
    return plan


async def deactivate_plan(session: AsyncSession, actor: Principal, ref: str) -> Plan:
    """Deactivate a plan (nobody new subscribes; existing subscriptions keep it)."""
    require_admin(actor)
    plan = await find_plan(session, actor, ref, lock=True)
    if plan.active:
        plan.active = False
        plan.updated_at = utcnow()
        await session.flush()
        await record(session, "billing.plan.deactivate", user_id=actor.user_id,
                     resource_type="plan", resource_id=plan.id, changes={"key": plan.key})
    return plan


async def plans_by_id(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, Plan]:
    if not ids:
        return {}
    rows = (await session.scalars(select(Plan).where(Plan.id.in_(list(ids))))).all()
    return {p.id: p for p in rows}
