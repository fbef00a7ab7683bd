"""A group's subscription seen by its members: deleting the group does not take a live
subscription (and its period's invoice) with it; every member's preview bills every
member's usage."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.agents.conftest import other_user, user  # noqa: F401 - fixtures
from tests.billing.test_plans import make_plan

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
BILLING = "/api/v1/billing"


async def _group_sub(client: httpx.AsyncClient, admin_headers: Headers,
                     headers: Headers, name: str, plan: str) -> tuple[str, dict[str, Any]]:
    group = await client.post("/api/v1/groups", json={"name": name}, headers=headers)
    assert group.status_code == 201, group.text
    gid = group.json()["id"]
    resp = await client.post(f"{BILLING}/subscriptions", json={"group_id": gid, "plan": plan},
                             headers=admin_headers)
    assert resp.status_code == 201, resp.text
    return gid, resp.json()


async def _ingest(client: httpx.AsyncClient, admin_headers: Headers, user_id: uuid.UUID,
                  key: str, credits: int = 5) -> None:
    resp = await client.post(f"{BILLING}/usage-events", headers=admin_headers, json={
        "events": [{"idempotency_key": key, "user_id": str(user_id), "request_type": "chat",
                    "model": "probe-model", "tokens_input": 100, "tokens_output": 50,
                    "credits": credits, "cost": "1.50", "currency": "EUR"}]})
    assert resp.status_code in (200, 201), resp.text


async def test_a_group_member_cannot_silently_destroy_the_groups_live_subscription(
        client: httpx.AsyncClient, admin_headers: Headers, user: User) -> None:  # noqa: F811
    """The group's creator (no administrator: may not cancel subscriptions) deleting the
    group is a 409 while its subscription lives: the row cascaded away with the group and
    the period's charged usage was never invoiced. Canceled, the group can go."""
    user_id, headers = user
    await make_plan(client, admin_headers, key="teamdel", trial_days=0, included_credits=1000)
    gid, sub = await _group_sub(client, admin_headers, headers, "probe-del", "teamdel")
    await _ingest(client, admin_headers, user_id, f"probe-del-{uuid.uuid4()}")
    preview = await client.get(f"{BILLING}/subscriptions/{sub['id']}/invoice-preview",
                               headers=admin_headers)
    assert preview.status_code == 200, preview.text
    assert any(line.get("model") == "probe-model" for line in preview.json()["lines"])

    deleted = await client.delete(f"/api/v1/groups/{gid}", headers=headers)
    assert deleted.status_code == 409, deleted.text
    assert deleted.json()["subscription_id"] == sub["id"], deleted.text
    canceled = await client.post(f"{BILLING}/subscriptions/{sub['id']}/cancel",
                                 headers=admin_headers)
    assert canceled.status_code == 200, canceled.text
    invoiced = await client.post(f"{BILLING}/invoices", headers=admin_headers,
                                 json={"subscription_id": sub["id"]})
    assert invoiced.status_code == 201, invoiced.text  # the canceled period, billed
    assert (await client.delete(f"/api/v1/groups/{gid}", headers=headers)).status_code == 204


async def test_a_group_invoice_preview_shows_every_members_usage_to_each_member(
        client: httpx.AsyncClient, admin_headers: Headers, user: User,  # noqa: F811
        other_user: User) -> None:  # noqa: F811
    """A member's preview of the group's subscription is the group's draft, as the
    administrator's and the issued invoice: every member's usage (the ledger's row-level
    security hid the others' rows from a member, who saw a lower bill)."""
    user_id, _ = user
    _, creator_headers = other_user
    await make_plan(client, admin_headers, key="teamprev", trial_days=0, included_credits=1000)
    gid, sub = await _group_sub(client, admin_headers, creator_headers, "probe-prev", "teamprev")
    added = await client.post(f"/api/v1/groups/{gid}/members", json={"user": str(user_id)},
                              headers=admin_headers)
    assert added.status_code == 201, added.text
    await _ingest(client, admin_headers, user_id, f"probe-prev-{uuid.uuid4()}", credits=7)
    group = (await client.get(f"{BILLING}/subscriptions/{sub['id']}",
                              headers=creator_headers)).json()
    assert group["credits_used"] == 7, group  # the group's balance does count it
    path = f"{BILLING}/subscriptions/{sub['id']}/invoice-preview"
    by_admin = await client.get(path, headers=admin_headers)
    by_member = await client.get(path, headers=creator_headers)
    assert by_admin.status_code == 200 and by_member.status_code == 200, by_member.text
    assert by_admin.json()["total"] != "19.99"  # the admin's draft bills the 1.50 of usage
    assert by_member.json()["lines"] == by_admin.json()["lines"], by_member.json()
    assert by_member.json()["total"] == by_admin.json()["total"]
