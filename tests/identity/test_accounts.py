"""Registration, approval, roles, bad input: point 1 and the bad-input rules."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import func, select, text

from roost.db.engine import Database
from roost.identity.accounts import approve, create_user
from roost.identity.models import User
from roost.principal import SYSTEM
from tests.identity.conftest import PASSWORD, login, password_user
from tests.support.races import answer_behind
from tests.support.sql import scalar


async def _count_users(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def test_first_account_is_root_later_ones_wait_for_approval(
    client: httpx.AsyncClient, database: Database
) -> None:
    first = await client.post("/api/v1/auth/register", json={
        "username": "Founder", "email": "Founder@Example.com", "password": PASSWORD})
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["username"], body["email"]) == ("founder", "founder@example.com")
    assert body["is_root"] and body["is_superuser"] and body["role"] == "admin"
    assert body["status"] == "active" and body["tier"] == "free"
    assert "hashed_password" not in body

    second = await client.post("/api/v1/auth/register", json={
        "username": "newbie", "email": "newbie@example.com", "password": PASSWORD})
    assert second.status_code == 201
    assert second.json()["status"] == "pending_approval" and not second.json()["is_root"]

    refused = await login(client, "newbie")
    assert refused.status_code == 403
    assert "awaiting approval" in refused.json()["detail"]

    root = await login(client, "founder@example.com")
    assert root.status_code == 200
    admin = {"Authorization": f"Bearer {root.json()['access_token']}"}
    approved = await client.post(f"/api/v1/users/{second.json()['id']}/approve", headers=admin)
    assert approved.status_code == 200 and approved.json()["status"] == "active"
    assert (await login(client, "newbie")).status_code == 200

    # Suspension ends the sessions at once and blocks sign-in.
    newbie = await login(client, "newbie")
    token = {"Authorization": f"Bearer {newbie.json()['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=token)).status_code == 200
    suspended = await client.patch(f"/api/v1/users/{second.json()['id']}",
                                   json={"status": "suspended"}, headers=admin)
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert (await client.get("/api/v1/auth/me", headers=token)).status_code == 401
    assert "suspended" in (await login(client, "newbie")).json()["detail"]

    # The root cannot be demoted, not even by itself.
    demote = await client.patch(f"/api/v1/users/{body['id']}", json={"role": "user"},
                                headers=admin)
    assert demote.status_code == 403

    async with database.transaction() as session:
        actions = set((await session.scalars(text("SELECT action FROM audit_logs"))).all())
    assert {"user.registered", "user.approved", "user.updated", "auth.login",
            "auth.login_failed"} <= actions


async def test_open_registration_starts_active(
    client: httpx.AsyncClient, app: object, database: Database
) -> None:
    app.state.settings = app.state.settings.model_copy(update={"open_registration": True})  # type: ignore[attr-defined]
    await client.post("/api/v1/auth/register", json={
        "username": "root", "email": "root@example.com", "password": PASSWORD})
    later = await client.post("/api/v1/auth/register", json={
        "username": "walkin", "email": "walkin@example.com", "password": PASSWORD})
    assert later.json()["status"] == "active"
    assert (await login(client, "walkin")).status_code == 200


async def test_admin_created_accounts_and_roles(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    first = await client.post("/api/v1/users", headers=admin_headers, json={
        "username": "boss", "email": "boss@example.com"})
    assert first.json()["is_root"], "the first account is the root, however it is created"
    made = await client.post("/api/v1/users", headers=admin_headers, json={
        "username": "ops", "email": "ops@example.com", "password": PASSWORD, "role": "admin",
        "tier": "enterprise"})
    assert made.status_code == 201, made.text
    assert (made.json()["status"], made.json()["role"], made.json()["tier"]) == (
        "active", "admin", "enterprise")
    listed = await client.get("/api/v1/users", headers=admin_headers)
    assert [u["username"] for u in listed.json()] == ["boss", "ops"]
    ops = await login(client, "ops")
    ops_headers = {"Authorization": f"Bearer {ops.json()['access_token']}"}
    # An admin user may list accounts; a demoted one may not, on the very next request.
    assert (await client.get("/api/v1/users", headers=ops_headers)).status_code == 200
    plain = await client.post("/api/v1/users", headers=admin_headers, json={
        "username": "plain", "email": "plain@example.com", "password": PASSWORD})
    await client.patch(f"/api/v1/users/{made.json()['id']}", headers=admin_headers,
                       json={"role": "user"})
    assert (await client.get("/api/v1/users", headers=ops_headers)).status_code == 403
    # A plain user cannot promote themselves (service) ...
    plain_headers = {"Authorization": f"Bearer {(await login(client, 'plain')).json()['access_token']}"}
    promote = await client.patch("/api/v1/users/me", json={"role": "admin"}, headers=plain_headers)
    assert promote.status_code == 403
    assert (await client.get("/api/v1/auth/me", headers=plain_headers)).json()["role"] == "user"
    assert plain.json()["role"] == "user"


async def test_approve_is_for_pending_accounts_only(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    """Approving lifts no suspension (409, still suspended); an active account approved
    again is unchanged (200)."""
    uid = await password_user(database, "apsus")
    suspended = await client.patch(f"/api/v1/users/{uid}", headers=admin_headers,
                                   json={"status": "suspended"})
    assert suspended.status_code == 200
    refused = await client.post(f"/api/v1/users/{uid}/approve", headers=admin_headers)
    assert refused.status_code == 409, refused.text
    after = await client.get(f"/api/v1/users/{uid}", headers=admin_headers)
    assert after.json()["status"] == "suspended"
    await client.patch(f"/api/v1/users/{uid}", headers=admin_headers, json={"status": "active"})
    again = await client.post(f"/api/v1/users/{uid}/approve", headers=admin_headers)
    assert again.status_code == 200 and again.json()["status"] == "active"


async def test_bad_input_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, database: Database
) -> None:
    async def register(**fields: object) -> httpx.Response:
        body = {"username": "someone", "email": "someone@example.com", "password": PASSWORD}
        body.update(fields)
        return await client.post("/api/v1/auth/register", json=body)

    weak = await register(password="password123!")
    assert weak.status_code == 422 and weak.json()["rule"] == "common"
    assert PASSWORD not in weak.text and "password123" not in weak.text
    short = await register(password="Sh0rt!")
    assert short.status_code == 422 and short.json()["rule"] == "min_length"
    overlong = await register(password="x" * 5000)
    assert overlong.status_code == 422
    too_long_hash_input = await register(password="ab1-" * 300)
    assert too_long_hash_input.status_code == 422
    assert too_long_hash_input.json()["rule"] == "max_length"
    bad_email = await register(email="not-an-email")
    assert bad_email.status_code == 422 and bad_email.json()["field"] == "email"
    bad_name = await register(username="no spaces allowed")
    assert bad_name.status_code == 422 and bad_name.json()["field"] == "username"
    unknown_field = await register(role="admin")
    assert unknown_field.status_code == 422
    assert await _count_users(database) == 0

    assert (await register()).status_code == 201
    dup_name = await register(email="other@example.com", username="SOMEONE")
    assert dup_name.status_code == 409 and dup_name.json()["field"] == "username"
    dup_mail = await register(username="other", email="SomeOne@example.com")
    assert dup_mail.status_code == 409 and dup_mail.json()["field"] == "email"
    assert await _count_users(database) == 1
    malformed = await client.post("/api/v1/auth/register", content=b"{not json",
                                  headers={"content-type": "application/json"})
    assert malformed.status_code == 400


async def _pending_user(database: Database) -> uuid.UUID:
    name = f"pend-{uuid.uuid4().hex[:8]}"
    async with database.transaction() as session:
        user = await create_user(session, SYSTEM, username=name, email=f"{name}@example.test",
                                 password=None, status="pending_approval",
                                 first_becomes_root=False)
    return user.id


async def test_an_approval_during_a_suspension_leaves_the_account_suspended(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    """Approving is for pending accounts: a suspended one is 409 and stays suspended, also
    when the suspension commits while the approval waits (the approval checked its stale
    copy and made the account active)."""
    uid = await _pending_user(database)
    resp = await asyncio.wait_for(answer_behind(
        database, "UPDATE users SET status = 'suspended' WHERE id = :u", {"u": uid}, "users",
        client.post(f"/api/v1/users/{uid}/approve", headers=admin_headers)), 60)
    assert resp.status_code == 409, resp.text
    status = await scalar(database, "SELECT status FROM users WHERE id = :u", u=uid)
    assert status == "suspended", (resp.status_code, resp.text, status)


async def test_an_approval_behind_another_records_one_approval(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    """Two administrators approving one account at once: the second waits for the first,
    finds the account active and answers it unchanged, so the audit log holds one
    `user.approved` (it held two)."""
    uid = await _pending_user(database)
    async with database.transaction() as session:
        await approve(session, SYSTEM, uid)  # the first approval, not yet committed
        task = asyncio.ensure_future(
            client.post(f"/api/v1/users/{uid}/approve", headers=admin_headers))
        for _ in range(200):
            waiting = await scalar(database, "SELECT count(*) FROM pg_stat_activity WHERE "
                                   "datname = current_database() AND wait_event_type = "
                                   "'Lock' AND query ILIKE '%users%'")
            if waiting or task.done():
                break
            await asyncio.sleep(0.05)
    resp = await asyncio.wait_for(task, 60)
    assert resp.status_code == 200, resp.text
    n = await scalar(database, "SELECT count(*) FROM audit_logs WHERE action = 'user.approved' "
                     "AND resource_id = :u", u=str(uid))
    assert n == 1, (resp.status_code, n)
