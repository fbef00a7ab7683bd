"""Subscriptions: an administrator subscribes a user (or a group) to a plan; the status
moves along the allowed transitions only; users see their own, never another's."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from roost.audit.models import AuditLog
from roost.billing import subscriptions
from roost.billing.models import Subscription
from roost.db.engine import Database
from roost.errors import Conflict
from roost.principal import SYSTEM
from tests.agents.conftest import other_user, user  # noqa: F401 - fixtures
from tests.billing.test_plans import make_plan

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
SUBS = "/api/v1/billing/subscriptions"


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def subscribe(client: httpx.AsyncClient, headers: Headers, **body: Any) -> dict[str, Any]:
    resp = await client.post(SUBS, json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def test_subscribe_a_user_read_it_and_walk_the_lifecycle(
        client: httpx.AsyncClient, admin_headers: Headers, user: User,  # noqa: F811
        other_user: User, database: Database) -> None:  # noqa: F811
    user_id, headers = user
    other_id, other_headers = other_user
    await make_plan(client, admin_headers, key="pro", trial_days=14, included_credits=1000)
    await make_plan(client, admin_headers, key="max", trial_days=0, included_credits=5000,
                    price="49.00", billing_period="year")

    sub = await subscribe(client, admin_headers, user_id=str(user_id), plan="pro")
    assert sub["status"] == "trialing" and sub["plan_key"] == "pro"
    start, end = _at(sub["current_period_start"]), _at(sub["current_period_end"])
    assert 28 <= (end - start).days <= 31  # one calendar month
    assert _at(sub["trial_end"]) - start == timedelta(days=14)
    assert (sub["credits_limit"], sub["credits_used"], sub["balance"]) == (1000, 0, 1000)
    # The plan's terms for this period, kept on the subscription.
    assert (sub["price"], sub["currency"], sub["billing_period"]) == ("19.99", "EUR", "month")

    # One live subscription per user: 409 naming the existing one.
    resp = await client.post(SUBS, json={"user_id": str(user_id), "plan": "max"},
                             headers=admin_headers)
    assert resp.status_code == 409 and sub["id"] in resp.json()["detail"]

    # The user reads theirs; the other user has none and cannot read it.
    mine = await client.get("/api/v1/billing/subscription", headers=headers)
    assert mine.status_code == 200 and mine.json()["id"] == sub["id"]
    assert mine.json()["balance"] == 1000
    none = await client.get("/api/v1/billing/subscription", headers=other_headers)
    assert none.status_code == 404 and "no live subscription" in none.json()["detail"]
    assert (await client.get(f"{SUBS}/{sub['id']}", headers=other_headers)).status_code == 404
    assert (await client.get(SUBS, headers=other_headers)).json()["items"] == []
    assert [s["id"] for s in (await client.get(SUBS, headers=headers)).json()["items"]] == \
        [sub["id"]]

    # Lifecycle: trialing -> paused -> active -> change plan -> canceled (final).
    base = f"{SUBS}/{sub['id']}"
    # Users do not manage subscriptions, not even their own.
    assert (await client.post(f"{base}/pause", headers=headers)).status_code == 403
    resp = await client.post(f"{base}/pause", json={"reason": "holiday"}, headers=admin_headers)
    assert resp.status_code == 200 and resp.json()["status"] == "paused"
    resp = await client.post(f"{base}/pause", headers=admin_headers)
    assert resp.status_code == 409
    resp = await client.post(f"{base}/resume", headers=admin_headers)
    assert resp.status_code == 200 and resp.json()["status"] == "active"
    resp = await client.post(f"{base}/change-plan", json={"plan": "max"}, headers=admin_headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["plan_key"] == "max" and resp.json()["credits_limit"] == 5000
    assert (resp.json()["price"], resp.json()["billing_period"]) == ("49.00", "year")
    resp = await client.post(f"{base}/change-plan", json={"plan": "nope"},
                             headers=admin_headers)
    assert resp.status_code == 404
    resp = await client.post(f"{base}/cancel", headers=admin_headers)
    assert resp.status_code == 200 and resp.json()["status"] == "canceled"
    assert resp.json()["canceled_at"] is not None
    for action in ("resume", "pause", "cancel"):
        resp = await client.post(f"{base}/{action}", headers=admin_headers)
        assert resp.status_code == 409, (action, resp.text)
        assert "canceled" in resp.json()["detail"]
    resp = await client.post(f"{base}/change-plan", json={"plan": "pro"},
                             headers=admin_headers)
    assert resp.status_code == 409
    assert (await client.get("/api/v1/billing/subscription", headers=headers)).status_code == 404

    # Canceled is history: the user may subscribe again, with no trial if asked.
    again = await subscribe(client, admin_headers, user_id=str(user_id), plan="pro",
                            trial_days=0)
    assert again["status"] == "active" and again["trial_end"] is None

    # Administrators filter the list.
    await subscribe(client, admin_headers, user_id=str(other_id), plan="max")
    listed = await client.get(SUBS, params={"status": "canceled"}, headers=admin_headers)
    assert [s["id"] for s in listed.json()["items"]] == [sub["id"]]
    listed = await client.get(SUBS, params={"plan": "pro"}, headers=admin_headers)
    assert [s["id"] for s in listed.json()["items"]] == [again["id"]]
    listed = await client.get(SUBS, params={"user_id": str(user_id)}, headers=admin_headers)
    assert len(listed.json()["items"]) == 2
    page = await client.get(SUBS, params={"limit": 1}, headers=admin_headers)
    assert page.json()["next_cursor"]
    nxt = await client.get(SUBS, params={"limit": 5, "cursor": page.json()["next_cursor"]},
                           headers=admin_headers)
    assert len(nxt.json()["items"]) == 2

    async with database.transaction() as session:
        actions = (await session.scalars(select(AuditLog.action).where(
            AuditLog.resource_id == sub["id"]).order_by(AuditLog.created_at))).all()
    assert actions == ["billing.subscription.create", "billing.subscription.pause",
                       "billing.subscription.resume", "billing.subscription.change_plan",
                       "billing.subscription.cancel"]


async def test_bad_subscriptions(client: httpx.AsyncClient, admin_headers: Headers,
                                 user: User) -> None:  # noqa: F811
    user_id, headers = user
    await make_plan(client, admin_headers, key="pro")
    await make_plan(client, admin_headers, key="old")
    await client.delete("/api/v1/billing/plans/old", headers=admin_headers)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"user_id": str(user_id), "plan": "gold"}, 404, "gold"),
        ({"user_id": str(uuid.uuid4()), "plan": "pro"}, 404, "user"),
        ({"group_id": str(uuid.uuid4()), "plan": "pro"}, 404, "group"),
        ({"user_id": str(user_id), "plan": "old"}, 409, "inactive"),
        ({"plan": "pro"}, 422, "user_id"),
        ({"user_id": str(user_id), "group_id": str(uuid.uuid4()), "plan": "pro"}, 422,
         "user_id"),
        ({"user_id": str(user_id), "plan": "pro", "trial_days": -1}, 422, "trial_days"),
        ({"user_id": "me", "plan": "pro"}, 422, "user_id"),
    ]
    for body, code, word in cases:
        resp = await client.post(SUBS, json=body, headers=admin_headers)
        assert resp.status_code == code, (body, resp.text)
        assert word in resp.text, (body, resp.text)
    resp = await client.post(SUBS, json={"user_id": str(user_id), "plan": "pro"},
                             headers=headers)
    assert resp.status_code == 403
    assert (await client.get(f"{SUBS}/{uuid.uuid4()}", headers=admin_headers)).status_code == 404
    assert (await client.get(SUBS, params={"status": "gone"},
                             headers=admin_headers)).status_code == 422
    assert (await client.get(SUBS, params={"cursor": "!!"},
                             headers=admin_headers)).status_code == 400
    resp = await client.post(f"{SUBS}/{uuid.uuid4()}/cancel", headers=admin_headers)
    assert resp.status_code == 404
    # A plan in another currency: switching would mix currencies in one period.
    sub = await subscribe(client, admin_headers, user_id=str(user_id), plan="pro")
    await make_plan(client, admin_headers, key="usd", currency="USD")
    resp = await client.post(f"{SUBS}/{sub['id']}/change-plan", json={"plan": "usd"},
                             headers=admin_headers)
    assert resp.status_code == 409 and "USD" in resp.json()["detail"]


async def test_a_group_subscription_serves_its_members(
        client: httpx.AsyncClient, admin_headers: Headers, user: User,  # noqa: F811
        other_user: User) -> None:  # noqa: F811
    _, headers = user
    _, other_headers = other_user
    group = await client.post("/api/v1/groups", json={"name": "team-a"}, headers=headers)
    assert group.status_code == 201, group.text
    await make_plan(client, admin_headers, key="team", trial_days=0)
    sub = await subscribe(client, admin_headers, group_id=group.json()["id"], plan="team")
    assert sub["group_id"] == group.json()["id"] and sub["user_id"] is None
    mine = await client.get("/api/v1/billing/subscription", headers=headers)
    assert mine.status_code == 200 and mine.json()["id"] == sub["id"]
    assert (await client.get(f"{SUBS}/{sub['id']}", headers=other_headers)).status_code == 404
    resp = await client.post(SUBS, json={"group_id": group.json()["id"], "plan": "team"},
                             headers=admin_headers)
    assert resp.status_code == 409


async def test_set_status_follows_the_transition_table(
        client: httpx.AsyncClient, admin_headers: Headers, user: User,  # noqa: F811
        database: Database) -> None:
    user_id, _ = user
    await make_plan(client, admin_headers, key="pro", trial_days=0)
    sub = await subscribe(client, admin_headers, user_id=str(user_id), plan="pro")
    assert sub["status"] == "active"
    async with database.transaction() as session:
        row = await session.get(Subscription, uuid.UUID(sub["id"]))
        assert row is not None
        await subscriptions.set_status(session, SYSTEM, row, "past_due", "invoice failed")
        await subscriptions.set_status(session, SYSTEM, row, "past_due", "again")  # no change
        with pytest.raises(Conflict) as refused:
            await subscriptions.set_status(session, SYSTEM, row, "trialing", "nope")
        assert "past_due" in refused.value.detail and "trialing" in refused.value.detail
        await subscriptions.set_status(session, SYSTEM, row, "active", "paid")
    async with database.transaction() as session:
        changes: list[Any] = list((await session.scalars(select(AuditLog.changes).where(
            AuditLog.resource_id == sub["id"], AuditLog.action == "billing.subscription.status"
        ).order_by(AuditLog.created_at))).all())
    assert [(c["from"], c["to"]) for c in changes] == [("active", "past_due"),
                                                       ("past_due", "active")]
    # The table the Stripe webhook relies on.
    assert {k: sorted(v) for k, v in subscriptions.TRANSITIONS.items()} == {
        "trialing": ["active", "canceled", "paused"],
        "active": ["canceled", "past_due", "paused"],
        "past_due": ["active", "canceled", "paused"],
        "paused": ["active", "canceled"],
        "canceled": [],
    }


async def test_concurrent_subscribes_give_one_subscription(
        client: httpx.AsyncClient, admin_headers: Headers, user: User,  # noqa: F811
        database: Database) -> None:
    user_id, _ = user
    await make_plan(client, admin_headers, key="pro")
    answers = await asyncio.gather(*(
        client.post(SUBS, json={"user_id": str(user_id), "plan": "pro"}, headers=admin_headers)
        for _ in range(6)))
    assert sorted(a.status_code for a in answers) == [201] + [409] * 5, \
        [a.text for a in answers]
    async with database.transaction() as session:
        rows = (await session.scalars(select(Subscription).where(
            Subscription.user_id == user_id))).all()
    assert len(rows) == 1


async def test_a_row_written_without_terms_takes_its_plans(
        client: httpx.AsyncClient, admin_headers: Headers, user: User,  # noqa: F811
        database: Database) -> None:
    """A subscription inserted by plain SQL, which knows nothing of the terms a period is
    billed on, takes its plan's (the trigger of migration 1120)."""
    plan = await make_plan(client, admin_headers, key="pro", price="7.50")
    sub_id = uuid.uuid4()
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO subscriptions (id, user_id, plan_id, status, current_period_start, "
            "current_period_end, credits_limit) VALUES (:id, :user_id, :plan_id, 'active', "
            "now(), now() + interval '1 month', 10)"),
            {"id": sub_id, "user_id": user[0], "plan_id": plan["id"]})
    resp = await client.get(f"{SUBS}/{sub_id}", headers=admin_headers)
    assert (resp.json()["price"], resp.json()["currency"], resp.json()["billing_period"]) == \
        ("7.50", "EUR", "month")


async def test_resume_ends_a_trial_early_and_the_period_bills_the_plan_fee(
        client: httpx.AsyncClient, admin_headers: Headers, user: User) -> None:  # noqa: F811
    """``active`` ends the trial: ``trial_end`` becomes now, so the period is no longer
    billed as "(trial)" at 0.00 (nor sent to Stripe as a trial)."""
    await make_plan(client, admin_headers, key="pro", price="25.00", trial_days=60)
    sub = await subscribe(client, admin_headers, user_id=str(user[0]), plan="pro")
    assert sub["status"] == "trialing"
    resumed = await client.post(f"{SUBS}/{sub['id']}/resume", headers=admin_headers, json={})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "active"
    assert _at(resumed.json()["trial_end"]) < _at(sub["trial_end"]) - timedelta(days=59)
    preview = await client.get(f"{SUBS}/{sub['id']}/invoice-preview", headers=admin_headers)
    plan_line = preview.json()["lines"][0]
    assert plan_line["amount"] == "25.00" and "(trial)" not in plan_line["description"], \
        plan_line


async def test_a_plan_ref_holding_a_control_character_is_a_422_naming_the_plan(
        client: httpx.AsyncClient, admin_headers: Headers, user: User,  # noqa: F811
        other_user: User) -> None:  # noqa: F811
    """Not the database's anonymous 400 for a NUL: subscribe, change-plan and ?plan=."""
    await make_plan(client, admin_headers, key="pro")
    sub = await subscribe(client, admin_headers, user_id=str(user[0]), plan="pro")
    for ref in ("pro\x00", "pro\x01", "pro\n"):
        replies = [
            await client.post(SUBS, headers=admin_headers,
                              json={"user_id": str(other_user[0]), "plan": ref}),
            await client.post(f"{SUBS}/{sub['id']}/change-plan", headers=admin_headers,
                              json={"plan": ref}),
            await client.get(SUBS, headers=admin_headers, params={"plan": ref}),
        ]
        for resp in replies:
            assert resp.status_code == 422, (resp.request.url, resp.text)
            assert "'plan'" in resp.text or "plan" in str(resp.json().get("errors")), \
                (resp.request.url, resp.text)
    got = await client.get(f"{SUBS}/{sub['id']}", headers=admin_headers)
    assert got.json()["plan_key"] == "pro"


async def test_own_subscriptions_are_listed_by_their_deactivated_plan(
    client: httpx.AsyncClient, admin_headers: Headers, user: User,  # noqa: F811
) -> None:
    """A deactivated plan's subscriptions go on, and a user narrowing their list by the
    plan it shows (``?plan=<plan_id>`` or its key) finds theirs (it was a 404: the filter
    looked the plan up as one to subscribe to); an unknown plan stays a 404."""
    user_id, headers = user
    plan = await make_plan(client, admin_headers, key="old-plan")
    sub = await subscribe(client, admin_headers, user_id=str(user_id), plan="old-plan")
    gone = await client.delete("/api/v1/billing/plans/old-plan", headers=admin_headers)
    assert gone.status_code in (200, 204), gone.text
    for ref in (plan["id"], "old-plan"):
        narrowed = await client.get("/api/v1/billing/subscriptions", headers=headers,
                                    params={"plan": ref})
        assert narrowed.status_code == 200, narrowed.text
        assert [s["id"] for s in narrowed.json()["items"]] == [sub["id"]]
    unknown = await client.get("/api/v1/billing/subscriptions", headers=headers,
                               params={"plan": "never-was"})
    assert unknown.status_code == 404, unknown.text
