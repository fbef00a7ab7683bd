"""Period renewal: ended periods are invoiced and rolled forward once, whatever the number
of runs; trials end, paused subscriptions wait, canceled ones get one final invoice; the
``billing.renew`` job does it on the maintenance queue."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from dateutil.relativedelta import relativedelta
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.models import AuditLog
from roost.billing import jobs as billing_jobs
from roost.billing import subscriptions
from roost.billing.invoices import Period, issue_invoice
from roost.billing.models import Invoice, Subscription
from roost.billing.renewals import renew_due
from roost.db.engine import Database
from roost.errors import Unprocessable
from roost.principal import SYSTEM
from roost.tasks.models import BackgroundTask
from roost.tasks.schedules import schedules
from roost.tasks.service import enqueue
from tests.billing.test_invoices import Row, add_plan, add_subscription, ingest
from tests.support.identity import make_user
from tests.support.workers import in_process_worker

NOW = datetime(2026, 4, 10, 9, 30, tzinfo=UTC)
MARCH = Period(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


async def _invoices(database: Database, sub_id: uuid.UUID) -> list[Invoice]:
    async with database.transaction() as session:
        return list((await session.scalars(select(Invoice).where(
            Invoice.subscription_id == sub_id).order_by(Invoice.period_start))).all())


async def _sub(database: Database, sub_id: uuid.UUID) -> Subscription:
    async with database.transaction() as session:
        found = await session.get(Subscription, sub_id)
        assert found is not None
        return found


async def _user(database: Database) -> uuid.UUID:
    return (await make_user(database))[0]


async def test_an_ended_period_is_invoiced_and_rolled_forward_once(database: Database) -> None:
    plan = await add_plan(database, price="30.00")
    uid = await _user(database)
    sub = await add_subscription(database, plan, uid, period=MARCH)
    async with database.transaction() as session:
        await session.execute(text("UPDATE subscriptions SET credits_used = 700, "
                                   "credits_reserved = 25 WHERE id = :id"), {"id": sub.id})
    await ingest(database, [Row(sub.id, datetime(2026, 3, 5, tzinfo=UTC), "gpt-4o", "chat",
                                10, 20, 5, Decimal("1.005")),
                            Row(sub.id, datetime(2026, 4, 2, tzinfo=UTC), "gpt-4o", "chat",
                                10, 20, 5, Decimal("4"))], uid)

    report = await renew_due(database, now=NOW)
    assert (report.renewed, report.invoices, report.failed) == (1, 1, [])
    [invoice] = await _invoices(database, sub.id)
    assert (invoice.period_start, invoice.period_end) == MARCH
    assert invoice.total == Decimal("31.01")  # April's usage is not March's
    renewed = await _sub(database, sub.id)
    assert (renewed.current_period_start, renewed.current_period_end) == (
        MARCH.end, datetime(2026, 5, 1, tzinfo=UTC))
    assert (renewed.credits_used, renewed.credits_reserved) == (0, 25)
    async with database.transaction() as session:
        audit = await session.scalar(select(AuditLog).where(
            AuditLog.action == "billing.subscription.renew"))
        assert audit is not None and audit.user_id == uid
        assert audit.changes is not None
        assert audit.changes["before"]["credits_used"] == 700

    # Running again (the next tick, or two workers) changes nothing.
    again = await asyncio.gather(renew_due(database, now=NOW), renew_due(database, now=NOW))
    assert [(r.renewed, r.invoices) for r in again] == [(0, 0), (0, 0)]
    assert [i.id for i in await _invoices(database, sub.id)] == [invoice.id]


async def test_missed_periods_each_get_their_invoice(database: Database) -> None:
    monthly = await add_plan(database, price="10.00")
    yearly = await add_plan(database, price="100.00", period="year")
    m = await add_subscription(database, monthly, await _user(database),
                               period=Period(datetime(2026, 1, 1, tzinfo=UTC),
                                             datetime(2026, 2, 1, tzinfo=UTC)))
    y = await add_subscription(database, yearly, await _user(database),
                               period=Period(datetime(2025, 4, 1, tzinfo=UTC),
                                             datetime(2026, 4, 1, tzinfo=UTC)))
    report = await renew_due(database, now=NOW)
    assert (report.renewed, report.invoices) == (2, 4)
    monthly_invoices = await _invoices(database, m.id)
    assert [i.period_start.month for i in monthly_invoices] == [1, 2, 3]
    assert len({i.number for i in monthly_invoices}) == 3
    assert (await _sub(database, m.id)).current_period_start == datetime(2026, 4, 1, tzinfo=UTC)
    renewed = await _sub(database, y.id)
    assert (renewed.current_period_start, renewed.current_period_end) == (
        datetime(2026, 4, 1, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC))
    assert [i.total for i in await _invoices(database, y.id)] == [Decimal("100.00")]


async def test_a_plan_edited_meanwhile_applies_from_the_next_period(
        database: Database) -> None:
    """The period that ran is billed on the terms it started with; the missed periods
    after it and the new one on the plan's as edited (price and billing period)."""
    plan = await add_plan(database, price="10.00")
    sub = await add_subscription(database, plan, await _user(database),
                                 period=Period(datetime(2026, 2, 1, tzinfo=UTC), MARCH.start))
    async with database.transaction() as session:
        await session.execute(text("UPDATE plans SET price = 25, included_credits = 50 "
                                   "WHERE id = :id"), {"id": plan.id})
    report = await renew_due(database, now=NOW)
    assert (report.renewed, report.invoices, report.failed) == (1, 2, [])
    invoices = await _invoices(database, sub.id)
    assert [(i.total, i.lines[0]["credits"]) for i in invoices] == [
        (Decimal("10.00"), 1000), (Decimal("25.00"), 50)]
    renewed = await _sub(database, sub.id)
    assert (renewed.price, renewed.credits_limit, renewed.current_period_start) == (
        Decimal("25.00"), 50, MARCH.end)


async def test_trials_end_paused_wait_canceled_get_one_final_invoice(database: Database) -> None:
    plan = await add_plan(database, price="15.00")
    trial = await add_subscription(database, plan, await _user(database), period=MARCH,
                                   status="trialing", trial_end=MARCH.end)
    paused = await add_subscription(database, plan, await _user(database), period=MARCH,
                                    status="paused")
    canceled = await add_subscription(database, plan, await _user(database), period=MARCH,
                                      status="canceled")
    report = await renew_due(database, now=NOW)
    assert (report.renewed, report.finalized, report.invoices) == (1, 1, 2)

    after_trial = await _sub(database, trial.id)
    assert after_trial.status == "active"
    [trial_invoice] = await _invoices(database, trial.id)
    assert trial_invoice.total == Decimal("0.00")  # the trial month is free

    assert await _invoices(database, paused.id) == []
    assert (await _sub(database, paused.id)).current_period_start == MARCH.start

    [final] = await _invoices(database, canceled.id)
    assert final.total == Decimal("15.00")
    still = await _sub(database, canceled.id)
    assert (still.status, still.current_period_start) == ("canceled", MARCH.start)
    report = await renew_due(database, now=NOW + timedelta(days=40))
    assert report.finalized == 0 and len(await _invoices(database, canceled.id)) == 1


async def test_one_bad_ledger_does_not_stop_the_others(database: Database) -> None:
    eur = await add_plan(database, currency="EUR")
    usd = await add_plan(database)
    bad = await add_subscription(database, eur, await _user(database), period=MARCH)
    good = await add_subscription(database, usd, await _user(database), period=MARCH)
    await ingest(database, [Row(bad.id, datetime(2026, 3, 3, tzinfo=UTC), "gpt-4o", "chat",
                                1, 1, 1, Decimal("0.5"), "USD")])
    report = await renew_due(database, now=NOW)
    assert report.failed == [str(bad.id)] and report.renewed == 1
    assert len(await _invoices(database, good.id)) == 1
    assert await _invoices(database, bad.id) == []
    assert (await _sub(database, bad.id)).current_period_start == MARCH.start


async def test_an_invoice_too_big_to_store_fails_its_subscription_alone(
        database: Database) -> None:
    """Two ledger rows the ledger holds (numeric(18, 6)) sum to more than an invoice
    amount holds (numeric(14, 2)): that subscription fails, named; the others renew."""
    plan = await add_plan(database)
    subs = [await add_subscription(database, plan, await _user(database), period=MARCH)
            for _ in range(2)]
    bad, good = sorted(subs, key=lambda s: s.id)  # the bad one comes first
    await ingest(database, [Row(bad.id, datetime(2026, 3, 3, tzinfo=UTC), "gpt-4o", "chat",
                                1, 1, 1, Decimal("900000000000"), "USD", f"t:{uuid.uuid4()}")
                            for _ in range(2)])
    report = await renew_due(database, now=NOW)
    assert report.failed == [str(bad.id)] and report.renewed == 1, report
    assert (await _sub(database, good.id)).current_period_start == MARCH.end
    assert await _invoices(database, bad.id) == []
    with pytest.raises(Unprocessable, match=str(bad.id)):
        async with database.transaction() as session:
            await issue_invoice(session, bad.id, MARCH.start, MARCH.end)


async def test_a_write_the_database_refuses_fails_its_subscription_alone(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any database error while renewing one subscription (its transaction rolled back)
    leaves the others to renew, not the whole job failed every 5 minutes."""
    plan = await add_plan(database)
    subs = [await add_subscription(database, plan, await _user(database), period=MARCH)
            for _ in range(2)]
    bad, good = sorted(subs, key=lambda s: s.id)

    async def refused(session: AsyncSession, subscription_id: uuid.UUID,
                      *args: Any, **kwargs: Any) -> Any:
        if subscription_id == bad.id:
            await session.execute(text("SELECT 1 / 0"))  # division_by_zero, a DBAPIError
        return await issue_invoice(session, subscription_id, *args, **kwargs)

    monkeypatch.setattr(subscriptions, "issue_invoice", refused)  # renewal's roll_forward
    report = await renew_due(database, now=NOW)
    assert report.failed == [str(bad.id)] and report.renewed == 1, report
    assert (await _sub(database, good.id)).current_period_start == MARCH.end
    assert (await _sub(database, bad.id)).current_period_start == MARCH.start


async def test_the_renew_job_runs_on_the_maintenance_queue(database: Database) -> None:
    assert billing_jobs.renew_subscriptions is not None  # imported: the schedule registered
    schedule = schedules()["billing.renew"]
    assert schedule.every == timedelta(minutes=5)
    plan = await add_plan(database)
    ended = Period(datetime.now(UTC) - timedelta(days=31), datetime.now(UTC) - timedelta(minutes=1))
    sub = await add_subscription(database, plan, await _user(database), period=ended)
    async with database.transaction() as session:
        job = await enqueue(session, "billing.renew")
        assert job.queue == "maintenance"
    done: BackgroundTask | None = None
    async with in_process_worker(database):
        for _ in range(150):
            async with database.transaction() as session:
                done = await session.get(BackgroundTask, job.id)
            assert done is not None
            if done.status in ("completed", "failed", "dead"):
                break
            await asyncio.sleep(0.1)
    assert done is not None
    assert done.status == "completed", done.error_message
    assert done.result == {"renewed": 1, "invoices": 1, "finalized": 0, "failed": []}
    assert len(await _invoices(database, sub.id)) == 1


async def test_periods_spent_paused_are_not_billed_when_it_resumes(
        client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database) -> None:
    """A subscription paused for about 100 days (it allows nothing, and is not renewed)
    is billed, once resumed, the period it was paused in and no other: resuming issues
    that period's invoice and starts a new period then, so the next renewal run has
    nothing to catch up."""
    uid = await _user(database)
    plan = await add_plan(database, price="10.00")
    start = datetime.now(UTC) - timedelta(days=100)
    sub = await add_subscription(database, plan, uid, status="paused",
                                 period=Period(start, start + timedelta(days=30)))
    assert (await renew_due(database)).invoices == 0
    before = datetime.now(UTC)
    resp = await client.post(f"/api/v1/billing/subscriptions/{sub.id}/resume",
                             headers=admin_headers)
    assert resp.status_code == 200, resp.text
    assert (await renew_due(database)).invoices == 0
    [paused_in] = await _invoices(database, sub.id)
    assert (paused_in.period_start, paused_in.total) == (start, Decimal("10.00"))
    after = await _sub(database, sub.id)
    assert after.status == "active" and after.current_period_start >= before
    assert after.current_period_end > datetime.now(UTC) and after.credits_used == 0


async def _resumed(database: Database, monkeypatch: pytest.MonkeyPatch, *,
                   created: datetime, resumed: datetime) -> uuid.UUID:
    """A monthly subscription created on ``created``, paused in its first period and
    resumed (through the service, the clock frozen) on ``resumed``, after that period."""
    uid = (await make_user(database))[0]
    plan = await add_plan(database, price="10.00")
    first = Period(created, created + relativedelta(months=1))
    sub = await add_subscription(database, plan, uid, status="paused", period=first)
    async with database.transaction() as session:
        row = await session.get(Subscription, sub.id)
        assert row is not None
        row.created_at = created
    monkeypatch.setattr(subscriptions, "utcnow", lambda: resumed)
    async with database.transaction() as session:
        await subscriptions.resume(session, SYSTEM, sub.id)
    return sub.id


async def _period_starts(database: Database, sub_id: uuid.UUID,
                         runs: list[datetime]) -> list[str]:
    """Run renewal at each of ``runs`` (as the 5-minute job would, once a period ends)
    and list the invoiced periods' start days."""
    for now in runs:
        await renew_due(database, now=now)
    async with database.transaction() as session:
        invoices = (await session.scalars(select(Invoice).where(
            Invoice.subscription_id == sub_id).order_by(Invoice.period_start))).all()
        return [i.period_start.date().isoformat() for i in invoices]


async def test_a_period_restarted_on_the_31st_does_not_drift_to_the_30th(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Periods a resume restarted on 31 March renew as any begun on the 31st: 30 April,
    31 May, 30 June, 31 July, 31 August (renewal on the 1st of each month).  The period
    after 31 July started on 30 August: the day fell back to the creation's (the 5th)."""
    sub_id = await _resumed(database, monkeypatch,
                            created=datetime(2027, 1, 5, 12, tzinfo=UTC),
                            resumed=datetime(2027, 3, 31, 12, tzinfo=UTC))
    starts = await _period_starts(database, sub_id, [
        datetime(2027, m, 1, tzinfo=UTC) for m in range(5, 11)])
    # the paused-in period (5 January), then one invoice per renewed period
    assert starts == ["2027-01-05", "2027-03-31", "2027-04-30", "2027-05-31",
                      "2027-06-30", "2027-07-31", "2027-08-31"]


async def test_a_period_restarted_on_28_february_keeps_the_28th(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Created on the 31st, resumed on 28 February: 28 Feb -> 28 Mar, then the 28th on
    (renewal went back to the creation's 31st: 28 Mar -> 30 Apr, 33 days)."""
    sub_id = await _resumed(database, monkeypatch,
                            created=datetime(2026, 12, 31, 12, tzinfo=UTC),
                            resumed=datetime(2027, 2, 28, 12, tzinfo=UTC))
    starts = await _period_starts(database, sub_id, [
        datetime(2027, m, 1, tzinfo=UTC) + relativedelta(day=31) for m in range(3, 6)])
    assert starts == ["2026-12-31", "2027-02-28", "2027-03-28", "2027-04-28"]


async def test_canceling_while_renewal_is_behind_still_bills_every_active_period(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Renewal is behind (the server was down): an active subscription's January period
    ended unrenewed and it is canceled on 10 April: one invoice per period it was active
    in, without gaps (January to April).  Only January's was issued: February and March,
    and their usage, were never billed."""
    uid = (await make_user(database))[0]
    plan = await add_plan(database, price="10.00")
    jan = Period(datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC))
    sub = await add_subscription(database, plan, uid, period=jan)
    canceled = datetime(2027, 4, 10, 12, tzinfo=UTC)
    monkeypatch.setattr(subscriptions, "utcnow", lambda: canceled)
    async with database.transaction() as session:
        await subscriptions.cancel(session, SYSTEM, sub.id)
    await renew_due(database, now=datetime(2027, 5, 2, tzinfo=UTC))
    async with database.transaction() as session:
        invoices = (await session.scalars(select(Invoice).where(
            Invoice.subscription_id == sub.id).order_by(Invoice.period_start))).all()
        periods = [(i.period_start.date().isoformat(), i.period_end.date().isoformat())
                   for i in invoices]
    assert periods == [("2027-01-01", "2027-02-01"), ("2027-02-01", "2027-03-01"),
                       ("2027-03-01", "2027-04-01"), ("2027-04-01", "2027-05-01")]


async def test_a_named_period_reaching_into_the_running_one_is_refused(
        client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database) -> None:
    """`POST /invoices` naming a slice of the running period (ended, but inside it) is a
    409 naming period_end.  It was issued: renewal's invoice of the whole period then
    overlapped it, a 409 on every run (the period never rolled forward); or, sharing its
    start, it was taken for the period's invoice and the rest of the period's usage was
    on no invoice.  The period is then renewed and billed whole."""
    plan = await client.post("/api/v1/billing/plans", headers=admin_headers, json={
        "key": f"p{uuid.uuid4().hex[:8]}", "name": "P", "price": "5.00",
        "included_credits": 1000})
    assert plan.status_code == 201, plan.text
    sub = (await client.post("/api/v1/billing/subscriptions", headers=admin_headers, json={
        "user_id": str(await _user(database)), "plan": plan.json()["key"]})).json()
    start = datetime.fromisoformat(sub["current_period_start"])
    end = datetime.fromisoformat(sub["current_period_end"])
    for slice_start in (start, start + timedelta(microseconds=1)):
        named = await client.post("/api/v1/billing/invoices", headers=admin_headers, json={
            "subscription_id": sub["id"], "period_start": slice_start.isoformat(),
            "period_end": (slice_start + timedelta(microseconds=1)).isoformat()})
        assert named.status_code == 409 and named.json()["field"] == "period_end", named.text
    report = await renew_due(database, now=end + timedelta(minutes=1))
    assert report.failed == [] and report.renewed == 1, report.as_dict()
    assert [(i.period_start, i.period_end) for i in await _invoices(
        database, uuid.UUID(sub["id"]))] == [(start, end)]
