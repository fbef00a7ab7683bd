"""Ingested usage events are charged to their payer's current period and invoiced by their
time: an event dated outside that period is refused, not charged and never invoiced."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from roost.db.engine import Database
from tests.support.identity import make_user

Headers = dict[str, str]
API = "/api/v1/billing"


async def _plan_and_sub(client: httpx.AsyncClient, admin: Headers, user_id: uuid.UUID,
                        credits: int = 1_000_000, price: str = "0.00") -> dict[str, Any]:
    key = f"p{uuid.uuid4().hex[:8]}"
    resp = await client.post(f"{API}/plans", headers=admin, json={
        "key": key, "name": "Probe", "price": price, "included_credits": credits})
    assert resp.status_code == 201, resp.text
    resp = await client.post(f"{API}/subscriptions", headers=admin,
                             json={"user_id": str(user_id), "plan": key})
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def test_an_event_dated_outside_the_current_period_is_refused(
        client: httpx.AsyncClient, admin_headers: Headers, database: Database) -> None:
    """An event dated 2020 (before the subscription existed) or 2999 was charged to the
    running period (credits_used) while no invoice would ever list it (invoices read rows by
    their time): 5.00 USD lost, credits_used no longer the sum of the period's rows. It is a
    422 naming occurred_at; an event dated in the period is charged and invoiced."""
    uid, headers = await make_user(database)
    sub = await _plan_and_sub(client, admin_headers, uid, price="1.00")
    for when in ("2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"):
        resp = await client.post(f"{API}/usage-events", headers=admin_headers, json={"events": [
            {"idempotency_key": f"k-{uuid.uuid4().hex}", "user_id": str(uid),
             "request_type": "chat", "model": "m", "credits": 7, "cost": "2.50",
             "currency": "USD", "occurred_at": when}]})
        assert resp.status_code == 422, resp.text
        assert resp.json()["field"] == "occurred_at", resp.text
    assert (await client.get(f"{API}/subscription", headers=headers)).json()["credits_used"] == 0
    within = datetime.now(UTC).isoformat()  # the period began when the subscription did
    resp = await client.post(f"{API}/usage-events", headers=admin_headers, json={"events": [
        {"idempotency_key": f"k-{uuid.uuid4().hex}", "user_id": str(uid), "request_type": "chat",
         "model": "m", "credits": 7, "cost": "2.50", "currency": "USD", "occurred_at": within}]})
    assert resp.status_code == 200, resp.text
    used = (await client.get(f"{API}/subscription", headers=headers)).json()["credits_used"]
    resp = await client.get(f"{API}/subscriptions/{sub['id']}/invoice-preview", headers=headers)
    assert resp.status_code == 200, resp.text
    lines = resp.json()["lines"]
    assert used == 7 == sum(ln["credits"] for ln in lines if ln.get("model") == "m"), lines
