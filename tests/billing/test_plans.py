"""Plans: administrators create, change and deactivate them; everyone reads the active
ones; bad input is a 422 naming the field, never a 500."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text

from roost.audit.models import AuditLog
from roost.billing.renewals import renew_due
from roost.db.engine import Database
from tests.agents.conftest import other_user, user  # noqa: F401 - fixtures
from tests.agents.test_agents_cli import cli_env
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
API = "/api/v1/billing"

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
        ({"name": "   "}, "name"),
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


async def test_plan_names_are_stripped_and_blank_ones_refused_on_patch_as_on_create(
        client: httpx.AsyncClient, admin_headers: Headers) -> None:
    """A name of blanks is no name: 422 naming the field on PATCH (as on create, above),
    the stored name unchanged; a name is stored without its surrounding blanks."""
    await make_plan(client, admin_headers, name="  Pro  ")
    for name in ("   ", "", "\t\n"):
        resp = await client.patch("/api/v1/billing/plans/pro", headers=admin_headers,
                                  json={"name": name})
        assert resp.status_code == 422, (name, resp.text)
        assert "name" in resp.text
    resp = await client.get("/api/v1/billing/plans/pro", headers=admin_headers)
    assert resp.json()["name"] == "Pro"


# Control characters within a name: CLI tables print it, so an escape would reach the
# operator's terminal (\x1b[31m turns it red; \x01 and DEL print nothing visible).
CONTROL_NAMES = ("Pro\x01", "\x1b[31mPro", "P\x7fro", "Pro\nPlus")


async def test_a_plan_name_with_a_control_character_is_refused(
        client: httpx.AsyncClient, admin_headers: Headers) -> None:
    """Any control character, not only NUL, is a 422 naming `name` on create and PATCH;
    the stored name is unchanged."""
    for name in CONTROL_NAMES:
        resp = await client.post(f"{API}/plans", headers=admin_headers,
                                 json={**PRO, "name": name})
        assert resp.status_code == 422 and "name" in resp.text, (name, resp.text)
    listed = await client.get(f"{API}/plans", headers=admin_headers,
                              params={"include_inactive": "true"})
    assert listed.json()["items"] == []
    await make_plan(client, admin_headers)
    for name in CONTROL_NAMES:
        resp = await client.patch(f"{API}/plans/pro", headers=admin_headers, json={"name": name})
        assert resp.status_code == 422 and "name" in resp.text, (name, resp.text)
    assert (await client.get(f"{API}/plans/pro", headers=admin_headers)).json()["name"] == "Pro"


async def test_roost_billing_plans_add_refuses_a_name_with_a_control_character(
        pg_server: PgTestServer, db_name: str, tmp_path: Path) -> None:
    """`roost billing plans add --name` refuses it in one line as the API does; no plan is
    created, so `roost billing plans` prints no escape."""
    env = cli_env(pg_server, db_name, tmp_path)
    for name in ("Pro\x01", "\x1b[31mPro"):
        out = run_roost("billing", "plans", "add", "pro", "--name", name, env=env)
        assert out.returncode != 0 and "name" in out.stderr, (out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
    listed = run_roost("billing", "plans", "--all", env=env)
    assert listed.returncode == 0 and "pro" not in listed.stdout, listed.stderr
    assert "\x1b" not in listed.stdout


async def _end_the_period(database: Database, subscription_id: str) -> None:
    async with database.transaction() as session:
        await session.execute(text(
            "UPDATE subscriptions SET current_period_start = now() - interval '31 days', "
            "current_period_end = now() - interval '1 second' WHERE id = :id"),
            {"id": subscription_id})


async def test_a_new_price_applies_from_each_subscribers_next_period(
        client: httpx.AsyncClient, admin_headers: Headers, database: Database) -> None:
    """PATCH of a plan's price leaves running periods alone: the preview and the invoice
    of the period that ran bill the price it started with; the renewed period bills the
    new one (docs/billing.md, "Plans and subscriptions")."""
    uid, _ = await make_user(database)
    await make_plan(client, admin_headers, price="10.00", currency="USD", trial_days=0)
    resp = await client.post(f"{API}/subscriptions", headers=admin_headers,
                             json={"user_id": str(uid), "plan": "pro"})
    assert resp.status_code == 201, resp.text
    sub = resp.json()
    assert (sub["price"], sub["currency"], sub["billing_period"]) == ("10.00", "USD", "month")
    resp = await client.patch(f"{API}/plans/pro", headers=admin_headers,
                              json={"price": "99.00"})
    assert resp.status_code == 200, resp.text

    preview = await client.get(f"{API}/subscriptions/{sub['id']}/invoice-preview",
                               headers=admin_headers)
    assert preview.status_code == 200, preview.text
    assert preview.json()["lines"][0]["amount"] == "10.00"
    await _end_the_period(database, sub["id"])
    issued = await client.post(f"{API}/invoices", headers=admin_headers,
                               json={"subscription_id": sub["id"]})
    assert issued.status_code == 201, issued.text
    assert issued.json()["lines"][0]["amount"] == "10.00"

    report = await renew_due(database)
    assert report.renewed == 1 and not report.failed
    renewed = (await client.get(f"{API}/subscriptions/{sub['id']}",
                                headers=admin_headers)).json()
    assert renewed["price"] == "99.00"
    preview = await client.get(f"{API}/subscriptions/{sub['id']}/invoice-preview",
                               headers=admin_headers)
    assert preview.json()["lines"][0]["amount"] == "99.00"


async def test_a_plans_currency_cannot_change_while_subscriptions_are_on_it(
        client: httpx.AsyncClient, admin_headers: Headers, database: Database) -> None:
    """A subscription keeps one currency for life (change-plan refuses another): a
    plan's new currency with live subscriptions on it is a 409 and changes nothing, so
    their renewals keep working.  Once they are canceled it may change, and a canceled
    subscription's last invoice is still in the currency it ran in."""
    uid, _ = await make_user(database)
    await make_plan(client, admin_headers, price="10.00", currency="USD", trial_days=0)
    resp = await client.post(f"{API}/subscriptions", headers=admin_headers,
                             json={"user_id": str(uid), "plan": "pro"})
    assert resp.status_code == 201, resp.text
    sub = resp.json()
    await _end_the_period(database, sub["id"])  # a month that ran: its usage two days ago
    resp = await client.post(f"{API}/usage-events", headers=admin_headers, json={"events": [{
        "idempotency_key": "cur-1", "user_id": str(uid), "request_type": "chat",
        "cost": "2", "currency": "USD",
        "occurred_at": (datetime.now(UTC) - timedelta(days=2)).isoformat()}]})
    assert resp.status_code == 200, resp.text

    changed = await client.patch(f"{API}/plans/pro", headers=admin_headers,
                                 json={"currency": "EUR", "price": "12.00"})
    assert changed.status_code == 409, changed.text
    assert "1 live subscription" in changed.json()["detail"]
    plan = (await client.get(f"{API}/plans/pro", headers=admin_headers)).json()
    assert (plan["currency"], plan["price"]) == ("USD", "10.00")
    report = await renew_due(database)
    assert report.renewed == 1 and not report.failed  # its usage in USD, on a USD period

    resp = await client.post(f"{API}/subscriptions/{sub['id']}/cancel", headers=admin_headers)
    assert resp.status_code == 200, resp.text
    changed = await client.patch(f"{API}/plans/pro", headers=admin_headers,
                                 json={"currency": "EUR"})
    assert changed.status_code == 200, changed.text
    last = await client.post(f"{API}/invoices", headers=admin_headers,
                             json={"subscription_id": sub["id"]})
    assert last.status_code == 201, last.text
    assert (last.json()["currency"], last.json()["lines"][0]["amount"]) == ("USD", "10.00")
