"""Period renewal (the ``billing.renew`` job, every 5 minutes): each subscription whose
current period has ended gets that period's invoice, then its period rolls forward
(start = the old end, end = start + one month or year, repeated, one invoice per period,
until the period contains now), the ended period billed on the terms it ran on (the
price, currency and billing period the subscription kept) and the next ones on the
plan's as it is now, with ``credits_used`` back to 0 (credits held by calls in
flight stay reserved) and a trial that is over turned ``active``.  Paused subscriptions
are not renewed; a canceled one gets the invoice of its last period, once.

Each subscription is renewed in its own transaction, locked ``FOR UPDATE SKIP LOCKED``:
two workers never renew the same one, and one that fails (a currency mismatch in its
ledger, an invoice too big to store, any write the database refuses) is logged and left
for the next run without holding up the others.  Re-running
is harmless: an invoice exists once per (subscription, period start) and a renewed
subscription is no longer due."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.billing.invoices import InvoiceConfig, issue_invoice
from roost.billing.models import Invoice, Plan, Subscription
from roost.billing.subscriptions import RENEWED_STATUSES, period_step, roll_forward
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.db.errors import sqlstate
from roost.errors import RoostError

log = structlog.get_logger("roost.billing.renewals")

BATCH = 100


@dataclass
class RenewalReport:
    renewed: int = 0  # subscriptions whose period rolled forward
    invoices: int = 0  # invoices issued (or found already issued)
    finalized: int = 0  # canceled subscriptions given their last invoice
    failed: list[str] = field(default_factory=list)  # subscription ids, logged

    def as_dict(self) -> dict[str, object]:
        return {"renewed": self.renewed, "invoices": self.invoices,
                "finalized": self.finalized, "failed": self.failed}


def _due(now: datetime) -> ColumnElement[bool]:
    """Renewable and ended, or canceled, ended and never given its last invoice."""
    final_missing = ~exists().where(Invoice.subscription_id == Subscription.id,
                                    Invoice.period_start == Subscription.current_period_start)
    return and_(Subscription.current_period_end <= now, or_(
        Subscription.status.in_(RENEWED_STATUSES),
        and_(Subscription.status == "canceled", final_missing)))


async def renew_subscription(session: AsyncSession, subscription_id: uuid.UUID, *,
                             now: datetime | None = None,
                             config: InvoiceConfig | None = None) -> tuple[int, bool]:
    """Renew one subscription if it is still due and nobody else holds it: the invoices
    issued and whether its period rolled forward (``(0, False)`` when there was nothing to
    do)."""
    now = now or utcnow()
    sub = await session.scalar(
        select(Subscription).where(Subscription.id == subscription_id, _due(now))
        .with_for_update(skip_locked=True))
    if sub is None:
        return 0, False
    if sub.status == "canceled":
        await issue_invoice(session, sub.id, sub.current_period_start, sub.current_period_end,
                            config=config, now=now)
        return 1, False
    plan = await session.get(Plan, sub.plan_id)
    assert plan is not None  # the foreign key
    before = {"period_start": sub.current_period_start.isoformat(),
              "period_end": sub.current_period_end.isoformat(), "status": sub.status,
              "credits_used": sub.credits_used}
    issued = await roll_forward(session, sub, plan, now, config=config)
    start, end = sub.current_period_start, sub.current_period_end
    sub.credits_used = 0
    if sub.status == "trialing" and sub.trial_end is not None and sub.trial_end <= now:
        sub.status = "active"
    sub.updated_at = now
    await session.flush()
    await record(session, "billing.subscription.renew", user_id=sub.user_id,
                 resource_type="subscription", resource_id=sub.id,
                 changes={"before": before,
                          "after": {"period_start": start.isoformat(),
                                    "period_end": end.isoformat(), "status": sub.status,
                                    "credits_used": 0}},
                 metadata={"invoices": issued, "group_id": str(sub.group_id)
                           if sub.group_id else None})
    return issued, True


async def renew_due(database: Database, *, now: datetime | None = None,
                    config: InvoiceConfig | None = None, batch: int = BATCH) -> RenewalReport:
    """Renew every due subscription, each in its own transaction."""
    now = now or utcnow()
    report = RenewalReport()
    after: uuid.UUID | None = None
    while True:
        async with database.transaction() as session:
            stmt = select(Subscription.id).where(_due(now))
            if after is not None:
                stmt = stmt.where(Subscription.id > after)
            ids = list((await session.scalars(stmt.order_by(Subscription.id).limit(batch))).all())
        if not ids:
            return report
        for sub_id in ids:
            try:
                async with database.transaction() as session:
                    issued, rolled = await renew_subscription(session, sub_id, now=now,
                                                              config=config)
            except RoostError as exc:
                log.warning("billing.renew_failed", subscription_id=str(sub_id),
                            error=exc.detail)
                report.failed.append(str(sub_id))
                continue
            except DBAPIError as exc:
                # The database refused this one's writes (its transaction is rolled
                # back): the others still renew.  A lost connection fails the job.
                if exc.connection_invalidated:
                    raise
                log.warning("billing.renew_failed", subscription_id=str(sub_id),
                            error=type(exc.orig).__name__, sqlstate=sqlstate(exc))
                report.failed.append(str(sub_id))
                continue
            report.invoices += issued
            if rolled:
                report.renewed += 1
            elif issued:
                report.finalized += 1
        after = ids[-1]


__all__ = ["RENEWED_STATUSES", "RenewalReport", "period_step", "renew_due",
           "renew_subscription"]
