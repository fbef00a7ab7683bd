"""Syncing subscriptions and invoices to Stripe through the SDK, against a loopback
Stripe stub (tests/support/stripe_stub.py): each object is created once, even when the
job runs twice or loses its write-back, and what Roost sends is what Stripe needs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select, update

from roost.billing import stripe_sync
from roost.billing.models import Invoice, Plan, Subscription
from roost.config import Settings, get_settings
from roost.db.engine import Database
from roost.tasks.handlers import PermanentError
from roost.tasks.models import BackgroundTask, TaskStatus
from tests.billing.stripe_rows import (
    event,
    make_invoice,
    make_subscription,
    signed,
    subscription,
)
from tests.support.identity import make_user
from tests.support.stripe_stub import StripeStub, stripe_stub
from tests.support.workers import in_process_worker

pytestmark = pytest.mark.needs_stripe

API_KEY = "sk_test_roost_loopback_key_0123456789"


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StripeStub]:
    """The stub, and ROOST_STRIPE_* pointing at it (what enqueue_sync and the job read)."""
    with stripe_stub(API_KEY) as server:
        monkeypatch.setenv("ROOST_STRIPE_SECRET_KEY", API_KEY)
        monkeypatch.setenv("ROOST_STRIPE_API_BASE", server.url)
        get_settings.cache_clear()
        try:
            yield server
        finally:
            monkeypatch.delenv("ROOST_STRIPE_SECRET_KEY")
            monkeypatch.delenv("ROOST_STRIPE_API_BASE")
            get_settings.cache_clear()


@pytest.fixture
def config(stub: StripeStub) -> stripe_sync.StripeConfig:
    return stripe_sync.StripeConfig(api_key=API_KEY, api_base=stub.url)


@pytest.fixture
async def user_id(database: Database) -> uuid.UUID:
    return (await make_user(database, username=f"ada-{uuid.uuid4().hex[:6]}"))[0]


async def sync_jobs(database: Database) -> list[BackgroundTask]:
    async with database.transaction() as session:
        return list((await session.scalars(select(BackgroundTask).where(
            BackgroundTask.task_type == stripe_sync.SYNC_TASK))).all())


async def test_enqueue_sync_queues_a_job_only_with_a_stripe_key(
    database: Database, user_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub_id = await make_subscription(database, user_id)
    monkeypatch.delenv("ROOST_STRIPE_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    async with database.transaction() as session:
        await stripe_sync.enqueue_sync(session, "subscription", sub_id)
    assert await sync_jobs(database) == []

    monkeypatch.setenv("ROOST_STRIPE_SECRET_KEY", API_KEY)
    get_settings.cache_clear()
    try:
        async with database.transaction() as session:
            await stripe_sync.enqueue_sync(session, "subscription", sub_id)
    finally:
        get_settings.cache_clear()
    [job] = await sync_jobs(database)
    assert job.payload == {"kind": "subscription", "id": str(sub_id)}
    assert job.max_retries == 8


async def test_subscription_sync_creates_customer_and_subscription_once(
    database: Database, user_id: uuid.UUID, stub: StripeStub, config: stripe_sync.StripeConfig
) -> None:
    sub_id = await make_subscription(database, user_id, stripe_price_id="price_pro_monthly")

    first = await stripe_sync.sync_subscription(database, config, sub_id)
    second = await stripe_sync.sync_subscription(database, config, sub_id)

    [customer] = stub.created("customer")
    [remote] = stub.created("subscription")
    assert customer["metadata"] == {"roost_user_id": str(user_id)}
    assert customer["email"].endswith("@example.test")
    assert remote["customer"] == customer["id"]
    assert remote["items"]["data"][0]["price"]["id"] == "price_pro_monthly"
    assert remote["metadata"] == {"roost_subscription_id": str(sub_id)}
    assert first == {"customer": customer["id"], "subscription": remote["id"], "created": True}
    assert second == {"customer": customer["id"], "subscription": remote["id"]}
    sub = await subscription(database, sub_id)
    assert (sub.stripe_customer_id, sub.stripe_subscription_id) == (customer["id"], remote["id"])
    [create_customer] = stub.calls("POST", "/v1/customers")
    [create_sub] = stub.calls("POST", "/v1/subscriptions")
    assert create_customer.idempotency_key == f"roost-customer-user-{user_id}"
    assert create_sub.idempotency_key == f"roost-subscription-{sub_id}"
    assert create_sub.form["items[0][price]"] == "price_pro_monthly"


async def test_a_retry_that_lost_its_write_back_gets_the_same_stripe_objects(
    database: Database, user_id: uuid.UUID, stub: StripeStub, config: stripe_sync.StripeConfig
) -> None:
    """The job died after Stripe created the objects, before Roost stored their ids: the
    retry sends the same idempotency keys and Stripe answers with the same objects."""
    sub_id = await make_subscription(database, user_id)
    await stripe_sync.sync_subscription(database, config, sub_id)
    async with database.transaction() as session:
        await session.execute(update(Subscription).where(Subscription.id == sub_id).values(
            stripe_customer_id=None, stripe_subscription_id=None))

    await stripe_sync.sync_subscription(database, config, sub_id)

    assert len(stub.created("customer")) == 1 and len(stub.created("subscription")) == 1
    assert [r.replayed for r in stub.calls("POST", "/v1/subscriptions")] == [False, True]
    sub = await subscription(database, sub_id)
    assert sub.stripe_subscription_id == stub.created("subscription")[0]["id"]


async def test_the_job_through_the_queue_syncs_once_even_when_enqueued_twice(
    database: Database, user_id: uuid.UUID, stub: StripeStub
) -> None:
    sub_id = await make_subscription(database, user_id, status="trialing")
    for _ in range(2):
        async with database.transaction() as session:
            await stripe_sync.enqueue_sync(session, "subscription", sub_id)
    async with in_process_worker(database):
        for _ in range(150):
            jobs = await sync_jobs(database)
            if all(j.status == TaskStatus.COMPLETED for j in jobs):
                break
            await asyncio.sleep(0.1)
    assert [j.status for j in jobs] == [TaskStatus.COMPLETED] * 2, [j.error_message for j in jobs]
    [remote] = stub.created("subscription")
    assert remote["status"] == "trialing" and remote["trial_end"] is not None
    assert len(stub.created("customer")) == 1
    assert (await subscription(database, sub_id)).stripe_subscription_id == remote["id"]


async def test_a_plan_without_a_stripe_price_is_skipped(
    database: Database, user_id: uuid.UUID, stub: StripeStub, config: stripe_sync.StripeConfig
) -> None:
    sub_id = await make_subscription(database, user_id, stripe_price_id=None, plan_key="free")
    result = await stripe_sync.sync_subscription(database, config, sub_id)
    assert result == {"skipped": "plan 'free' has no stripe_price_id"}
    assert stub.requests == []


async def test_cancel_and_plan_change_follow_roost(
    database: Database, user_id: uuid.UUID, stub: StripeStub, config: stripe_sync.StripeConfig
) -> None:
    sub_id = await make_subscription(database, user_id)
    await stripe_sync.sync_subscription(database, config, sub_id)
    [remote] = stub.created("subscription")

    # A plan change: the Stripe subscription's item moves to the new price.
    async with database.transaction() as session:
        team = Plan(key=f"team-{uuid.uuid4().hex[:6]}", name="Team", price=Decimal("50"),
                    included_credits=5000, stripe_price_id="price_team")
        session.add(team)
        await session.flush()
        await session.execute(update(Subscription).where(Subscription.id == sub_id)
                              .values(plan_id=team.id))
    result = await stripe_sync.sync_subscription(database, config, sub_id)
    assert result["price_changed"] is True
    assert remote["items"]["data"][0]["price"]["id"] == "price_team"

    async with database.transaction() as session:
        await session.execute(update(Subscription).where(Subscription.id == sub_id)
                              .values(status="canceled"))
    assert (await stripe_sync.sync_subscription(database, config, sub_id))["canceled"] is True
    assert (await stripe_sync.sync_subscription(database, config, sub_id))["canceled"] is False
    assert remote["status"] == "canceled"
    assert len(stub.calls("DELETE", "/v1/subscriptions")) == 1


async def test_invoice_sync_creates_one_invoice_with_its_lines_and_tax(
    database: Database, user_id: uuid.UUID, stub: StripeStub, config: stripe_sync.StripeConfig
) -> None:
    sub_id = await make_subscription(database, user_id)
    lines = [
        {"kind": "plan", "description": "Pro (month)", "amount": "20.00"},
        {"kind": "usage", "description": "gpt-4o-mini: 1.2M tokens", "model": "gpt-4o-mini",
         "amount": "1.234"},
        {"kind": "usage", "description": "tool calls", "amount": "1.234"},
        {"kind": "usage", "description": "free model", "amount": "0"},
    ]
    # Roost's subtotal sums the exact amounts (22.468 -> 22.47); per-line rounding gives
    # 22.46, so a rounding line keeps Stripe's total equal to Roost's.
    invoice_id = await make_invoice(database, sub_id, lines=lines, subtotal="22.47",
                                    tax_rate="0.2", tax="4.49")

    first = await stripe_sync.sync_invoice(database, config, invoice_id)
    again = await stripe_sync.sync_invoice(database, config, invoice_id)

    [remote] = stub.created("invoice")
    items = stub.created("invoiceitem")
    assert first["created"] is True and again == {"invoice": remote["id"]}
    assert remote["pending_invoice_items_behavior"] == "exclude"
    assert remote["metadata"]["roost_invoice_id"] == str(invoice_id)
    assert [(i["description"], i["amount"]) for i in items] == [
        ("Pro (month)", 2000), ("gpt-4o-mini: 1.2M tokens", 123), ("tool calls", 123),
        ("Rounding", 1), ("Tax (20 %)", 449)]
    assert sum(i["amount"] for i in items) == 2696  # Roost's total, 26.96
    assert {i["invoice"] for i in items} == {remote["id"]}
    assert stub.calls("POST", "/v1/invoices")[0].idempotency_key == f"roost-invoice-{invoice_id}"
    async with database.transaction() as session:
        invoice = await session.get(Invoice, invoice_id)
        assert invoice is not None and invoice.stripe_invoice_id == remote["id"]
    # The customer was created on the way (the subscription had not synced yet).
    assert len(stub.created("customer")) == 1


async def test_a_stripe_subscription_bills_the_plan_fee_so_the_invoice_leaves_it_out(
    database: Database, user_id: uuid.UUID, stub: StripeStub, config: stripe_sync.StripeConfig
) -> None:
    sub_id = await make_subscription(database, user_id)
    await stripe_sync.sync_subscription(database, config, sub_id)
    plan_line = {"kind": "plan", "description": "Pro plan, monthly", "amount": "20.00"}
    only_fee = await make_invoice(database, sub_id, lines=[plan_line], subtotal="20.00",
                                  tax_rate="0.1", tax="2.00")
    result = await stripe_sync.sync_invoice(database, config, only_fee)
    assert result == {"skipped": "only the plan fee, which the Stripe subscription bills"}
    assert stub.created("invoice") == []

    async with database.transaction() as session:  # the next period's invoice
        await session.execute(update(Invoice).where(Invoice.id == only_fee).values(
            period_start=Invoice.period_start - timedelta(days=60),
            period_end=Invoice.period_end - timedelta(days=60)))
    with_usage = await make_invoice(
        database, sub_id, lines=[plan_line, {"kind": "usage", "description": "gpt-4o: chat",
                                             "amount": "3.50"}],
        subtotal="23.50", tax_rate="0.1", tax="2.35")
    await stripe_sync.sync_invoice(database, config, with_usage)
    assert [(i["description"], i["amount"]) for i in stub.created("invoiceitem")] == [
        ("gpt-4o: chat", 350), ("Tax (10 %)", 35)]


async def test_a_move_to_a_plan_without_a_stripe_price_charges_its_fee_in_the_invoice(
    database: Database, user_id: uuid.UUID, stub: StripeStub, config: stripe_sync.StripeConfig
) -> None:
    """A subscription synced to Stripe and moved to a plan with no Stripe price gets its
    Stripe subscription canceled (marked detached) and its invoice charges the new fee;
    before, Stripe went on billing the old price and the new fee was never charged."""
    sub_id = await make_subscription(database, user_id)
    first_plan = (await subscription(database, sub_id)).plan_id
    await stripe_sync.sync_subscription(database, config, sub_id)
    [remote] = stub.created("subscription")
    async with database.transaction() as session:
        team = Plan(key=f"team-{uuid.uuid4().hex[:6]}", name="Team", price=Decimal("50"),
                    included_credits=5000, stripe_price_id=None)
        session.add(team)
        await session.flush()
        await session.execute(update(Subscription).where(Subscription.id == sub_id)
                              .values(plan_id=team.id, price=Decimal("50")))
    plan_line = {"kind": "plan", "description": "Team plan, monthly", "amount": "50.00"}
    # Issued before the subscription's sync ran: the fee is charged all the same.
    early = await make_invoice(database, sub_id, lines=[plan_line], subtotal="50.00")
    await stripe_sync.sync_invoice(database, config, early)
    assert [(i["description"], i["amount"]) for i in stub.created("invoiceitem")] == [
        ("Team plan, monthly", 5000)]

    result = await stripe_sync.sync_subscription(database, config, sub_id)
    assert result == {"subscription": remote["id"], "detached": True}
    assert remote["status"] == "canceled"
    assert remote["metadata"]["roost_detached"] == str(sub_id)
    sub = await subscription(database, sub_id)
    assert (sub.status, sub.stripe_subscription_id) == ("active", None)
    again = await stripe_sync.sync_subscription(database, config, sub_id)
    assert again == {"skipped": f"plan {team.key!r} has no stripe_price_id"}
    assert len(stub.calls("DELETE", "/v1/subscriptions")) == 1

    # Moved back to the first plan the same day: a new Stripe subscription, not the
    # canceled one (Stripe replays a creation under the same idempotency key for a day).
    async with database.transaction() as session:
        await session.execute(update(Subscription).where(Subscription.id == sub_id)
                              .values(plan_id=first_plan, price=Decimal("20")))
    back = await stripe_sync.sync_subscription(database, config, sub_id)
    assert back["created"] is True and back["subscription"] != remote["id"], back
    fresh = [s for s in stub.created("subscription") if s["id"] == back["subscription"]]
    assert fresh and fresh[0]["status"] != "canceled", fresh
    assert (await subscription(database, sub_id)).stripe_subscription_id == back["subscription"]


def test_minor_units() -> None:
    assert stripe_sync.minor_units(Decimal("19.995"), "usd") == 2000
    assert stripe_sync.minor_units(Decimal("1500"), "JPY") == 1500
    assert stripe_sync.minor_units(Decimal("0.004"), "EUR") == 0
    # Three-decimal currencies are counted in thousandths (fils), multiples of ten: 5.12
    # KWD was sent as 512 fils (0.512 KWD), a tenth of the invoice.
    assert stripe_sync.minor_units(Decimal("5.12"), "KWD") == 5120
    assert stripe_sync.minor_units(Decimal("1.00"), "bhd") == 1000
    assert stripe_sync.minor_units(Decimal("0.125"), "OMR") == 130


async def test_refusals_dead_letter_the_job_and_never_log_the_key(
    database: Database, user_id: uuid.UUID, stub: StripeStub,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sub_id = await make_subscription(database, user_id)
    stub.api_key = "sk_test_rotated"  # Roost's key no longer works: Stripe answers 401
    with pytest.raises(PermanentError, match="AuthenticationError"):
        await stripe_sync.run_job(database, stripe_sync.SyncPayload(kind="subscription",
                                                                    id=sub_id))
    assert API_KEY not in capsys.readouterr().out
    assert API_KEY not in repr(stripe_sync.StripeConfig.from_settings(get_settings()))


async def test_stripe_unreachable_is_retried(
    database: Database, user_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub_id = await make_subscription(database, user_id)
    with stripe_stub(API_KEY) as gone:
        url = gone.url
    monkeypatch.setenv("ROOST_STRIPE_SECRET_KEY", API_KEY)
    monkeypatch.setenv("ROOST_STRIPE_API_BASE", url)
    get_settings.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="will retry") as raised:
            await stripe_sync.run_job(database, stripe_sync.SyncPayload(kind="subscription",
                                                                        id=sub_id))
        assert not isinstance(raised.value, PermanentError)
    finally:
        get_settings.cache_clear()


async def test_end_to_end_api_to_stripe_and_back(
    app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
    user_id: uuid.UUID, stub: StripeStub,
) -> None:
    """An administrator creates a plan with a Stripe price and subscribes a user; the
    worker creates them in Stripe; Stripe's signed webhook then cancels it in Roost."""
    secret = "whsec_end_to_end"
    app.state.settings = app.state.settings.model_copy(
        update={"stripe_webhook_secret": SecretStr(secret)})
    plan = await client.post("/api/v1/billing/plans", headers=admin_headers, json={
        "key": "pro", "name": "Pro", "price": "20.00", "included_credits": 1000,
        "stripe_price_id": "price_pro_e2e"})
    assert plan.status_code == 201, plan.text
    created = await client.post("/api/v1/billing/subscriptions", headers=admin_headers,
                                json={"user_id": str(user_id), "plan": "pro"})
    assert created.status_code == 201, created.text
    sub_id = uuid.UUID(created.json()["id"])
    async with in_process_worker(database):
        for _ in range(150):
            if (await subscription(database, sub_id)).stripe_subscription_id is not None:
                break
            await asyncio.sleep(0.1)
    [remote] = stub.created("subscription")
    assert remote["items"]["data"][0]["price"]["id"] == "price_pro_e2e"
    shown = await client.get(f"/api/v1/billing/subscriptions/{sub_id}", headers=admin_headers)
    assert shown.json()["stripe_subscription_id"] == remote["id"]

    raw, headers = signed(event("customer.subscription.deleted",
                                {**remote, "status": "canceled"}), secret)
    reply = await client.post("/api/v1/billing/stripe/webhook", content=raw, headers=headers)
    assert reply.json()["outcome"] == "applied", reply.text
    assert (await subscription(database, sub_id)).status == "canceled"
    # Stripe's own change is not synced back: no job was queued for it.
    assert len(await sync_jobs(database)) == 1
