"""Sign-in lockouts hold against attempts sent at once (docs/identity.md, "Throttling"):
each attempt's check, verification and count happen together (throttle.serialize), so no
more guesses are verified than the limit allows, however many are in flight."""

from __future__ import annotations

import asyncio

import httpx

from roost.db.engine import Database
from roost.security.totp import current_totp_step, totp_code_at
from tests.identity.conftest import (
    PASSWORD,
    bearer,
    login,
    password_user,
    wait_for_fresh_totp_step,
)


async def _enrol(client: httpx.AsyncClient, database: Database, name: str
                 ) -> tuple[dict[str, str], str, list[str], int]:
    await password_user(database, name)
    headers = await bearer(client, name)
    secret = (await client.post("/api/v1/auth/2fa/setup", headers=headers)).json()["secret"]
    wait_for_fresh_totp_step(8)
    step = current_totp_step()
    ok = await client.post("/api/v1/auth/2fa/confirm", headers=headers,
                           json={"code": totp_code_at(secret, step - 1)})
    assert ok.status_code == 200, ok.text
    return headers, secret, ok.json()["backup_codes"], step


async def _challenge(client: httpx.AsyncClient, name: str) -> str:
    r = await login(client, name)
    assert r.status_code == 200, r.text
    return r.json()["mfa_token"]


async def test_wrong_codes_sent_at_once_stop_at_the_second_factor_lockout(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Wrong second-factor codes lock after 3 (these settings): 7 sent at once over two
    challenges (under the per-address limit) were all checked (401), the guess budget
    growing with the attacker's concurrency. Now 3 are checked, the rest 429."""
    await _enrol(client, database, "race1")
    tokens = [await _challenge(client, "race1") for _ in range(2)]
    bad = [f"{n:06d}" for n in range(100001, 100008)]  # 7 guesses, under the ip limit of 8
    answers = await asyncio.gather(*[
        client.post("/api/v1/auth/login/2fa",
                    json={"mfa_token": tokens[i % 2], "code": code})
        for i, code in enumerate(bad)
    ])
    statuses = [a.status_code for a in answers]
    assert sorted(statuses) == [401] * 3 + [429] * 4, statuses


async def test_wrong_passwords_sent_at_once_stop_at_the_name_lockout(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A name locks after 3 wrong passwords (these settings): 7 sent at once were all
    verified (401), past both the per-name (3) and per-account (6) limits."""
    await password_user(database, "pwrace")
    answers = await asyncio.gather(*[
        login(client, "pwrace", f"wrong-pass-{n}") for n in range(7)])
    statuses = [a.status_code for a in answers]
    assert sorted(statuses) == [401] * 3 + [429] * 4, statuses


async def test_wrong_current_passwords_sent_at_once_stop_at_the_lockout(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A stolen session guessing the current password to change it: 7 guesses at once
    are checked 6 at most (the account's limit, twice the name's), the rest 429."""
    await password_user(database, "pwchange")
    headers = await bearer(client, "pwchange")
    answers = await asyncio.gather(*[
        client.post("/api/v1/auth/password", headers=headers, json={
            "current_password": f"wrong-pass-{n}", "new_password": "a new pass phrase 42"})
        for n in range(7)])
    statuses = [a.status_code for a in answers]
    assert sorted(statuses) == [403] * 6 + [429], statuses


async def test_name_locked_by_strangers_blocks_signed_in_password_change(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A stranger typing a username wrongly at the sign-in form until the name locks (the
    per-name limit, 3 in these tests) does not stop its signed-in owner changing the
    password with the right current one (it was a 429)."""
    await password_user(database, "lockme-x")
    me = await bearer(client, "lockme-x")
    for _ in range(3):
        assert (await login(client, "lockme-x", "wrong-password-123456")).status_code == 401
    assert (await login(client, "lockme-x")).status_code == 429  # the name is locked
    changed = await client.post("/api/v1/auth/password", headers=me, json={
        "current_password": PASSWORD, "new_password": "violet-Harbor-lantern-42-moss"})
    assert changed.status_code == 200, changed.text
