"""A process remembers what a credential resolved to, but never trusts it alone: the
database confirms it with every request's BEGIN (``roost_confirm_principal``), so a
credential that is no longer live is refused, and a principal that changed is served as
it is now, on the very next request."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.identity import resolver
from roost.security.passwords import hash_password
from tests.support.identity import join_group, make_user

ME = "/api/v1/auth/me"

# How a live credential stops being one, written straight to the database (as another
# server process, an administrator or an expiry would leave it).
ENDINGS = {
    "key revoked": "UPDATE api_keys SET revoked_at = now() WHERE user_id = :u",
    "key expired": "UPDATE api_keys SET expires_at = now() - interval '1 second' "
                   "WHERE user_id = :u",
    "account suspended": "UPDATE users SET status = 'suspended' WHERE id = :u",
    "account deactivated": "UPDATE users SET is_active = false WHERE id = :u",
}


async def _sql(database: Database, statement: str, **params: object) -> None:
    async with database.transaction() as session:
        await session.execute(text(statement), params)


@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_a_remembered_key_is_refused_on_the_next_request_once_it_is_not_live(
    client: httpx.AsyncClient, database: Database, ending: str
) -> None:
    user_id, headers = await make_user(database)
    for _ in range(2):  # looked up, then confirmed
        assert (await client.get(ME, headers=headers)).status_code == 200
    await _sql(database, ENDINGS[ending], u=user_id)
    refused = await client.get(ME, headers=headers)
    assert refused.status_code == 401, refused.text
    assert not any(key[0] == "api_key" and resolved.principal.user_id == user_id
                   for key, resolved in resolver._RESOLVED.items())


async def test_a_remembered_sign_in_is_refused_once_its_session_ends(
    client: httpx.AsyncClient, database: Database
) -> None:
    user_id, _ = await make_user(database, username="confirm-login")
    await _sql(database, "UPDATE users SET hashed_password = :h WHERE id = :u",
               h=hash_password("amber-violet-harbour-lamp"), u=user_id)
    login = await client.post("/api/v1/auth/login", json={
        "login": "confirm-login", "password": "amber-violet-harbour-lamp"})
    assert login.status_code == 200, login.text
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    for _ in range(2):
        assert (await client.get(ME, headers=bearer)).status_code == 200
    await _sql(database, "UPDATE sessions SET revoked_at = now() WHERE user_id = :u", u=user_id)
    assert (await client.get(ME, headers=bearer)).status_code == 401


async def test_a_changed_role_is_served_as_it_is_now(
    client: httpx.AsyncClient, database: Database
) -> None:
    user_id, headers = await make_user(database)
    for _ in range(2):
        assert (await client.get("/api/v1/users", headers=headers)).status_code == 403
    await _sql(database, "UPDATE users SET role = 'admin' WHERE id = :u", u=user_id)
    assert (await client.get("/api/v1/users", headers=headers)).status_code == 200
    assert (await client.get("/api/v1/users", headers=headers)).status_code == 200
    await _sql(database, "UPDATE users SET role = 'user' WHERE id = :u", u=user_id)
    assert (await client.get("/api/v1/users", headers=headers)).status_code == 403


async def test_a_new_group_membership_scopes_the_next_request(
    client: httpx.AsyncClient, database: Database
) -> None:
    _, alice = await make_user(database, username="confirm-alice")
    _, bob = await make_user(database, username="confirm-bob")
    for _ in range(2):  # bob is remembered with no groups
        assert (await client.get("/api/v1/groups", headers=bob)).json()["items"] == []
    created = await client.post("/api/v1/groups", headers=alice, json={"name": "confirmed"})
    assert created.status_code == 201, created.text
    group_id = created.json()["id"]
    await join_group(client, alice, group_id, "confirm-bob", bob)
    assert [g["id"] for g in (await client.get("/api/v1/groups", headers=bob)).json()["items"]] == [
        group_id]
    await _sql(database, "DELETE FROM user_group_memberships WHERE group_id = :g "
               "AND user_id <> (SELECT created_by FROM groups WHERE id = :g)", g=uuid.UUID(group_id))
    assert (await client.get("/api/v1/groups", headers=bob)).json()["items"] == []


async def test_a_new_rate_limit_applies_to_the_next_request(
    client: httpx.AsyncClient, database: Database
) -> None:
    user_id, headers = await make_user(database)
    for _ in range(2):
        assert (await client.get(ME, headers=headers)).status_code == 200
    await _sql(database, "UPDATE users SET rate_limit_rpm = 1 WHERE id = :u", u=user_id)
    assert (await client.get(ME, headers=headers)).status_code == 200
    limited = await client.get(ME, headers=headers)
    assert limited.status_code == 429, limited.text


async def test_a_model_route_refuses_a_remembered_key_once_revoked(
    client: httpx.AsyncClient, database: Database
) -> None:
    """The routes that resolve their caller outside the request's transaction (they wait
    for a model) confirm it too."""
    user_id, headers = await make_user(database)
    for _ in range(2):
        assert (await client.get("/v1/models", headers=headers)).status_code == 200
    await _sql(database, ENDINGS["key revoked"], u=user_id)
    refused = await client.get("/v1/models", headers=headers)
    assert refused.status_code == 401, refused.text
