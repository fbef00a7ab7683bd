"""API keys and their expiry (docs/identity.md, "API keys"): keys that have expired do not
count toward the cap of 100 active keys, a key made with a key that expires expires
no later than it, and revoking a key revokes the keys made with it."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text, update

from roost.db.engine import Database
from roost.identity.apikeys import MAX_KEYS_PER_USER
from roost.identity.models import ApiKey
from tests.support.identity import make_user

KEYS = "/api/v1/api-keys"


async def test_expired_keys_do_not_count_toward_the_active_key_cap(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """An account holds at most 100 *active* keys: keys that have expired do not block a
    new one (the cap still holds for live keys)."""
    user_id, headers = await make_user(database)  # one key ("test helper")
    for i in range(MAX_KEYS_PER_USER - 1):
        made = await client.post(KEYS, headers=headers, json={
            "name": f"short-{i}", "expires_at": "2099-01-01T00:00:00Z"})
        assert made.status_code == 201, made.text
    full = await client.post(KEYS, headers=headers, json={"name": "one too many"})
    assert full.status_code == 400, full.text
    assert "at most 100 active keys" in full.json()["detail"]
    async with database.transaction() as session:  # time passes: the 99 have expired
        await session.execute(
            update(ApiKey).where(ApiKey.user_id == user_id, ApiKey.name != "test helper")
            .values(expires_at=text("now() - interval '1 hour'")))
    fresh = await client.post(KEYS, headers=headers, json={"name": "fresh"})
    assert fresh.status_code == 201, fresh.text


async def test_a_key_made_with_an_expiring_key_does_not_outlive_it(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
) -> None:
    """A leaked short-lived key cannot mint a permanent one: without an expiry the new key
    takes its parent's, a later one is a 422 naming the parent's expiry, an earlier one
    stands.  Keys made at sign-in or by an administrator are not capped."""
    user_id, headers = await make_user(database)
    parent = await client.post(KEYS, headers=headers, json={
        "name": "one day", "expires_at": "2030-01-01T00:00:00Z"})
    assert parent.status_code == 201, parent.text
    parent_expiry = parent.json()["expires_at"]
    with_parent = {"Authorization": f"Bearer {parent.json()['key']}"}

    child = await client.post(KEYS, json={"name": "child"}, headers=with_parent)
    assert child.status_code == 201, child.text
    assert child.json()["expires_at"] == parent_expiry

    later = await client.post(KEYS, headers=with_parent, json={
        "name": "later", "expires_at": "2031-01-01T00:00:00Z"})
    assert later.status_code == 422, later.text
    assert later.json()["field"] == "expires_at"
    assert "2030-01-01" in later.json()["detail"]

    earlier = await client.post(KEYS, headers=with_parent, json={
        "name": "earlier", "expires_at": "2029-06-01T00:00:00Z"})
    assert earlier.status_code == 201, earlier.text
    assert earlier.json()["expires_at"].startswith("2029-06-01")

    # The helper's key never expires: its keys need not either; nor an administrator's.
    for made in (await client.post(KEYS, headers=headers, json={"name": "forever"}),
                 await client.post(f"{KEYS}?user_id={user_id}", headers=admin_headers,
                                   json={"name": "by admin"})):
        assert made.status_code == 201, made.text
        assert made.json()["expires_at"] is None
    async with database.transaction() as session:
        stored = await session.scalar(text("SELECT count(*) FROM api_keys WHERE user_id = :u "
                                           "AND name = 'later'"), {"u": user_id})
    assert stored == 0


async def test_a_long_run_of_digits_as_a_timestamp_is_refused_at_once(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """60,000 digits and a letter (60 kB, far below the body limit) as `expires_at`: the
    usual 422 naming the field. The check refusing digit strings backtracked
    quadratically (30,000 digits took 47 s) and held the event loop, every other request of
    the process waiting; the whole answer is bounded here by a wait of minutes' scale."""
    _, headers = await make_user(database)
    answer = await asyncio.wait_for(client.post("/api/v1/api-keys", headers=headers, json={
        "name": "slow", "expires_at": "1" * 60_000 + "x"}), 60)
    assert answer.status_code == 422, answer.text[:500]
    assert answer.json()["errors"][0]["loc"] == ["body", "expires_at"]


async def test_revoking_a_key_revokes_every_key_made_with_it(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Revoking a leaked key is the answer to the leak: the keys its holder minted with it
    (and the keys those minted) stop working on the next request too, each revocation is
    in the audit log, and the account's other keys keep working."""
    user_id, helper = await make_user(database)

    async def mint(headers: dict[str, str], name: str) -> tuple[str, dict[str, str]]:
        made = await client.post(KEYS, headers=headers, json={"name": name})
        assert made.status_code == 201, made.text
        return made.json()["id"], {"Authorization": f"Bearer {made.json()['key']}"}

    leaked_id, leaked = await mint(helper, "leaked")
    child_id, child = await mint(leaked, "child")
    grandchild_id, grandchild = await mint(child, "grandchild")
    sibling_id, sibling = await mint(helper, "sibling")
    listed = {k["id"]: k for k in (await client.get(KEYS, headers=helper)).json()}
    assert listed[child_id]["parent_key_id"] == leaked_id
    assert listed[grandchild_id]["parent_key_id"] == child_id

    revoked = await client.delete(f"{KEYS}/{leaked_id}", headers=helper)
    assert revoked.status_code == 204, revoked.text
    for gone in (leaked, child, grandchild):
        assert (await client.get(KEYS, headers=gone)).status_code == 401
    for alive in (helper, sibling):
        assert (await client.get(KEYS, headers=alive)).status_code == 200
    listed = {k["id"]: k for k in (await client.get(
        f"{KEYS}?include_revoked=true", headers=helper)).json()}
    assert all(listed[k]["revoked_at"] for k in (leaked_id, child_id, grandchild_id))
    assert listed[sibling_id]["revoked_at"] is None
    async with database.transaction() as session:
        audited = (await session.execute(text(
            "SELECT resource_id::text, changes->>'made_with' FROM audit_logs "
            "WHERE action = 'api_key.revoked' AND user_id = :u"), {"u": user_id})).all()
    assert {row[0] for row in audited} == {leaked_id, child_id, grandchild_id}
    assert sum(1 for row in audited if row[1] is not None) == 2

    again = await client.delete(f"{KEYS}/{leaked_id}", headers=helper)
    assert again.status_code == 204, again.text
    async with database.transaction() as session:
        count = await session.scalar(text(
            "SELECT count(*) FROM audit_logs WHERE action = 'api_key.revoked' AND user_id = :u"),
            {"u": user_id})
    assert count == 3
