"""Sign-in flows against a holder of a stolen session or a forged passkey: the second
factor cannot be guessed off (or into new backup codes) without the sign-in's lockout, a
malformed assertion is a refused sign-in, never a 500, and a registration whose public key
could never verify a sign-in is refused."""

from __future__ import annotations

import struct
from typing import Any

import cbor2
import httpx

from roost.config import Settings
from roost.db.engine import Database
from roost.identity.passkeys import PASSKEY_BEGINS_PER_FAILURE
from roost.security.totp import current_totp_step, totp_code_at
from tests.identity.conftest import ORIGIN, bearer, password_user, wait_for_fresh_totp_step
from tests.support.soft_authenticator import SoftAuthenticator, b64url_decode, b64url_encode
from tests.support.sql import scalar


async def _enrol(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    secret: str = (await client.post("/api/v1/auth/2fa/setup", headers=headers)).json()["secret"]
    wait_for_fresh_totp_step(margin_s=10.0)
    confirmed = await client.post("/api/v1/auth/2fa/confirm", headers=headers,
                                  json={"code": totp_code_at(secret, current_totp_step() - 1)})
    assert confirmed.status_code == 200, confirmed.text
    return secret


async def test_disable_2fa_code_guessing_is_throttled(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A stolen session cannot guess the code at /2fa/disable without limit (locks like login/2fa)."""
    await password_user(database, "gues")
    headers = await bearer(client, "gues")
    secret = await _enrol(client, headers)
    step = current_totp_step()
    valid = {totp_code_at(secret, s) for s in range(step - 2, step + 3)}
    wrong = [c for c in (f"{n:06d}" for n in range(100)) if c not in valid][:10]
    for code in wrong:  # the limit is 3 in these tests
        r = await client.post("/api/v1/auth/2fa/disable", headers=headers, json={"code": code})
        assert r.status_code in (403, 429)
    r = await client.post("/api/v1/auth/2fa/disable", headers=headers,
                          json={"code": totp_code_at(secret, step + 1)})
    assert r.status_code == 429, f"10 wrong codes, then the right one still disables 2FA: {r.status_code}"


async def _registration_begun(client: httpx.AsyncClient, database: Database,
                              username: str) -> tuple[dict[str, str], SoftAuthenticator,
                                                      dict[str, Any]]:
    """A new password user signed in, a soft authenticator, and a passkey registration
    begun for them: the headers, the authenticator and the begin answer."""
    await password_user(database, username)
    headers = await bearer(client, username)
    begin = (await client.post("/api/v1/auth/passkeys/register/begin", headers=headers,
                               json={})).json()
    return headers, SoftAuthenticator(), begin


async def test_passkey_login_finish_non_object_response_is_4xx(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A passkey assertion whose "response" is not an object gets 401/422, never a 500."""
    headers, auth, begin = await _registration_begun(client, database, "pkh")
    cred = auth.create(begin["options"], origin=ORIGIN)
    fin = await client.post("/api/v1/auth/passkeys/register/finish", headers=headers,
                            json={"challenge_id": begin["challenge_id"], "credential": cred})
    assert fin.status_code == 201, fin.text
    start = (await client.post("/api/v1/auth/passkeys/login/begin")).json()
    good: dict[str, Any] = auth.get(start["options"], origin=ORIGIN)
    answers: list[int] = []
    for response in ("x", [1]):
        s = (await client.post("/api/v1/auth/passkeys/login/begin")).json()
        r = await client.post("/api/v1/auth/passkeys/login/finish", json={
            "challenge_id": s["challenge_id"], "credential": dict(good, response=response)})
        answers.append(r.status_code)
    assert all(c in (400, 401, 422) for c in answers), answers


async def test_passkey_with_an_unusable_public_key_is_refused(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A registration whose COSE key is no P-256 point (attestation `none` signs nothing,
    so only Roost can notice) is a 400 and stores nothing; the key could never sign in."""
    headers, auth, begin = await _registration_begun(client, database, "pkbad")
    cred = auth.create(begin["options"], origin=ORIGIN)
    att = cbor2.loads(b64url_decode(cred["response"]["attestationObject"]))
    cred_id = b64url_decode(cred["rawId"])
    # authData: rp id hash, flags, counter (37 bytes), AAGUID (16), id length, id, key.
    att["authData"] = (att["authData"][:53] + struct.pack(">H", len(cred_id)) + cred_id
                       + cbor2.dumps({1: 2, 3: -7, -1: 1, -2: b"x", -3: b"y"}))
    cred["response"]["attestationObject"] = b64url_encode(cbor2.dumps(att))
    refused = await client.post("/api/v1/auth/passkeys/register/finish", headers=headers,
                                json={"challenge_id": begin["challenge_id"], "credential": cred})
    assert refused.status_code == 400, refused.text
    assert refused.json()["detail"] == "passkey public key is invalid"
    assert (await client.get("/api/v1/auth/passkeys", headers=headers)).json() == []
    start = (await client.post("/api/v1/auth/passkeys/login/begin")).json()
    signin = await client.post("/api/v1/auth/passkeys/login/finish", json={
        "challenge_id": start["challenge_id"],
        "credential": auth.get(start["options"], origin=ORIGIN)})
    assert signin.status_code == 401, signin.text


async def test_registrations_from_one_address_are_throttled(
    client: httpx.AsyncClient, database: Database, test_settings: Settings,
) -> None:
    """Each registration costs an argon2 hash and stores an account (pending approval): one
    address could repeat it without limit.  Past ROOST_LOGIN_MAX_FAILURES_PER_IP in the
    window it is 429 with Retry-After, and nothing more is stored; a taken name is refused
    before its hash, so repeating one costs no argon2 work and is not counted."""
    limit = test_settings.login_max_failures_per_ip

    async def register(n: int) -> httpx.Response:
        return await client.post("/api/v1/auth/register", json={
            "username": f"flood{n}", "email": f"flood{n}@example.test",
            "password": "violet-Harbor-stone-9-lantern"})

    assert (await register(0)).status_code == 201
    assert [(await register(0)).status_code for _ in range(limit)] == [409] * limit
    answers = [await register(n) for n in range(1, limit + 1)]
    assert [a.status_code for a in answers] == [201] * (limit - 1) + [429], answers[-1].text
    refused = answers[-1]
    assert int(refused.headers["Retry-After"]) > 0, refused.headers
    assert refused.json()["retry_after_s"] > 0 and "registrations" in refused.json()["detail"]
    stored = await scalar(database, "SELECT count(*) FROM users WHERE username LIKE 'flood%'")
    assert stored == limit


async def test_passkey_sign_in_begins_from_one_address_are_throttled(
    client: httpx.AsyncClient, database: Database, test_settings: Settings,
) -> None:
    """Each begin stores a challenge row for anyone who asks, signed in or not: past ten
    times ROOST_LOGIN_MAX_FAILURES_PER_IP begins from one address in the window (successful
    sign-ins count too, and an office shares one address), 429 with Retry-After and no
    row stored."""
    limit = test_settings.login_max_failures_per_ip * PASSKEY_BEGINS_PER_FAILURE
    answers = [await client.post("/api/v1/auth/passkeys/login/begin") for _ in range(limit + 1)]
    assert [a.status_code for a in answers] == [200] * limit + [429], answers[-1].text
    assert int(answers[-1].headers["Retry-After"]) > 0, answers[-1].headers
    stored = await scalar(database, "SELECT count(*) FROM auth_challenges "
                          "WHERE purpose = 'passkey_login'")
    assert stored == limit
