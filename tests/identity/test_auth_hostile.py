"""Sign-in flows against a holder of a stolen session or a forged passkey: the second
factor cannot be guessed off (or into new backup codes) without the sign-in's lockout, a
malformed assertion is a refused sign-in, never a 500, and a registration whose public key
could never verify a sign-in is refused."""

from __future__ import annotations

import struct
from typing import Any

import cbor2
import httpx

from roost.db.engine import Database
from roost.security.totp import current_totp_step, totp_code_at
from tests.identity.conftest import ORIGIN, bearer, password_user, wait_for_fresh_totp_step
from tests.support.soft_authenticator import SoftAuthenticator, b64url_decode, b64url_encode


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
