"""TOTP with backup codes, passkeys with a software authenticator, devices (point 4)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi import FastAPI
from sqlalchemy import select, text

from roost.db.engine import Database
from roost.identity.models import UserTwoFactorAuth
from roost.security.totp import current_totp_step, hash_backup_code, totp_code_at
from tests.identity.conftest import (
    ORIGIN,
    PASSWORD,
    bearer,
    login,
    password_user,
    wait_for_fresh_totp_step,
)
from tests.support.identity import make_user
from tests.support.soft_authenticator import SoftAuthenticator


async def _actions(database: Database) -> set[str]:
    async with database.transaction() as session:
        return set((await session.scalars(text("SELECT action FROM audit_logs"))).all())


async def test_totp_enrol_login_backup_codes_disable(
    client: httpx.AsyncClient, database: Database
) -> None:
    await password_user(database, "tina")
    headers = await bearer(client, "tina")
    setup = await client.post("/api/v1/auth/2fa/setup", headers=headers)
    assert setup.status_code == 200
    secret = setup.json()["secret"]
    uri = urlsplit(setup.json()["otpauth_uri"])
    assert uri.scheme == "otpauth" and parse_qs(uri.query)["secret"] == [secret]
    async with database.transaction() as session:
        stored = await session.scalar(select(UserTwoFactorAuth.secret_key_encrypted))
    assert stored is not None and secret not in stored  # encrypted at rest

    wait_for_fresh_totp_step()
    step = current_totp_step()
    wrong = await client.post("/api/v1/auth/2fa/confirm", headers=headers, json={"code": "000000"})
    assert wrong.status_code == 400
    confirmed = await client.post("/api/v1/auth/2fa/confirm", headers=headers,
                                  json={"code": totp_code_at(secret, step - 1)})
    assert confirmed.status_code == 200
    codes = confirmed.json()["backup_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    status = (await client.get("/api/v1/auth/2fa", headers=headers)).json()
    assert status == {"enabled": True, "pending": False, "backup_codes_remaining": 10}

    # Password alone now yields a challenge, not tokens.
    first = (await login(client, "tina")).json()
    assert first["mfa_required"] and "access_token" not in first
    bad = await client.post("/api/v1/auth/login/2fa",
                            json={"mfa_token": first["mfa_token"], "code": "123456"})
    assert bad.status_code == 401
    ok = await client.post("/api/v1/auth/login/2fa", json={
        "mfa_token": first["mfa_token"], "code": totp_code_at(secret, step)})
    assert ok.status_code == 200 and ok.json()["access_token"]
    # The challenge is single use, and a used code cannot be replayed.
    again = await client.post("/api/v1/auth/login/2fa", json={
        "mfa_token": first["mfa_token"], "code": totp_code_at(secret, step + 1)})
    assert again.status_code == 401
    second = (await login(client, "tina")).json()
    replay = await client.post("/api/v1/auth/login/2fa", json={
        "mfa_token": second["mfa_token"], "code": totp_code_at(secret, step)})
    assert replay.status_code == 401

    # A backup code works once.
    with_backup = await client.post("/api/v1/auth/login/2fa", json={
        "mfa_token": second["mfa_token"], "code": codes[0].upper()})
    assert with_backup.status_code == 200
    third = (await login(client, "tina")).json()
    reused = await client.post("/api/v1/auth/login/2fa", json={
        "mfa_token": third["mfa_token"], "code": codes[0]})
    assert reused.status_code == 401
    status = (await client.get("/api/v1/auth/2fa", headers=headers)).json()
    assert status["backup_codes_remaining"] == 9

    # Disabling needs a current code.
    refused = await client.post("/api/v1/auth/2fa/disable", headers=headers,
                                json={"code": codes[0]})
    assert refused.status_code == 403
    off = await client.post("/api/v1/auth/2fa/disable", headers=headers,
                            json={"code": totp_code_at(secret, step + 1)})
    assert off.status_code == 204
    assert not (await login(client, "tina")).json()["mfa_required"]
    assert {"2fa.enabled", "2fa.backup_code_used", "2fa.disabled", "auth.mfa_failed",
            "auth.mfa_challenge"} <= await _actions(database)


async def test_an_all_digit_backup_code_signs_in_however_it_is_typed(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Crockford backup codes can be all digits: typed without the dash (10 digits, not a
    TOTP code's 6) it is still a backup code, and still works only once."""
    uid = await password_user(database, "tdig")
    headers = await bearer(client, "tdig")
    secret = (await client.post("/api/v1/auth/2fa/setup", headers=headers)).json()["secret"]
    wait_for_fresh_totp_step()
    confirmed = await client.post("/api/v1/auth/2fa/confirm", headers=headers,
                                  json={"code": totp_code_at(secret, current_totp_step())})
    assert confirmed.status_code == 200, confirmed.text
    async with database.transaction() as session:
        await session.execute(text(
            "UPDATE user_two_factor_auth SET backup_codes = jsonb_build_array("
            "CAST(:a AS text), CAST(:b AS text)) WHERE user_id = :u"),
            {"a": hash_backup_code("12345-67890"), "b": hash_backup_code("24680-13579"),
             "u": uid})

    async def second_step(code: str) -> int:
        token = (await login(client, "tdig")).json()["mfa_token"]
        answer = await client.post("/api/v1/auth/login/2fa",
                                   json={"mfa_token": token, "code": code})
        return answer.status_code

    assert await second_step("1234567890") == 200
    assert await second_step("24680 13579") == 200
    assert await second_step("12345-67890") == 401  # used up
    status = (await client.get("/api/v1/auth/2fa", headers=headers)).json()
    assert status["backup_codes_remaining"] == 0


async def test_mfa_challenge_gives_up_after_repeated_wrong_codes(
    client: httpx.AsyncClient, database: Database
) -> None:
    await password_user(database, "uma")
    headers = await bearer(client, "uma")
    secret = (await client.post("/api/v1/auth/2fa/setup", headers=headers)).json()["secret"]
    wait_for_fresh_totp_step()
    await client.post("/api/v1/auth/2fa/confirm", headers=headers,
                      json={"code": totp_code_at(secret, current_totp_step())})
    token = (await login(client, "uma")).json()["mfa_token"]
    for _ in range(3):  # the account lockout (3 in these tests) trips first
        await client.post("/api/v1/auth/login/2fa", json={"mfa_token": token, "code": "000000"})
    blocked = await client.post("/api/v1/auth/login/2fa", json={
        "mfa_token": token, "code": totp_code_at(secret, current_totp_step() + 1)})
    assert blocked.status_code == 429


async def test_a_sign_in_challenge_begun_with_the_old_password_ends_when_it_changes(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A password change ends every other session, so a second-factor step won with the
    old password must not still turn into a new session afterwards."""
    await password_user(database, "mfachange")
    headers = await bearer(client, "mfachange")
    secret = (await client.post("/api/v1/auth/2fa/setup", headers=headers)).json()["secret"]
    wait_for_fresh_totp_step(8)
    step = current_totp_step()
    confirmed = await client.post("/api/v1/auth/2fa/confirm", headers=headers,
                                  json={"code": totp_code_at(secret, step - 1)})
    assert confirmed.status_code == 200, confirmed.text
    challenge = (await login(client, "mfachange")).json()  # someone who knew the old password
    assert challenge["mfa_required"] is True
    changed = await client.post("/api/v1/auth/password", headers=headers, json={
        "current_password": PASSWORD, "new_password": "lantern-Violet-88-oak"})
    assert changed.status_code == 200, changed.text
    finished = await client.post("/api/v1/auth/login/2fa", json={
        "mfa_token": challenge["mfa_token"], "code": totp_code_at(secret, step)})
    assert finished.status_code == 401, finished.text
    assert "sign in again" in finished.json()["detail"]


async def test_logout_everywhere_and_admin_revocation_end_pending_second_factor_steps(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    """Ending all of an account's sessions also ends its sign-ins waiting for a code."""
    user_id = await password_user(database, "mfaend")
    headers = await bearer(client, "mfaend")
    secret = (await client.post("/api/v1/auth/2fa/setup", headers=headers)).json()["secret"]
    wait_for_fresh_totp_step()
    confirmed = await client.post("/api/v1/auth/2fa/confirm", headers=headers,
                                  json={"code": totp_code_at(secret, current_totp_step())})
    codes = confirmed.json()["backup_codes"]
    pending = (await login(client, "mfaend")).json()["mfa_token"]
    assert (await client.post("/api/v1/auth/logout-all", headers=headers)).status_code == 200
    ended = await client.post("/api/v1/auth/login/2fa",
                              json={"mfa_token": pending, "code": codes[0]})
    assert ended.status_code == 401 and "sign in again" in ended.json()["detail"], ended.text
    pending = (await login(client, "mfaend")).json()["mfa_token"]
    revoked = await client.post(f"/api/v1/users/{user_id}/sessions/revoke",
                                headers=admin_headers)
    assert revoked.status_code == 200, revoked.text
    ended = await client.post("/api/v1/auth/login/2fa",
                              json={"mfa_token": pending, "code": codes[1]})
    assert ended.status_code == 401 and "sign in again" in ended.json()["detail"], ended.text
    # A sign-in begun afterwards completes as usual.
    fresh = (await login(client, "mfaend")).json()["mfa_token"]
    done = await client.post("/api/v1/auth/login/2fa", json={"mfa_token": fresh, "code": codes[2]})
    assert done.status_code == 200, done.text


async def test_second_factor_guessing_locks_the_account_across_addresses(
    app: FastAPI, client: httpx.AsyncClient, database: Database
) -> None:
    """Issue 10 item 3: a correct password clears the password counter, never the count of
    wrong codes; alternating addresses does not help either (the limit is 3 here)."""
    await password_user(database, "vera")
    headers = await bearer(client, "vera")
    secret = (await client.post("/api/v1/auth/2fa/setup", headers=headers)).json()["secret"]
    wait_for_fresh_totp_step(margin_s=12.0)
    step = current_totp_step()
    confirmed = await client.post("/api/v1/auth/2fa/confirm", headers=headers,
                                  json={"code": totp_code_at(secret, step - 1)})
    backup = confirmed.json()["backup_codes"]
    addresses = [f"198.51.100.{n}" for n in range(1, 9)]
    clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 40000)),
                                 base_url="http://roost.test") for ip in addresses]

    async def attempt(n: int, code: str) -> httpx.Response:
        """Right password from address ``n``, then ``code``."""
        first = await login(clients[n], "vera")
        assert first.status_code == 200 and first.json()["mfa_required"], first.text
        return await clients[n].post("/api/v1/auth/login/2fa", json={
            "mfa_token": first.json()["mfa_token"], "code": code})

    try:
        # Two misses, then a success: the success resets the count ...
        assert (await attempt(0, "000000")).status_code == 401
        assert (await attempt(1, "abcd-efgh")).status_code == 401  # wrong backup code
        assert (await attempt(2, backup[0])).status_code == 200
        # ... so two more misses do not lock (2 + 2 would be over the limit of 3).
        assert (await attempt(3, "000000")).status_code == 401
        assert (await attempt(4, "111111")).status_code == 401
        # The third miss in a row, each after a correct password from a new address, locks.
        assert (await attempt(5, "222222")).status_code == 401
        locked = await attempt(6, totp_code_at(secret, step))  # even the right code waits
        assert locked.status_code == 429, locked.text
        assert locked.json()["retry_after_s"] >= 1
        assert (await attempt(7, backup[1])).status_code == 429
        await asyncio.sleep(2.1)  # ROOST_LOGIN_LOCKOUT_S=2 in these tests
        assert (await attempt(7, totp_code_at(secret, step))).status_code == 200
    finally:
        for c in clients:
            await c.aclose()
    async with database.transaction() as session:
        rows = (await session.execute(text(
            "SELECT action, metadata FROM audit_logs WHERE action IN "
            "('auth.mfa_failed', 'auth.lockout') ORDER BY seq"))).all()
    assert [a for a, _ in rows].count("auth.mfa_failed") == 5
    lockouts = [m for a, m in rows if a == "auth.lockout"]
    assert [m["scope"] for m in lockouts] == ["second_factor"]


async def test_passkey_register_login_rename_delete(
    client: httpx.AsyncClient, database: Database
) -> None:
    await password_user(database, "pat")
    headers = await bearer(client, "pat")
    authenticator = SoftAuthenticator()

    begin = await client.post("/api/v1/auth/passkeys/register/begin", headers=headers,
                              json={"name": "Laptop"})
    assert begin.status_code == 200
    options = begin.json()["options"]
    assert options["rp"]["id"] == "roost.test"
    credential = authenticator.create(options, origin=ORIGIN)
    finish = await client.post("/api/v1/auth/passkeys/register/finish", headers=headers,
                               json={"challenge_id": begin.json()["challenge_id"],
                                     "credential": credential})
    assert finish.status_code == 201, finish.text
    passkey = finish.json()
    assert passkey["credential_name"] == "Laptop"
    # The challenge was used up.
    twice = await client.post("/api/v1/auth/passkeys/register/finish", headers=headers,
                              json={"challenge_id": begin.json()["challenge_id"],
                                    "credential": credential})
    assert twice.status_code == 400

    # Username-less sign-in.
    start = (await client.post("/api/v1/auth/passkeys/login/begin")).json()
    assertion = authenticator.get(start["options"], origin=ORIGIN)
    signed_in = await client.post("/api/v1/auth/passkeys/login/finish", json={
        "challenge_id": start["challenge_id"], "credential": assertion})
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["user"]["username"] == "pat"
    pk_headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    sessions = (await client.get("/api/v1/auth/sessions", headers=pk_headers)).json()
    assert {s["auth_method"] for s in sessions} == {"password", "passkey"}

    # A phishing page (other origin) and a replayed challenge both fail.
    start = (await client.post("/api/v1/auth/passkeys/login/begin")).json()
    phished = authenticator.get(start["options"], origin="https://roost.evil")
    refused = await client.post("/api/v1/auth/passkeys/login/finish", json={
        "challenge_id": start["challenge_id"], "credential": phished})
    assert refused.status_code == 401 and refused.json()["detail"] == "passkey sign-in failed"
    start = (await client.post("/api/v1/auth/passkeys/login/begin")).json()
    assertion = authenticator.get(start["options"], origin=ORIGIN)
    body = {"challenge_id": start["challenge_id"], "credential": assertion}
    assert (await client.post("/api/v1/auth/passkeys/login/finish", json=body)).status_code == 200
    assert (await client.post("/api/v1/auth/passkeys/login/finish", json=body)).status_code == 401

    renamed = await client.patch(f"/api/v1/auth/passkeys/{passkey['id']}", headers=headers,
                                 json={"name": "Work laptop"})
    assert renamed.json()["credential_name"] == "Work laptop"
    # A name is one line (an ESC or a line break was stored); a rename to blanks is a
    # mistake (it became "Passkey").
    for bad in ("a\nb", "x\x1b[31m", "   "):
        refused = await client.patch(f"/api/v1/auth/passkeys/{passkey['id']}",
                                     headers=headers, json={"name": bad})
        assert refused.status_code == 422 and refused.json()["field"] == "name", refused.text
    listed = (await client.get("/api/v1/auth/passkeys", headers=headers)).json()
    assert [p["credential_name"] for p in listed] == ["Work laptop"]
    assert listed[0]["last_used_at"] is not None
    assert (await client.delete(f"/api/v1/auth/passkeys/{passkey['id']}",
                                headers=headers)).status_code == 204
    start = (await client.post("/api/v1/auth/passkeys/login/begin")).json()
    assertion = authenticator.get(start["options"], origin=ORIGIN)
    after_delete = await client.post("/api/v1/auth/passkeys/login/finish", json={
        "challenge_id": start["challenge_id"], "credential": assertion})
    assert after_delete.status_code == 401
    assert {"passkey.registered", "passkey.renamed", "passkey.deleted",
            "auth.passkey_failed"} <= await _actions(database)


async def test_devices_are_recorded_trusted_and_revoked(
    client: httpx.AsyncClient, database: Database
) -> None:
    await password_user(database, "dan")
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    phone = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
    first = await client.post("/api/v1/auth/login", headers={"user-agent": firefox},
                              json={"login": "dan", "password": "plum-Quartz-river-7-kettle"})
    await client.post("/api/v1/auth/login", headers={"user-agent": firefox},
                      json={"login": "dan", "password": "plum-Quartz-river-7-kettle"})
    on_phone = await client.post("/api/v1/auth/login", headers={"user-agent": phone}, json={
        "login": "dan", "password": "plum-Quartz-river-7-kettle", "device_name": "Dan's phone"})
    desk = {"Authorization": f"Bearer {first.json()['access_token']}"}
    mobile = {"Authorization": f"Bearer {on_phone.json()['access_token']}"}
    devices = (await client.get("/api/v1/users/me/devices", headers=desk)).json()
    assert sorted((d["device_name"], d["device_type"]) for d in devices) == [
        ("Dan's phone", "mobile"), ("Firefox on Linux", "desktop")]
    assert all(d["ip_address"] == "127.0.0.1" and d["last_used_at"] for d in devices)
    phone_id = next(d["id"] for d in devices if d["device_type"] == "mobile")

    trusted = await client.patch(f"/api/v1/users/me/devices/{phone_id}", headers=desk,
                                 json={"is_trusted": True})
    assert trusted.json()["is_trusted"] is True
    assert (await client.delete(f"/api/v1/users/me/devices/{phone_id}",
                                headers=desk)).status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=mobile)).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=desk)).status_code == 200
    assert {"device.trusted", "device.revoked"} <= await _actions(database)
    assert uuid.UUID(phone_id)


async def test_resetting_ones_own_second_factor_without_being_an_admin_is_a_403(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """DELETE /users/{own id}/2fa by a non-administrator says it needs an administrator
    (403, as PATCH of one's own role does), not "no such user" about one's own account."""
    user_id, headers = await make_user(database)
    answer = await client.delete(f"/api/v1/users/{user_id}/2fa", headers=headers)
    assert answer.status_code == 403, answer.text


async def test_short_lived_key_cannot_register_a_permanent_passkey(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A passkey signs in long after the key that registered it expired: registering one
    with a key that expires (a leaked one-hour key) is a 403, at the ceremony's start
    and at its finish (a challenge begun with a session, finished with the key)."""
    _, headers = await make_user(database)
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    made = await client.post("/api/v1/api-keys", headers=headers, json={"name": "short", "expires_at": soon})
    assert made.status_code == 201, made.text
    short = {"Authorization": f"Bearer {made.json()['key']}"}
    refused = await client.post("/api/v1/auth/passkeys/register/begin", headers=short,
                                json={})
    assert refused.status_code == 403, refused.text
    begin = await client.post("/api/v1/auth/passkeys/register/begin", headers=headers,
                              json={})
    assert begin.status_code == 200, begin.text
    credential = SoftAuthenticator().create(begin.json()["options"], origin=ORIGIN)
    finish = await client.post("/api/v1/auth/passkeys/register/finish", headers=short,
                               json={"challenge_id": begin.json()["challenge_id"],
                                     "credential": credential})
    assert finish.status_code == 403, finish.text
