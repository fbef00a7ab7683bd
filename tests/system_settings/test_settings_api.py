"""/api/v1/admin/settings: typed overrides an administrator changes without a restart."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from tests.support.identity import make_user

Headers = dict[str, str]


async def register(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    resp = await client.post("/api/v1/auth/register", json={
        "username": name, "email": f"{name}@example.test",
        "password": "plum-quartz-river-kettle"})
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def test_list_shows_schema_default_value_and_source(
        client: httpx.AsyncClient, admin_headers: Headers) -> None:
    resp = await client.get("/api/v1/admin/settings", headers=admin_headers)
    assert resp.status_code == 200, resp.text
    by_key = {s["key"]: s for s in resp.json()}
    assert {"open_registration", "chat_context_messages", "chat_max_message_chars"} <= set(by_key)
    ctx = by_key["chat_context_messages"]
    assert ctx["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert ctx["default"] == ctx["value"] == 20 and ctx["source"] == "default"
    assert ctx["updated_at"] is None and ctx["description"]

    put = await client.put("/api/v1/admin/settings/chat_context_messages", json={"value": 40},
                           headers=admin_headers)
    assert put.status_code == 200, put.text
    assert put.json()["value"] == 40 and put.json()["source"] == "override"
    assert put.json()["default"] == 20
    overrides = await client.get("/api/v1/admin/settings?source=override", headers=admin_headers)
    assert [s["key"] for s in overrides.json()] == ["chat_context_messages"]
    one = await client.get("/api/v1/admin/settings/chat_context_messages", headers=admin_headers)
    assert one.json()["value"] == 40 and one.json()["updated_at"]

    reset = await client.delete("/api/v1/admin/settings/chat_context_messages",
                                headers=admin_headers)
    assert reset.status_code == 200
    assert reset.json()["value"] == 20 and reset.json()["source"] == "default"
    again = await client.delete("/api/v1/admin/settings/chat_context_messages",
                                headers=admin_headers)
    assert again.status_code == 200  # resetting a default is a no-op, not an error


async def test_invalid_values_are_refused_with_the_schema_message(
        client: httpx.AsyncClient, admin_headers: Headers) -> None:
    url = "/api/v1/admin/settings/chat_context_messages"
    for value, message in [(0, "greater than or equal to 1"), (1001, "less than or equal to 1000"),
                           ("40", "valid integer"), (True, "valid integer"), (2.5, "valid integer"),
                           (None, "valid integer")]:
        resp = await client.put(url, json={"value": value}, headers=admin_headers)
        assert resp.status_code == 422, (value, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert message in resp.json()["detail"], resp.json()
        assert resp.json()["detail"].startswith("chat_context_messages: ")
    flag = await client.put("/api/v1/admin/settings/open_registration", json={"value": "yes"},
                            headers=admin_headers)
    assert flag.status_code == 422 and "valid boolean" in flag.json()["detail"]
    # the body itself is strict: "value" required, nothing else accepted
    for body in ({}, {"value": 3, "extra": 1}):
        assert (await client.put(url, json=body, headers=admin_headers)).status_code == 422
    bad_json = await client.put(url, content=b"{value:", headers={
        **admin_headers, "Content-Type": "application/json"})
    assert bad_json.status_code == 400
    # nothing was stored by any of these
    got = await client.get(url, headers=admin_headers)
    assert got.json()["source"] == "default"


async def test_unknown_keys_are_404(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    for method in ("GET", "PUT", "DELETE"):
        resp = await client.request(method, "/api/v1/admin/settings/no_such_setting",
                                    json={"value": 1} if method == "PUT" else None,
                                    headers=admin_headers)
        assert resp.status_code == 404, resp.text
        assert "no runtime setting 'no_such_setting'" in resp.json()["detail"]
    # a Settings field that no domain declared as runtime is not overridable either
    resp = await client.put("/api/v1/admin/settings/database_url", json={"value": "x"},
                            headers=admin_headers)
    assert resp.status_code == 404


async def test_regular_users_get_403_and_cannot_read_the_table(
        client: httpx.AsyncClient, admin_headers: Headers, database: Database) -> None:
    _, headers = await make_user(database)
    assert (await client.get("/api/v1/admin/settings", headers=headers)).status_code == 403
    for method in ("GET", "PUT", "DELETE"):
        resp = await client.request(method, "/api/v1/admin/settings/open_registration",
                                    json={"value": True} if method == "PUT" else None,
                                    headers=headers)
        assert resp.status_code == 403, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/api/v1/admin/settings")).status_code == 401
    await client.put("/api/v1/admin/settings/chat_context_messages", json={"value": 7},
                     headers=admin_headers)
    # the second wall: as roost_app without admin, RLS hides every row
    async with database.transaction() as s:
        await s.execute(text("SELECT set_config('roost.is_admin', 'false', true), "
                             "set_config('role', 'roost_app', true)"))
        assert (await s.execute(text("SELECT count(*) FROM system_settings"))).scalar() == 0
        # ...while the server can still apply the override for that user's request
        value = await s.scalar(text("SELECT roost_runtime_setting('chat_context_messages')"))
        assert value == "7"


async def test_every_change_is_audited_with_old_and_new_value(
        client: httpx.AsyncClient, database: Database) -> None:
    admin_id, admin = await make_user(database, admin=True)
    url = "/api/v1/admin/settings/chat_max_message_chars"
    await client.put(url, json={"value": 500}, headers=admin)
    await client.put(url, json={"value": 600}, headers=admin)
    await client.delete(url, headers=admin)
    async with database.transaction() as s:
        rows = (await s.execute(text(
            "SELECT action, user_id, resource_id, changes FROM audit_logs "
            "WHERE resource_type = 'system_setting' ORDER BY seq"))).all()
    assert [(r.action, r.user_id, r.resource_id) for r in rows] == [
        ("system_settings.update", admin_id, "chat_max_message_chars"),
        ("system_settings.update", admin_id, "chat_max_message_chars"),
        ("system_settings.reset", admin_id, "chat_max_message_chars")]
    # The key is under "setting": the audit log redacts a field named "key".
    assert [r.changes for r in rows] == [
        {"setting": "chat_max_message_chars", "old": None, "new": "500"},
        {"setting": "chat_max_message_chars", "old": "500", "new": "600"},
        {"setting": "chat_max_message_chars", "old": "600", "new": None}]
    async with database.transaction() as s:  # updated_by and the seed's description kept
        row = (await s.execute(text("SELECT count(*) FROM system_settings"))).scalar()
    assert row == 0


async def test_concurrent_first_overrides_each_audit_the_value_they_replaced(
        client: httpx.AsyncClient, admin_headers: Headers, database: Database) -> None:
    """Concurrent PUTs of a key without an override: one creates it (old=null), each other
    one names the value it replaced, so the entries chain from null to the final value."""
    n = 12
    rs = await asyncio.gather(*[client.put("/api/v1/admin/settings/chat_context_messages",
                                           json={"value": 10 + i}, headers=admin_headers)
                                for i in range(n)])
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
    async with database.transaction() as s:
        changes = (await s.execute(text(
            "SELECT changes FROM audit_logs WHERE action = 'system_settings.update'"
            " ORDER BY seq"))).scalars().all()
        final = await s.scalar(text(
            "SELECT value FROM system_settings WHERE key = 'chat_context_messages'"))
    assert len(changes) == n
    assert [c["old"] for c in changes] == [None, *[c["new"] for c in changes[:-1]]], changes
    assert changes[-1]["new"] == final


async def test_overrides_change_behaviour_without_a_restart(
        client: httpx.AsyncClient, admin_headers: Headers) -> None:
    """open_registration: sign-ups wait for approval, then start active, then wait again."""
    await register(client, "root")  # the first account becomes root
    assert (await register(client, "early"))["status"] == "pending_approval"
    put = await client.put("/api/v1/admin/settings/open_registration", json={"value": True},
                           headers=admin_headers)
    assert put.status_code == 200
    assert (await register(client, "welcome"))["status"] == "active"
    await client.delete("/api/v1/admin/settings/open_registration", headers=admin_headers)
    assert (await register(client, "late"))["status"] == "pending_approval"


async def test_chat_message_limit_follows_the_override(
        client: httpx.AsyncClient, admin_headers: Headers, database: Database) -> None:
    """A regular user's request applies an override it may not read (RLS) itself."""
    _, headers = await make_user(database)
    created = await client.post("/api/v1/chat/sessions", json={"title": "t"}, headers=headers)
    assert created.status_code == 201, created.text
    url = f"/api/v1/chat/sessions/{created.json()['id']}/messages"
    body = {"content": "x" * 50, "reply": False}
    assert (await client.post(url, json=body, headers=headers)).status_code == 201
    await client.put("/api/v1/admin/settings/chat_max_message_chars", json={"value": 20},
                     headers=admin_headers)
    refused = await client.post(url, json=body, headers=headers)
    assert refused.status_code == 413
    assert "the limit is 20 (runtime setting chat_max_message_chars)" in refused.json()["detail"]
    await client.delete("/api/v1/admin/settings/chat_max_message_chars", headers=admin_headers)
    assert (await client.post(url, json=body, headers=headers)).status_code == 201


TOOL_CALL = "/api/v1/tools/by-name/current_time/call"
TOOL_BODY = {"arguments": {"timezone": "UTC"}}


async def _put_setting(client: httpx.AsyncClient, admin: dict[str, str], key: str, value: object) -> None:
    resp = await client.put(f"/api/v1/admin/settings/{key}", json={"value": value},
                            headers=admin)
    assert resp.status_code == 200, resp.text


async def test_free_tool_calls_still_require_a_subscription(
        client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database) -> None:
    """billing_require_subscription refuses (402) tool calls of users with no live
    subscription; making tool calls free (billing_tool_call_credits 0) changes their
    price, not who may make them: the unsubscribed user is still refused."""
    _, headers = await make_user(database)
    await _put_setting(client, admin_headers, "billing_require_subscription", True)
    assert (await client.post(TOOL_CALL, headers=headers, json=TOOL_BODY)).status_code == 402
    await _put_setting(client, admin_headers, "billing_tool_call_credits", 0)
    free = await client.post(TOOL_CALL, headers=headers, json=TOOL_BODY)
    assert free.status_code == 402, free.text


async def test_a_paused_subscription_allows_no_free_tool_call(
        client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database) -> None:
    """A paused subscription allows nothing (402 naming the status), free tool calls
    (billing_tool_call_credits 0) included."""
    user_id, headers = await make_user(database)
    plan = await client.post("/api/v1/billing/plans", headers=admin_headers, json={
        "key": "small", "name": "Small", "price": "9.00", "included_credits": 100})
    assert plan.status_code == 201, plan.text
    sub = await client.post("/api/v1/billing/subscriptions", headers=admin_headers,
                            json={"user_id": str(user_id), "plan": "small"})
    assert sub.status_code == 201, sub.text
    paused = await client.post(f"/api/v1/billing/subscriptions/{sub.json()['id']}/pause",
                               headers=admin_headers, json={})
    assert paused.status_code == 200, paused.text
    assert (await client.post(TOOL_CALL, headers=headers, json=TOOL_BODY)).status_code == 402
    await _put_setting(client, admin_headers, "billing_tool_call_credits", 0)
    free = await client.post(TOOL_CALL, headers=headers, json=TOOL_BODY)
    assert free.status_code == 402, free.text
