"""Plans: administrators create, change and deactivate them; everyone reads the active
ones; bad input is a 422 naming the field, never a 500."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select

from roost.audit.models import AuditLog
from roost.db.engine import Database
from tests.agents.conftest import other_user, user  # noqa: F401 - fixtures

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]

PRO: dict[str, Any] = {
    "key": "pro", "name": "Pro", "price": "19.99", "currency": "EUR",
    "billing_period": "month", "included_credits": 100_000, "trial_days": 14,
    "limits": {"models_allowed": ["gpt-4o*", "claude-*"], "runs_per_day": 50},
}


async def make_plan(client: httpx.AsyncClient, headers: Headers, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/billing/plans", json={**PRO, **body}, headers=headers)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def test_admin_creates_a_plan_everyone_reads_it_and_deactivation_hides_it(
        client: httpx.AsyncClient, admin_headers: Headers, user: User,  # noqa: F811
        database: Database) -> None:
    _, headers = user
    plan = await make_plan(client, admin_headers)
    assert plan["price"] == "19.99" and plan["currency"] == "EUR"
    assert plan["limits"] == {"models_allowed": ["gpt-4o*", "claude-*"], "max_agents": None,
                              "max_documents": None, "runs_per_day": 50}
    assert plan["active"] is True

    # A user reads it by key and by id, and in the list.
    for ref in ("pro", plan["id"]):
        resp = await client.get(f"/api/v1/billing/plans/{ref}", headers=headers)
        assert resp.status_code == 200 and resp.json()["key"] == "pro"
    listed = (await client.get("/api/v1/billing/plans", headers=headers)).json()
    assert [p["key"] for p in listed["items"]] == ["pro"]

    # The same key again is a conflict.
    resp = await client.post("/api/v1/billing/plans", json=PRO, headers=admin_headers)
    assert resp.status_code == 409 and "pro" in resp.json()["detail"]

    # PATCH changes what is given; limits are replaced as a whole.
    resp = await client.patch("/api/v1/billing/plans/pro", headers=admin_headers,
                              json={"price": 24, "limits": {"max_agents": 3}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["price"] == "24.00"
    assert resp.json()["limits"]["max_agents"] == 3
    assert resp.json()["limits"]["models_allowed"] is None
    resp = await client.patch("/api/v1/billing/plans/pro", headers=admin_headers,
                              json={"name": None})
    assert resp.status_code == 422

    # DELETE deactivates: users no longer see it; administrators do on request.
    assert (await client.delete("/api/v1/billing/plans/pro",
                                headers=admin_headers)).status_code == 204
    assert (await client.get("/api/v1/billing/plans/pro", headers=headers)).status_code == 404
    assert (await client.get("/api/v1/billing/plans", headers=headers)).json()["items"] == []
    everything = await client.get("/api/v1/billing/plans", params={"include_inactive": "true"},
                                  headers=admin_headers)
    assert [p["active"] for p in everything.json()["items"]] == [False]
    # ...and reactivate it.
    resp = await client.patch("/api/v1/billing/plans/pro", json={"active": True},
                              headers=admin_headers)
    assert resp.status_code == 200 and resp.json()["active"] is True

    async with database.transaction() as session:
        actions = (await session.scalars(select(AuditLog.action).where(
            AuditLog.resource_id == plan["id"]).order_by(AuditLog.created_at))).all()
    assert actions == ["billing.plan.create", "billing.plan.update", "billing.plan.deactivate",
                       "billing.plan.update"]


async def test_only_administrators_write_plans(client: httpx.AsyncClient, admin_headers: Headers,
                                               user: User) -> None:  # noqa: F811
    _, headers = user
    resp = await client.post("/api/v1/billing/plans", json=PRO, headers=headers)
    assert resp.status_code == 403
    await make_plan(client, admin_headers)
    assert (await client.patch("/api/v1/billing/plans/pro", json={"price": 0},
                               headers=headers)).status_code == 403
    assert (await client.delete("/api/v1/billing/plans/pro",
                                headers=headers)).status_code == 403
    assert (await client.get("/api/v1/billing/plans/nope",
                             headers=headers)).status_code == 404


async def test_bad_plans_are_refused_naming_the_field(client: httpx.AsyncClient,
                                                      admin_headers: Headers) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"price": "-1"}, "price"),
        ({"price": "10000000000"}, "price"),
        ({"price": 1e300}, "price"),
        ({"price": "1.005"}, "price"),
        ({"price": "NaN"}, "price"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "EURO"}, "currency"),
        ({"billing_period": "week"}, "billing_period"),
        ({"included_credits": -5}, "included_credits"),
        ({"included_credits": 10**13}, "included_credits"),
        ({"included_credits": "5"}, "included_credits"),
        ({"trial_days": 366}, "trial_days"),
        ({"key": "Pro Plan"}, "key"),
        ({"key": "-pro"}, "key"),
        ({"limits": {"max_users": 3}}, "max_users"),
        ({"limits": {"runs_per_day": -1}}, "runs_per_day"),
        ({"limits": {"models_allowed": "gpt-4o"}}, "models_allowed"),
        ({"surprise": 1}, "surprise"),
    ]
    for change, field in bad:
        resp = await client.post("/api/v1/billing/plans", json={**PRO, **change},
                                 headers=admin_headers)
        assert resp.status_code == 422, (change, resp.text)
        assert field in resp.text, (change, resp.text)
    # Nothing was created.
    listed = await client.get("/api/v1/billing/plans", headers=admin_headers,
                              params={"include_inactive": "true"})
    assert listed.json()["items"] == []
    # A free plan without limits is fine; big but valid amounts too.
    free = await make_plan(client, admin_headers, key="free", price=0, limits=None,
                           trial_days=0, included_credits=0)
    assert free["price"] == "0.00" and free["limits"]["runs_per_day"] is None
    big = await make_plan(client, admin_headers, key="big", price="9999999999.99",
                          included_credits=10**12)
    assert big["price"] == "9999999999.99" and big["included_credits"] == 10**12
