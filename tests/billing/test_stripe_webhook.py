"""The Stripe webhook: events signed locally with the SDK's own helper, verified by the
SDK, each event id processed once; bad signatures refused with nothing stored."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select, update

from roost.audit.models import AuditLog
from roost.billing.models import Invoice, StripeEvent, Subscription
from roost.config import Settings
from roost.db.base import utcnow
from roost.db.engine import Database
from tests.billing.stripe_rows import (
    count,
    event,
    make_invoice,
    make_subscription,
    signed,
    stripe_events,
    subscription,
)
from tests.support.identity import make_user

pytestmark = pytest.mark.needs_stripe

SECRET = "whsec_roost_test_0123456789abcdef"
URL = "/api/v1/billing/stripe/webhook"
PROBLEM = "application/problem+json"


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, max_request_bytes=64 * 1024,
                    stripe_webhook_secret=SecretStr(SECRET))


@pytest.fixture
async def user_id(database: Database) -> uuid.UUID:
    return (await make_user(database))[0]


async def deliver(client: httpx.AsyncClient, body: dict[str, Any] | bytes,
                  secret: str = SECRET, **kwargs: Any) -> httpx.Response:
    raw, headers = signed(body, secret, **kwargs)
    return await client.post(URL, content=raw, headers=headers)


def stripe_sub(stripe_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": stripe_id, "object": "subscription", "status": status,
            "customer": "cus_123", "metadata": {}, **extra}


async def test_valid_event_updates_the_status_and_is_audited(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    sub_id = await make_subscription(database, user_id, stripe_subscription_id="sub_A1")
    evt = event("customer.subscription.updated", stripe_sub("sub_A1", "past_due"))

    reply = await deliver(client, evt)

    assert reply.status_code == 200, reply.text
    assert reply.json() == {"received": True, "event_id": evt["id"],
                            "type": "customer.subscription.updated", "outcome": "applied",
                            "detail": None}
    assert (await subscription(database, sub_id)).status == "past_due"
    [row] = await stripe_events(database)
    assert (row.id, row.outcome, row.subscription_id) == (evt["id"], "applied", sub_id)
    async with database.transaction() as session:
        actions = set((await session.scalars(
            select(AuditLog.action).where(AuditLog.resource_id == str(sub_id)))).all())
    assert {"billing.stripe.customer.subscription.updated",
            "billing.subscription.status"} <= actions


@pytest.mark.parametrize(("event_type", "stripe_status", "start", "expected"), [
    ("customer.subscription.deleted", "canceled", "active", "canceled"),
    ("customer.subscription.paused", "paused", "active", "paused"),
    ("customer.subscription.resumed", "active", "paused", "active"),
    ("customer.subscription.updated", "unpaid", "active", "past_due"),
    ("customer.subscription.updated", "incomplete_expired", "active", "canceled"),
    ("customer.subscription.updated", "active", "trialing", "active"),
])
async def test_stripe_statuses_map_to_roost_statuses(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID, event_type: str,
    stripe_status: str, start: str, expected: str,
) -> None:
    sub_id = await make_subscription(database, user_id, status=start,
                                     stripe_subscription_id="sub_M1")
    reply = await deliver(client, event(event_type, stripe_sub("sub_M1", stripe_status)))
    assert reply.status_code == 200 and reply.json()["outcome"] == "applied", reply.text
    sub = await subscription(database, sub_id)
    assert sub.status == expected
    assert (sub.canceled_at is not None) == (expected == "canceled")


async def test_subscription_found_by_its_roost_id_when_the_sync_lost_the_stripe_id(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    sub_id = await make_subscription(database, user_id)  # no stripe_subscription_id stored
    obj = stripe_sub("sub_L1", "past_due", metadata={"roost_subscription_id": str(sub_id)})
    reply = await deliver(client, event("customer.subscription.updated", obj))
    assert reply.json()["outcome"] == "applied", reply.text
    sub = await subscription(database, sub_id)
    assert (sub.status, sub.stripe_subscription_id) == ("past_due", "sub_L1")


async def test_a_long_stripe_id_found_by_the_roost_id_is_stored_and_applied(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    """A subscription found by its metadata Roost id is applied and keeps a Stripe id of
    150 characters (Stripe's ids go up to 255); the column held 100 before, and the
    webhook answered 400 ("a value is out of range"), which Stripe retries for days."""
    sub_id = await make_subscription(database, user_id)
    long_id = "sub_" + "a" * 146
    obj = stripe_sub(long_id, "past_due", metadata={"roost_subscription_id": str(sub_id)})
    reply = await deliver(client, event("customer.subscription.updated", obj))
    assert reply.status_code == 200 and reply.json()["outcome"] == "applied", reply.text
    sub = await subscription(database, sub_id)
    assert (sub.status, sub.stripe_subscription_id) == ("past_due", long_id)


@pytest.mark.parametrize("how", ["other secret", "tampered body", "missing header",
                                 "garbage header", "stale timestamp"])
async def test_bad_signature_is_400_and_nothing_is_stored(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID, how: str
) -> None:
    sub_id = await make_subscription(database, user_id, stripe_subscription_id="sub_B1")
    evt = event("customer.subscription.deleted", stripe_sub("sub_B1", "canceled"))
    raw, headers = signed(evt, "whsec_not_this_endpoints" if how == "other secret" else SECRET,
                          timestamp=int(time.time()) - 3600 if how == "stale timestamp" else None)
    if how == "tampered body":
        raw = raw.replace(b'"canceled"', b'"active"')
    elif how == "missing header":
        del headers["Stripe-Signature"]
    elif how == "garbage header":
        headers["Stripe-Signature"] = "t=notanumber,v1=zz"

    reply = await client.post(URL, content=raw, headers=headers)

    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"] == PROBLEM
    assert "Stripe-Signature" in reply.json()["detail"]
    assert SECRET not in reply.text
    assert await stripe_events(database) == []
    assert (await subscription(database, sub_id)).status == "active"


@pytest.mark.parametrize("body", [b"not json at all", b'{"object": "event"}', b"[1, 2]",
                                  b'{"id": "evt_1", "type": "x", "data": []}'])
async def test_signed_body_that_is_not_an_event_is_400(
    client: httpx.AsyncClient, database: Database, body: bytes
) -> None:
    reply = await deliver(client, body)
    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"] == PROBLEM
    assert await stripe_events(database) == []


async def test_signed_body_nested_too_deep_to_read_is_400(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A correctly signed body nested 30,000 deep (within this file's 64 KiB body limit)
    is "not a Stripe event" (400), not a 500 from the parser's RecursionError."""
    depth = 30_000
    raw = (b'{"id": "evt_deep", "type": "x", "data": {"object": ' + b"[" * depth
           + b"]" * depth + b"}}")
    reply = await deliver(client, raw)
    assert reply.status_code == 400, reply.text[:300]
    assert reply.headers["content-type"] == PROBLEM
    assert await stripe_events(database) == []


async def test_oversized_signature_header_is_400_like_any_bad_signature(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A Stripe-Signature header past 4096 characters is a 400 naming the header, as the
    docs promise for every bad signature (it was a 422 from the header's validation)."""
    raw, headers = signed(event("invoice.paid", {"id": "in_1"}), SECRET)
    headers["Stripe-Signature"] += ",v1=" + "0" * 5000
    reply = await client.post(URL, content=raw, headers=headers)
    assert reply.status_code == 400, reply.text[:300]
    assert "Stripe-Signature" in reply.json()["detail"]
    assert await stripe_events(database) == []


async def test_replayed_event_is_a_no_op(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    sub_id = await make_subscription(database, user_id, stripe_subscription_id="sub_R1")
    evt = event("customer.subscription.updated", stripe_sub("sub_R1", "past_due"))
    first = await deliver(client, evt)
    assert first.json()["outcome"] == "applied"
    # The operator reactivates the subscription; a redelivery of the old event must not
    # undo that.
    async with database.transaction() as session:
        from roost.billing import subscriptions
        from roost.principal import SYSTEM
        sub = await subscriptions.get_subscription(session, SYSTEM, sub_id)
        await subscriptions.set_status(session, SYSTEM, sub, "active", "paid by phone",
                                       sync=False)

    again = await deliver(client, evt)

    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"
    assert (await subscription(database, sub_id)).status == "active"
    assert len(await stripe_events(database)) == 1
    assert await count(database, select(AuditLog).where(
        AuditLog.action == "billing.stripe.customer.subscription.updated")) == 1


async def test_concurrent_deliveries_of_one_event_apply_it_once(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    sub_id = await make_subscription(database, user_id, stripe_subscription_id="sub_C1")
    evt = event("customer.subscription.updated", stripe_sub("sub_C1", "past_due"))
    replies = await asyncio.gather(*(deliver(client, evt) for _ in range(6)))
    outcomes = sorted(r.json()["outcome"] for r in replies)
    assert outcomes == ["applied"] + ["duplicate"] * 5, [r.text for r in replies]
    assert (await subscription(database, sub_id)).status == "past_due"
    assert len(await stripe_events(database)) == 1


async def test_distinct_events_with_one_status_at_once_apply_it_once(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    """Several events (distinct ids) that all say past_due for one active subscription,
    delivered at once: one is applied and audited, the others are ignored ("already
    past_due").  Each read the status before any held the row: all six were stored as
    applied, with six audit records of a change made once."""
    sub_id = await make_subscription(database, user_id, stripe_subscription_id="sub_C6")
    events = [event("customer.subscription.updated", stripe_sub("sub_C6", "past_due"))
              for _ in range(6)]
    replies = await asyncio.gather(*(deliver(client, evt) for evt in events))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    expected = ["applied"] + ["ignored"] * 5
    assert sorted(r.json()["outcome"] for r in replies) == expected
    assert sorted(row.outcome for row in await stripe_events(database)) == expected
    assert (await subscription(database, sub_id)).status == "past_due"
    for action in ("billing.stripe.customer.subscription.updated", "billing.subscription.status"):
        assert await count(database, select(AuditLog).where(AuditLog.action == action)) == 1


async def test_unknown_event_type_is_200_and_recorded(
    client: httpx.AsyncClient, database: Database
) -> None:
    evt = event("charge.refunded", {"id": "ch_1", "object": "charge"})
    reply = await deliver(client, evt)
    assert reply.status_code == 200
    assert reply.json()["outcome"] == "unknown_type"
    [row] = await stripe_events(database)
    assert (row.id, row.type, row.outcome) == (evt["id"], "charge.refunded", "unknown_type")


async def test_event_naming_an_unknown_subscription_is_stored_as_ignored(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    sub_id = await make_subscription(database, user_id, stripe_subscription_id="sub_K1")
    reply = await deliver(client, event("customer.subscription.deleted",
                                        stripe_sub("sub_someone_else", "canceled")))
    assert reply.status_code == 200
    assert reply.json()["outcome"] == "ignored"
    assert "sub_someone_else" in reply.json()["detail"]
    [row] = await stripe_events(database)
    assert row.outcome == "ignored" and row.subscription_id is None
    assert (await subscription(database, sub_id)).status == "active"


async def test_transition_the_lifecycle_refuses_is_ignored_with_the_reason(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    sub_id = await make_subscription(database, user_id, status="canceled",
                                     stripe_subscription_id="sub_X1")
    reply = await deliver(client, event("customer.subscription.updated",
                                        stripe_sub("sub_X1", "active")))
    assert reply.status_code == 200
    body = reply.json()
    assert body["outcome"] == "ignored" and "canceled" in body["detail"]
    assert (await subscription(database, sub_id)).status == "canceled"
    [row] = await stripe_events(database)
    assert row.outcome == "ignored" and row.subscription_id == sub_id


async def test_invoice_paid_marks_the_invoice_paid(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    sub_id = await make_subscription(database, user_id, stripe_subscription_id="sub_I1")
    invoice_id = await make_invoice(database, sub_id, lines=[], subtotal="20.00",
                                    stripe_invoice_id="in_I1")
    reply = await deliver(client, event("invoice.paid", {"id": "in_I1", "object": "invoice",
                                                         "status": "paid"}))
    assert reply.json()["outcome"] == "applied", reply.text
    async with database.transaction() as session:
        invoice = await session.get(Invoice, invoice_id)
        assert invoice is not None and invoice.status == "paid"
    again = await deliver(client, event("invoice.paid", {"id": "in_I1", "object": "invoice"}))
    assert again.json()["outcome"] == "ignored"  # a new event id, but paid already


async def test_invoice_payment_failed_makes_the_subscription_past_due(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    sub_id = await make_subscription(database, user_id, stripe_subscription_id="sub_F1")
    # A Stripe invoice Roost did not create (e.g. Stripe's own renewal) names the
    # subscription under parent.subscription_details (API 2025-03-31 and later).
    obj = {"id": "in_F1", "object": "invoice",
           "parent": {"type": "subscription_details",
                      "subscription_details": {"subscription": "sub_F1"}}}
    reply = await deliver(client, event("invoice.payment_failed", obj))
    assert reply.json()["outcome"] == "applied", reply.text
    assert (await subscription(database, sub_id)).status == "past_due"
    [row] = await stripe_events(database)
    assert row.subscription_id == sub_id


async def test_invoice_paid_goes_by_the_stripe_id_before_the_metadata(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    """invoice.paid for Stripe invoice in_D2 whose metadata names another Roost invoice,
    synced as in_D1, pays the invoice that is in_D2 and leaves the other open; before,
    either could be marked paid (the lookup matched both, unordered)."""
    sub_id = await make_subscription(database, user_id, stripe_subscription_id="sub_D1")
    first = await make_invoice(database, sub_id, lines=[], subtotal="1.00",
                               stripe_invoice_id="in_D1")
    second = await make_invoice(database, sub_id, lines=[], subtotal="2.00",
                                stripe_invoice_id="in_D2")
    reply = await deliver(client, event("invoice.paid", {
        "id": "in_D2", "object": "invoice", "metadata": {"roost_invoice_id": str(first)}}))
    assert reply.json()["outcome"] == "applied", reply.text
    async with database.transaction() as session:
        a = await session.get(Invoice, first)
        b = await session.get(Invoice, second)
        assert a is not None and b is not None
        assert (a.status, b.status) == ("open", "paid")
    # A Stripe invoice Roost does not know, naming an invoice synced as another, pays none.
    stray = await deliver(client, event("invoice.paid", {
        "id": "in_D9", "object": "invoice", "metadata": {"roost_invoice_id": str(first)}}))
    assert stray.json()["outcome"] == "ignored", stray.text


async def test_a_late_payment_failure_leaves_a_paid_invoice_alone(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    """invoice.payment_failed delivered after invoice.paid for the same invoice (Stripe's
    retry succeeded) is ignored and the subscription stays active; before, it became
    past_due for an invoice that was paid."""
    sub_id = await make_subscription(database, user_id, stripe_subscription_id="sub_O1")
    await make_invoice(database, sub_id, lines=[], subtotal="20.00", stripe_invoice_id="in_O1")
    paid = await deliver(client, event("invoice.paid", {"id": "in_O1", "object": "invoice"}))
    assert paid.json()["outcome"] == "applied", paid.text
    late = await deliver(client, event("invoice.payment_failed",
                                       {"id": "in_O1", "object": "invoice"}))
    assert late.status_code == 200
    assert late.json()["outcome"] == "ignored" and "is paid" in late.json()["detail"]
    assert (await subscription(database, sub_id)).status == "active"


async def test_a_trial_that_ended_and_failed_its_first_charge_becomes_past_due(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    """Stripe's past_due for a trial whose trial_end has passed (its first charge failed)
    makes it past_due, by way of active; before, it was ignored ("cannot go from trialing
    to past_due") and the user kept trialing.  A trial still running is not moved."""
    sub_id = await make_subscription(database, user_id, status="trialing",
                                     stripe_subscription_id="sub_T1")
    running = await deliver(client, event("customer.subscription.updated",
                                          stripe_sub("sub_T1", "past_due")))
    assert running.json()["outcome"] == "ignored", running.text
    async with database.transaction() as session:
        await session.execute(update(Subscription).where(Subscription.id == sub_id).values(
            trial_end=utcnow() - timedelta(hours=1)))
    reply = await deliver(client, event("customer.subscription.updated",
                                        stripe_sub("sub_T1", "past_due")))
    assert reply.json()["outcome"] == "applied", reply.text
    assert (await subscription(database, sub_id)).status == "past_due"
    async with database.transaction() as session:
        moves = (await session.scalars(select(AuditLog.changes).where(
            AuditLog.action == "billing.subscription.status",
            AuditLog.resource_id == str(sub_id)).order_by(AuditLog.seq))).all()
    assert [(m["from"], m["to"]) for m in moves] == [("trialing", "active"),
                                                      ("active", "past_due")]


async def test_events_of_a_stripe_subscription_roost_detached_are_ignored(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID
) -> None:
    """The deletion of a Stripe subscription Roost canceled itself (the subscription moved
    to a plan without a Stripe price, metadata.roost_detached) leaves the Roost
    subscription active."""
    sub_id = await make_subscription(database, user_id, stripe_subscription_id="sub_V1")
    obj = stripe_sub("sub_V1", "canceled", metadata={"roost_detached": str(sub_id)})
    reply = await deliver(client, event("customer.subscription.deleted", obj))
    assert reply.json()["outcome"] == "ignored", reply.text
    assert (await subscription(database, sub_id)).status == "active"


async def test_without_a_webhook_secret_the_endpoint_says_it_is_not_configured(
    app: FastAPI, client: httpx.AsyncClient, database: Database
) -> None:
    app.state.settings = app.state.settings.model_copy(update={"stripe_webhook_secret": None})
    reply = await deliver(client, event("charge.refunded", {"id": "ch_2"}))
    assert reply.status_code == 404
    assert reply.headers["content-type"] == PROBLEM
    assert "ROOST_STRIPE_WEBHOOK_SECRET" in reply.json()["detail"]
    assert await count(database, select(StripeEvent)) == 0


@pytest.mark.parametrize("owner", ["user", "group"])
async def test_invoice_paid_for_the_invoice_a_deleted_account_left_is_applied(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    user_id: uuid.UUID, owner: str,
) -> None:
    """The invoice is kept after its user or group (and subscription) is deleted: Stripe's
    invoice.paid for it marks it paid, the event keeping no subscription (not a 409 Stripe
    retries for days)."""
    from tests.knowledge.support import make_group

    plan = f"p{uuid.uuid4().hex[:8]}"
    assert (await client.post("/api/v1/billing/plans", headers=admin_headers, json={
        "key": plan, "name": "Gone", "price": "10.00", "included_credits": 10,
    })).status_code == 201
    group_id = await make_group(database, "team", user_id) if owner == "group" else None
    target = {"group_id": str(group_id)} if group_id else {"user_id": str(user_id)}
    made = await client.post("/api/v1/billing/subscriptions", headers=admin_headers,
                             json={**target, "plan": plan})
    assert made.status_code == 201, made.text
    sub_id = made.json()["id"]
    assert (await client.post(f"/api/v1/billing/subscriptions/{sub_id}/cancel",
                              headers=admin_headers, json={})).status_code == 200
    inv = await client.post("/api/v1/billing/invoices", headers=admin_headers,
                            json={"subscription_id": sub_id})
    assert inv.status_code == 201, inv.text
    gone = f"/api/v1/groups/{group_id}" if group_id else f"/api/v1/users/{user_id}"
    assert (await client.delete(gone, headers=admin_headers)).status_code == 204
    paid = event("invoice.paid", {"id": "in_gone",
                                  "metadata": {"roost_invoice_id": inv.json()["id"]}})
    reply = await deliver(client, paid)
    assert reply.status_code == 200, reply.text
    assert reply.json()["outcome"] == "applied", reply.text
    async with database.transaction() as session:
        invoice = await session.get(Invoice, uuid.UUID(inv.json()["id"]))
        assert invoice is not None and invoice.status == "paid"
        row = await session.get(StripeEvent, paid["id"])
        assert row is not None and row.subscription_id is None
