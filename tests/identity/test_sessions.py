"""Sessions and tokens (point 2), API keys (point 3), abuse resistance (point 9)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import bcrypt
import httpx
import pytest
from sqlalchemy import select, text, update

from roost.db.engine import Database
from roost.identity import sessions as sessions_service
from roost.identity.common import MAX_LISTED
from roost.identity.models import ApiKey, RegisteredDevice, Session, User
from roost.keyfiles import KeyMaterial
from roost.security import passwords
from roost.security.tokens import hash_refresh_token, issue_access_token
from tests.identity.conftest import PASSWORD, bearer, login, password_user
from tests.support.identity import make_user


async def _actions(database: Database) -> list[str]:
    async with database.transaction() as session:
        return list((await session.scalars(text("SELECT action FROM audit_logs ORDER BY seq"))).all())


async def test_login_refresh_logout(client: httpx.AsyncClient, database: Database) -> None:
    await password_user(database, "ann")
    answer = await login(client, "ann")
    assert answer.status_code == 200
    tokens = answer.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 900
    assert tokens["user"]["username"] == "ann" and not tokens["mfa_required"]
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=headers)).json()["username"] == "ann"
    async with database.transaction() as session:
        row = await session.get(Session, uuid.UUID(tokens["session_id"]))
        assert row is not None and row.token_hash != tokens["refresh_token"]
        assert len(row.token_hash) == 64  # SHA-256 only, never the token

    # Refresh rotates: the new pair works, and the old refresh token is dead.
    refreshed = await client.post("/api/v1/auth/refresh",
                                  json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    new = refreshed.json()
    assert new["session_id"] == tokens["session_id"]
    assert new["refresh_token"] != tokens["refresh_token"]
    new_headers = {"Authorization": f"Bearer {new['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=new_headers)).status_code == 200

    # Replaying the replaced refresh token revokes the session for everyone holding it.
    replay = await client.post("/api/v1/auth/refresh",
                               json={"refresh_token": tokens["refresh_token"]})
    assert replay.status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=new_headers)).status_code == 401
    assert "session.refresh_reuse" in await _actions(database)

    # Logout: the very next request with that access token is refused.
    fresh = await bearer(client, "ann")
    assert (await client.post("/api/v1/auth/logout", headers=fresh)).status_code == 204
    gone = await client.get("/api/v1/auth/me", headers=fresh)
    assert gone.status_code == 401 and gone.headers["www-authenticate"] == "Bearer"


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def test_a_refresh_token_replaced_several_rotations_ago_still_ends_the_session(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A thief who copied the first refresh token and waits until the owner has
    refreshed twice is caught as surely as one who uses it at once."""
    await password_user(database, "ria")
    first = (await login(client, "ria")).json()
    second = (await _refresh(client, first["refresh_token"])).json()
    third = (await _refresh(client, second["refresh_token"])).json()
    current = {"Authorization": f"Bearer {third['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=current)).status_code == 200

    assert (await _refresh(client, first["refresh_token"])).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=current)).status_code == 401
    assert (await _refresh(client, third["refresh_token"])).status_code == 401
    assert "session.refresh_reuse" in await _actions(database)


async def test_a_made_up_refresh_token_naming_a_session_ends_nothing(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Someone who knows a session's id cannot end it by sending tokens in its name:
    only a token Roost issued (its MAC checks) counts as a replaced one."""
    await password_user(database, "sid")
    tokens = (await login(client, "sid")).json()
    session_id, nonce, mac = tokens["refresh_token"].split(".")
    assert session_id == uuid.UUID(tokens["session_id"]).hex
    forged = f"{session_id}.{'A' * len(nonce)}.{mac}"
    assert (await _refresh(client, forged)).status_code == 401
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 200
    assert (await _refresh(client, tokens["refresh_token"])).status_code == 200


async def test_a_refresh_token_from_before_the_signed_format_still_rotates(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Sessions opened by an older Roost (opaque refresh tokens) keep working after an
    upgrade, and replaying their replaced token still ends them."""
    await password_user(database, "old")
    tokens = (await login(client, "old")).json()
    opaque = "o" * 43
    async with database.transaction() as session:
        await session.execute(update(Session)
                              .where(Session.id == uuid.UUID(tokens["session_id"]))
                              .values(token_hash=hash_refresh_token(opaque)))
    rotated = await _refresh(client, opaque)
    assert rotated.status_code == 200
    assert (await _refresh(client, opaque)).status_code == 401
    headers = {"Authorization": f"Bearer {rotated.json()['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 401


async def test_logout_everywhere_and_admin_revocation(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    user_id = await password_user(database, "bob")
    one, two = await bearer(client, "bob"), await bearer(client, "bob")
    listed = await client.get("/api/v1/auth/sessions", headers=one)
    assert len(listed.json()) == 2 and sum(s["current"] for s in listed.json()) == 1
    assert (await client.post("/api/v1/auth/logout-all", headers=one)).json() == {"count": 2}
    assert (await client.get("/api/v1/auth/me", headers=one)).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=two)).status_code == 401

    three = await bearer(client, "bob")
    revoked = await client.post(f"/api/v1/users/{user_id}/sessions/revoke", headers=admin_headers)
    assert revoked.json() == {"count": 1}
    assert (await client.get("/api/v1/auth/me", headers=three)).status_code == 401

    four, five = await bearer(client, "bob"), await bearer(client, "bob")
    sid = (await client.get("/api/v1/auth/sessions", headers=four)).json()
    other = next(s["id"] for s in sid if not s["current"])
    assert (await client.delete(f"/api/v1/auth/sessions/{other}", headers=four)).status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=five)).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=four)).status_code == 200
    actions = await _actions(database)
    assert {"auth.logout_all", "session.revoked_by_admin", "session.revoked"} <= set(actions)


async def test_expired_and_tampered_tokens_are_401(
    client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial
) -> None:
    user_id = await password_user(database, "cyd")
    tokens = (await login(client, "cyd")).json()
    expired = issue_access_token(test_keys.secret_key, user_id=user_id,
                                 session_id=tokens["session_id"], ttl_seconds=60,
                                 now=time.time() - 3600)
    answer = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert answer.status_code == 401 and answer.json()["detail"] == "token expired"
    head, payload, sig = tokens["access_token"].split(".")
    tampered = f"{head}.{payload}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    answer = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tampered}"})
    assert answer.status_code == 401 and answer.json()["detail"] == "invalid token"
    forged = issue_access_token("x" * 48, user_id=user_id, session_id=tokens["session_id"],
                                ttl_seconds=60)
    answer = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401
    for junk in ("Bearer", "Basic abc", "Bearer not-a-token"):
        assert (await client.get("/api/v1/auth/me", headers={"Authorization": junk})).status_code == 401
    # An expired session row refuses a still-valid access token.
    async with database.transaction() as session:
        await session.execute(update(Session).values(expires_at=datetime.now(UTC) - timedelta(1)))
    answer = await client.get("/api/v1/auth/me",
                              headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert answer.status_code == 401
    bad_refresh = await client.post("/api/v1/auth/refresh",
                                    json={"refresh_token": tokens["refresh_token"]})
    assert bad_refresh.status_code == 401


async def test_imported_bcrypt_hash_verifies_and_is_upgraded(
    client: httpx.AsyncClient, database: Database
) -> None:
    user_id = await password_user(database, "legacy")
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    async with database.transaction() as session:
        await session.execute(update(User).where(User.id == user_id)
                              .values(hashed_password=legacy))
    assert (await login(client, "legacy", "wrong-password-123")).status_code == 401
    assert (await login(client, "legacy")).status_code == 200
    async with database.transaction() as session:
        stored = await session.scalar(select(User.hashed_password).where(User.id == user_id))
    assert stored is not None and stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert (await login(client, "legacy")).status_code == 200


async def test_unknown_user_and_wrong_password_look_the_same(
    client: httpx.AsyncClient, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await password_user(database, "dee")
    hashes: list[str] = []
    real_dummy, real_check = passwords.dummy_verify, passwords.check_password
    monkeypatch.setattr(sessions_service, "dummy_verify",
                        lambda p="": (hashes.append("dummy"), real_dummy(p))[1])
    monkeypatch.setattr(sessions_service, "check_password",
                        lambda h, p: (hashes.append("real"), real_check(h, p))[1])
    wrong = await login(client, "dee", "Not-the-password-42")
    unknown = await login(client, "nobody-here", "Not-the-password-42")
    assert wrong.status_code == unknown.status_code == 401
    strip = ("request_id",)
    assert {k: v for k, v in wrong.json().items() if k not in strip} == {
        k: v for k, v in unknown.json().items() if k not in strip}
    # Both answers cost one argon2 verification: no timing shortcut for unknown names.
    assert hashes == ["real", "dummy"]


async def test_lockout_per_account_and_its_expiry(
    client: httpx.AsyncClient, database: Database
) -> None:
    await password_user(database, "eve")
    for _ in range(3):
        assert (await login(client, "eve", "Wrong-password-99")).status_code == 401
    locked = await login(client, "eve")  # even the right password waits
    assert locked.status_code == 429 and locked.json()["retry_after_s"] >= 1
    # Unknown names lock out the same way.
    for _ in range(3):
        await login(client, "ghost", "Wrong-password-99")
    assert (await login(client, "ghost", "Wrong-password-99")).status_code == 429
    await asyncio.sleep(2.1)  # ROOST_LOGIN_LOCKOUT_S=2 in these tests
    assert (await login(client, "eve")).status_code == 200
    actions = await _actions(database)
    assert actions.count("auth.lockout") == 2 and actions.count("auth.login_failed") == 6


async def test_lockout_per_address(client: httpx.AsyncClient, database: Database) -> None:
    await password_user(database, "fay")
    for n in range(8):  # spread over many names: the per-address counter still trips
        await login(client, f"name{n}", "Wrong-password-99")
    answer = await login(client, "fay")
    assert answer.status_code == 429
    async with database.transaction() as session:
        meta = (await session.execute(text(
            "SELECT metadata FROM audit_logs WHERE action = 'auth.lockout'"))).scalars().all()
    assert any(m["scope"] == "ip" for m in meta)


async def test_api_keys_create_list_use_revoke_expire(
    client: httpx.AsyncClient, database: Database
) -> None:
    _, headers = await make_user(database, username="gus")
    created = await client.post("/api/v1/api-keys", headers=headers,
                                json={"name": "laptop script"})
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith(f"rst_{key['prefix']}_") and len(key["prefix"]) == 8
    key_headers = {"Authorization": f"Bearer {key['key']}"}
    assert (await client.get("/api/v1/auth/me", headers=key_headers)).json()["username"] == "gus"

    listed = (await client.get("/api/v1/api-keys", headers=key_headers)).json()
    mine = next(k for k in listed if k["id"] == key["id"])
    assert "key" not in mine and mine["name"] == "laptop script"
    assert mine["last_used_at"] is not None and mine["created_at"]
    async with database.transaction() as session:
        stored = await session.get(ApiKey, uuid.UUID(key["id"]))
    assert stored is not None and key["key"] not in (stored.key_hash, stored.prefix)

    assert (await client.delete(f"/api/v1/api-keys/{key['id']}", headers=headers)).status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=key_headers)).status_code == 401
    assert key["id"] not in [k["id"] for k in (await client.get(
        "/api/v1/api-keys", headers=headers)).json()]

    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    expiring = (await client.post("/api/v1/api-keys", headers=headers,
                                  json={"name": "short", "expires_at": soon})).json()
    exp_headers = {"Authorization": f"Bearer {expiring['key']}"}
    assert (await client.get("/api/v1/auth/me", headers=exp_headers)).status_code == 200
    async with database.transaction() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == uuid.UUID(expiring["id"]))
                              .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert (await client.get("/api/v1/auth/me", headers=exp_headers)).status_code == 401
    past = await client.post("/api/v1/api-keys", headers=headers,
                             json={"name": "x", "expires_at": "2020-01-01T00:00:00Z"})
    assert past.status_code == 422
    assert {"api_key.created", "api_key.revoked"} <= set(await _actions(database))
    # Logout ends sign-in sessions; a key says how to revoke itself instead.
    not_a_session = await client.post("/api/v1/auth/logout", headers=headers)
    assert not_a_session.status_code == 400 and "/api/v1/api-keys" in not_a_session.json()["detail"]


@pytest.mark.parametrize("name", ["ci\u0000key", "\u0000"])
async def test_a_nul_in_an_api_key_name_is_a_422_naming_the_field(
    client: httpx.AsyncClient, database: Database, name: str,
) -> None:
    """A key's name is stored as text, which holds no NUL: a 422 naming `name`, not the
    database's anonymous 400, and no key made."""
    _, headers = await make_user(database)  # with its one key, "test helper"
    answer = await client.post("/api/v1/api-keys", headers=headers, json={"name": name})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["loc"][-1] == "name", answer.text
    keys = (await client.get("/api/v1/api-keys", headers=headers)).json()
    assert [k["name"] for k in keys] == ["test helper"]


async def _revoked_keys(database: Database, user_id: uuid.UUID, revoked_days_ago: list[float],
                        **values: object) -> list[uuid.UUID]:
    """Keys of ``user_id`` revoked that many days ago (``values``: more columns)."""
    now = datetime.now(UTC)
    rows = [ApiKey(user_id=user_id, name=f"k{i}", prefix=f"{i:08d}", key_hash=f"{uuid.uuid4().hex:0<64}",
                   revoked_at=now - timedelta(days=days), **values)
            for i, days in enumerate(revoked_days_ago)]
    async with database.transaction() as session:
        session.add_all(rows)
    return [r.id for r in rows]


async def test_listing_revoked_api_keys_gives_the_most_recently_revoked_hundred(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A create-then-revoke loop does not grow one answer without end: with
    include_revoked, every active key and the 100 most recently revoked."""
    user_id, headers = await make_user(database)  # with its one key, "test helper"
    await _revoked_keys(database, user_id, [10 + i / 100 for i in range(20)])
    newer = await _revoked_keys(database, user_id, [1 + i / 100 for i in range(100)])
    active = await client.post("/api/v1/api-keys", headers=headers, json={"name": "live"})
    assert active.status_code == 201, active.text
    listed = await client.get("/api/v1/api-keys?include_revoked=true", headers=headers)
    assert listed.status_code == 200
    ids = [k["id"] for k in listed.json() if k["revoked_at"]]
    assert set(ids) == {str(i) for i in newer} and len(ids) == 100
    unrevoked = [k["name"] for k in listed.json() if not k["revoked_at"]]
    assert unrevoked == ["live", "test helper"]  # newest first
    assert [k["name"] for k in (await client.get("/api/v1/api-keys", headers=headers)).json()] \
        == unrevoked


async def test_cleanup_deletes_api_keys_revoked_or_expired_thirty_days_ago(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Ended keys do not pile up: thirty days after their revocation or expiry the hourly
    clean-up deletes them (their history stays in the audit log); others are kept."""
    user_id, headers = await make_user(database)
    old_revoked, recent_revoked = await _revoked_keys(database, user_id, [31, 29])
    now = datetime.now(UTC)
    expired = await _revoked_keys(database, user_id, [0], expires_at=now - timedelta(days=31))
    async with database.transaction() as session:
        await session.execute(update(ApiKey).where(ApiKey.id.in_(expired)).values(revoked_at=None))
    live = await client.post("/api/v1/api-keys", headers=headers, json={"name": "live"})
    async with database.transaction() as session:
        report = await sessions_service.cleanup_expired(session)
    assert report.api_keys == 2
    async with database.transaction() as session:
        left = set((await session.scalars(select(ApiKey.id).where(ApiKey.user_id == user_id))).all())
    assert old_revoked not in left and not left & set(expired)
    assert {recent_revoked, uuid.UUID(live.json()["id"])} < left  # and "test helper"
    assert len(left) == 3


async def test_cleanup_removes_expired_sessions(
    client: httpx.AsyncClient, database: Database
) -> None:
    await password_user(database, "hal")
    keep = (await login(client, "hal")).json()
    old = (await login(client, "hal")).json()
    async with database.transaction() as session:
        await session.execute(update(Session).where(Session.id == uuid.UUID(old["session_id"]))
                              .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
        report = await sessions_service.cleanup_expired(session)
    assert report.sessions == 1
    async with database.transaction() as session:
        left = (await session.scalars(select(Session.id))).all()
    assert [str(s) for s in left] == [keep["session_id"]]


async def test_failed_login_flood_does_not_starve_a_small_pool(
    pg_server: object, db_name: str, test_settings: object, test_keys: KeyMaterial,
    database: Database,
) -> None:
    """Each request holds one pooled connection, failures included (they commit before
    answering), so twelve concurrent bad logins on a two-connection pool all get answers."""
    from roost.app import create_app
    from roost.db.engine import create_database

    await password_user(database, "ivy")
    settings = test_settings.model_copy(update={  # type: ignore[attr-defined]
        "db_pool_size": 2, "db_max_overflow": 0, "login_max_failures_per_ip": 100})
    small = create_database(settings, url=pg_server.url_for(db_name))  # type: ignore[attr-defined]
    try:
        app = create_app(settings, database=small, keys=test_keys, configure_logs=False)
        transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as c:
            answers = await asyncio.gather(*(
                c.post("/api/v1/auth/login", json={"login": f"ivy{'' if i % 2 else 'x'}",
                                                    "password": "Wrong-password-99"})
                for i in range(12)))
        assert {a.status_code for a in answers} <= {401, 429}
    finally:
        await small.dispose()
    # Every failure was counted (each account locks after three in these tests).
    assert (await _actions(database)).count("auth.login_failed") >= 6


async def test_a_password_change_on_an_account_without_one_is_a_409_never_counted(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """An account created without a password has none to change: a clear 409 (not
    "current password is incorrect"), and no failed attempt counted toward a lockout."""
    _, headers = await make_user(database)
    for _ in range(5):  # past the per-account limit (3): still 409, never 429
        answer = await client.post("/api/v1/auth/password", headers=headers, json={
            "current_password": PASSWORD, "new_password": "violet-Harbor-stone-9-lantern"})
        assert answer.status_code == 409, answer.text
        assert "no password" in answer.json()["detail"]
    assert "user.password_change_failed" not in await _actions(database)


async def test_the_session_and_device_lists_hold_the_newest_hundred(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Listed without paging, so bounded: an account with more sessions and devices than
    MAX_LISTED is shown the newest that many, never all."""
    user_id, headers = await make_user(database)
    async with database.transaction() as session:
        for n in range(MAX_LISTED + 5):
            session.add(RegisteredDevice(user_id=user_id, device_name=f"box {n}",
                                         device_type="server", fingerprint=f"{n:064x}"))
            session.add(Session(user_id=user_id, token_hash=f"{n:064x}",
                                expires_at=datetime.now(UTC) + timedelta(days=1)))
    listed = await client.get("/api/v1/auth/sessions", headers=headers)
    assert listed.status_code == 200, listed.text
    assert len(listed.json()) == MAX_LISTED
    devices = await client.get("/api/v1/users/me/devices", headers=headers)
    assert devices.status_code == 200, devices.text
    assert len(devices.json()) == MAX_LISTED
