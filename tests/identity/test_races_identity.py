"""Overlapping operations on identity: one refresh token used at once (at most one new
session), a refresh and a logout at once, registrations of one name at once (one 201,
the others 409), the first registrations racing for root (one root), one API key
revoked at once (one revocation recorded), an API key revoked while it is used; one
account, group, persona, agent or LLM provider deleted four times at once (one 204, one
audit record, the others 404); a sign-in during a password change or a suspension (no
session of it survives).  None answers a 5xx."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import Coroutine
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.identity.apikeys import MAX_KEYS_PER_USER
from roost.identity.config import IdentityConfig
from roost.identity.models import User
from roost.identity.passkeys import MAX_PASSKEYS_PER_USER
from roost.identity.sessions import ClientInfo, start_session
from roost.security.crypto import SecretBox
from tests.chat.conftest import add_provider
from tests.identity.conftest import ORIGIN, PASSWORD, bearer, login, password_user
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.races import answer_behind, no_5xx, race_settings
from tests.support.soft_authenticator import SoftAuthenticator
from tests.support.sql import fetch, scalar

Headers = dict[str, str]
NEW_PASSWORD = "violet-Harbor-stone-9-lantern"


@pytest.fixture
def test_settings(test_settings: Settings) -> Settings:
    # Many logins from one address; anyone may register.
    return race_settings(test_settings, login_max_failures_per_ip=50, open_registration=True)


def registration(base: str, same: str, n: int) -> dict[str, str]:
    """The ``n``th registration of ``base``, sharing with the others its username, its
    e-mail address or ``both``, as ``same`` says."""
    username = base if same in ("username", "both") else f"{base}x{n}"
    email = f"{base}@example.test" if same in ("email", "both") else f"{base}{n}@example.test"
    return {"username": username, "email": email, "password": PASSWORD}


async def api_key(client: httpx.AsyncClient, database: Database,
                  name: str) -> tuple[Headers, str, Headers]:
    """A new user's headers, and the id of a new API key of theirs and headers using it."""
    _, headers = await make_user(database)
    made = await client.post("/api/v1/api-keys", json={"name": name}, headers=headers)
    assert made.status_code == 201, made.text
    return headers, made.json()["id"], {"Authorization": f"Bearer {made.json()['key']}"}


async def test_one_refresh_token_used_three_times_at_once_yields_at_most_one_session(
    client: httpx.AsyncClient, database: Database,
) -> None:
    name = f"pw-{uuid.uuid4().hex[:10]}"
    await password_user(database, name)
    for _ in range(3):
        signed = await login(client, name)
        assert signed.status_code == 200, signed.text
        token = signed.json()["refresh_token"]
        answers = await asyncio.gather(*(
            client.post("/api/v1/auth/refresh", json={"refresh_token": token})
            for _ in range(3)))
        no_5xx(*answers)
        codes = sorted(r.status_code for r in answers)
        assert codes.count(200) <= 1 and all(c in (200, 401) for c in codes), (
            codes, [r.text for r in answers])
        # Whatever won, at most one refresh token of this session works afterwards.
        working = 0
        for r in answers:
            if r.status_code == 200:
                again = await client.post("/api/v1/auth/refresh",
                                          json={"refresh_token": r.json()["refresh_token"]})
                no_5xx(again)
                working += again.status_code == 200
        assert working <= 1


async def test_a_refresh_and_a_logout_at_once_leave_no_working_token(
    client: httpx.AsyncClient, database: Database,
) -> None:
    name = f"pw-{uuid.uuid4().hex[:10]}"
    await password_user(database, name)
    signed = (await login(client, name)).json()
    bearer = {"Authorization": f"Bearer {signed['access_token']}"}
    refreshed, out = await asyncio.gather(
        client.post("/api/v1/auth/refresh", json={"refresh_token": signed["refresh_token"]}),
        client.post("/api/v1/auth/logout", headers=bearer))
    no_5xx(refreshed, out)
    assert out.status_code == 204
    if refreshed.status_code == 200:  # the refresh came first: its new token is ended too
        again = await client.post("/api/v1/auth/refresh",
                                  json={"refresh_token": refreshed.json()["refresh_token"]})
        assert again.status_code == 401, again.text


@pytest.mark.parametrize("same", ["username", "email", "both"])
async def test_two_registrations_of_one_name_at_once_one_is_a_409(
    client: httpx.AsyncClient, database: Database, same: str,
) -> None:
    await make_user(database)  # not the first account: nobody races for root here
    for i in range(3):
        base = f"racer{i}{uuid.uuid4().hex[:6]}"
        a, b = await asyncio.gather(
            client.post("/api/v1/auth/register", json=registration(base, same, 1)),
            client.post("/api/v1/auth/register", json=registration(base, same, 2)))
        no_5xx(a, b)
        assert sorted([a.status_code, b.status_code]) == [201, 409], (a.text, b.text)


async def test_the_first_registrations_at_once_make_one_root(
    client: httpx.AsyncClient, database: Database,
) -> None:
    assert await scalar(database, "SELECT count(*) FROM users") == 0
    answers = await asyncio.gather(*(
        client.post("/api/v1/auth/register", json={
            "username": f"first{n}", "email": f"first{n}@example.test", "password": PASSWORD})
        for n in range(4)))
    no_5xx(*answers)
    roots = await fetch(database, "SELECT username, role, status FROM users WHERE is_root")
    assert len(roots) == 1, (roots, [a.status_code for a in answers])


async def test_one_api_key_revoked_three_times_at_once_is_recorded_revoked_once(
    client: httpx.AsyncClient, database: Database,
) -> None:
    headers, key_id, _ = await api_key(client, database, "thrice")
    answers = await asyncio.gather(*(
        client.delete(f"/api/v1/api-keys/{key_id}", headers=headers) for _ in range(3)))
    no_5xx(*answers)
    assert all(r.status_code in (204, 404) for r in answers), [r.text for r in answers]
    records = await scalar(database, "SELECT count(*) FROM audit_logs "
                                     "WHERE action = 'api_key.revoked' AND resource_id = :k",
                           k=key_id)
    assert records == 1, records


async def test_an_api_key_revoked_while_it_is_used_works_no_more_after(
    client: httpx.AsyncClient, database: Database,
) -> None:
    headers, key_id, key = await api_key(client, database, "busy")
    answers = await asyncio.gather(
        *(client.post("/api/v1/chat/sessions", json={"title": "t"}, headers=key)
          for _ in range(4)),
        client.delete(f"/api/v1/api-keys/{key_id}", headers=headers),
        *(client.post("/api/v1/chat/sessions", json={"title": "t"}, headers=key)
          for _ in range(4)))
    no_5xx(*answers)
    assert answers[4].status_code == 204
    assert all(r.status_code in (201, 401) for i, r in enumerate(answers) if i != 4)
    after = await client.post("/api/v1/chat/sessions", json={"title": "t"}, headers=key)
    assert after.status_code == 401


async def test_parallel_key_creations_stop_at_the_cap(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Concurrent key creations cannot push an account beyond its 100 active API keys:
    the count and the insert run under a lock on the owner."""
    uid, headers = await make_user(database, username="racer")  # holds one key already
    for i in range(MAX_KEYS_PER_USER - 10):
        made = await client.post("/api/v1/api-keys", headers=headers, json={"name": f"k{i}"})
        assert made.status_code == 201
    answers = await asyncio.gather(*(client.post("/api/v1/api-keys", headers=headers,
                                                 json={"name": f"r{i}"}) for i in range(20)))
    no_5xx(*answers)
    assert sorted(a.status_code for a in answers) == [201] * 9 + [400] * 11
    active = await scalar(database, "SELECT count(*) FROM api_keys WHERE user_id = :u "
                          "AND revoked_at IS NULL", u=uid)
    assert active == MAX_KEYS_PER_USER


async def test_passkey_ceremonies_begun_below_the_cap_cannot_all_finish(
    client: httpx.AsyncClient, database: Database
) -> None:
    """The cap of 50 passkeys is checked again when a registration finishes (under a
    lock), not only when it begins."""
    uid = await password_user(database, "pkmax")
    headers = await bearer(client, "pkmax")
    async with database.transaction() as session:
        for i in range(MAX_PASSKEYS_PER_USER - 1):
            cred_id = base64.urlsafe_b64encode(f"fake-{i:04d}".encode()).rstrip(b"=").decode()
            await session.execute(text(
                "INSERT INTO passkey_credentials (id, user_id, credential_id, public_key, "
                "sign_count, credential_name, backed_up) VALUES (gen_random_uuid(), :u, :c, "
                "'\\x00'::bytea, 0, 'x', false)"), {"u": uid, "c": cred_id})
    begun = [await client.post("/api/v1/auth/passkeys/register/begin", headers=headers, json={})
             for _ in range(3)]
    assert all(b.status_code == 200 for b in begun), [b.text for b in begun]
    finished = []
    for b in begun:
        cred = SoftAuthenticator().create(b.json()["options"], origin=ORIGIN)
        finished.append((await client.post(
            "/api/v1/auth/passkeys/register/finish", headers=headers,
            json={"challenge_id": b.json()["challenge_id"], "credential": cred})).status_code)
    assert finished == [201, 400, 400], finished
    listed = (await client.get("/api/v1/auth/passkeys", headers=headers)).json()
    assert len(listed) == MAX_PASSKEYS_PER_USER


async def test_a_deletion_raced_by_another_is_a_404_and_audited_once(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database, stub: StubServer,
) -> None:
    """Four DELETEs of one account, group, persona, agent or LLM provider at once: exactly
    one deletes it (204, one audit record), the others find it gone (404), as for
    memories, projects, workflows, chat sessions and calendars."""
    _, headers = await make_user(database)
    problems: list[str] = []

    async def race(url: str, who: Headers, resource_id: str, action: str) -> None:
        answers = await asyncio.gather(*(client.delete(url, headers=who) for _ in range(4)))
        for answer in answers:
            no_5xx(answer)
        codes = sorted(a.status_code for a in answers)
        audited = await scalar(database, "SELECT count(*) FROM audit_logs WHERE action = :a "
                                         "AND resource_id = :r", a=action, r=resource_id)
        if codes != [204, 404, 404, 404] or audited != 1:
            problems.append(f"{url.split('/')[3]}: answers {codes}, {audited} {action} records")

    def made(answer: httpx.Response) -> str:
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    victim_id, _ = await make_user(database)
    group = made(await client.post("/api/v1/groups", headers=headers, json={"name": "g"}))
    persona = made(await client.post("/api/v1/personas", headers=headers, json={"name": "P"}))
    agent = made(await client.post("/api/v1/agents", headers=headers, json={
        "name": "A", "slug": "a1", "system_prompt": "x"}))
    provider = str((await add_provider(client, admin_headers, stub))["id"])
    await asyncio.gather(
        race(f"/api/v1/users/{victim_id}", admin_headers, str(victim_id), "user.deleted"),
        race(f"/api/v1/groups/{group}", headers, group, "group.deleted"),
        race(f"/api/v1/personas/{persona}", headers, persona, "persona.delete"),
        race(f"/api/v1/agents/{agent}", headers, agent, "agent.delete"),
        race(f"/api/v1/llm/providers/{provider}", admin_headers, provider,
             "llm.provider.delete"))
    assert not problems, problems


async def test_a_sign_in_with_the_old_password_during_a_password_change_keeps_no_session(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Changing the password ends every other session: one opened with the old password
    while the change ran must not survive it."""
    survivors: list[int] = []
    for attempt in range(10):
        name = f"race-{uuid.uuid4().hex[:8]}"
        await password_user(database, name)
        mine = (await login(client, name)).json()
        headers = {"Authorization": f"Bearer {mine['access_token']}"}

        async def old_password_sign_in(delay: float, who: str = name) -> httpx.Response:
            await asyncio.sleep(delay)
            return await login(client, who)

        changed, old = await asyncio.gather(
            client.post("/api/v1/auth/password", headers=headers,
                        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
            old_password_sign_in(0.01 * attempt))
        assert changed.status_code == 200, changed.text
        if old.status_code == 200:
            stolen = {"Authorization": f"Bearer {old.json()['access_token']}"}
            if (await client.get("/api/v1/auth/me", headers=stolen)).status_code == 200:
                survivors.append(attempt)
    assert survivors == [], f"old-password sessions alive after the change: {survivors}"


async def test_a_sign_in_during_a_suspension_keeps_no_session_once_it_is_lifted(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """Suspension revokes every session: a sign-in that ran alongside it must not hand
    out one that works again once the suspension is lifted."""
    survivors: list[int] = []
    for attempt in range(10):
        name = f"srace-{uuid.uuid4().hex[:8]}"
        user_id = await password_user(database, name)

        async def suspend(delay: float, who: uuid.UUID = user_id) -> httpx.Response:
            await asyncio.sleep(delay)
            return await client.patch(f"/api/v1/users/{who}", headers=admin_headers,
                                      json={"status": "suspended"})

        signed_in, suspended = await asyncio.gather(login(client, name),
                                                    suspend(0.008 * attempt))
        assert suspended.status_code == 200, suspended.text
        lifted = await client.patch(f"/api/v1/users/{user_id}", headers=admin_headers,
                                    json={"status": "active"})
        assert lifted.status_code == 200, lifted.text
        if signed_in.status_code == 200:
            token = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
            if (await client.get("/api/v1/auth/me", headers=token)).status_code == 200:
                survivors.append(attempt)
    assert survivors == [], f"sessions opened during the suspension still work: {survivors}"


async def _ending_during_a_sign_in(
    client: httpx.AsyncClient, database: Database, user_id: uuid.UUID,
    end: Coroutine[Any, Any, httpx.Response],
) -> uuid.UUID:
    """A sign-in past its password check (the account's row locked, its session inserted,
    not yet committed) while ``end`` ends the account's sessions: the sign-in's session,
    once both are done.  ``end`` either waits for the sign-in to commit, and so ends its
    session too, or would run wholly after it."""
    cfg = IdentityConfig(jwt_secret="x" * 48, box=SecretBox.from_keys(secrets.token_bytes(32)))
    async with database.transaction() as session:
        user = await session.get(User, user_id)
        assert user is not None
        issued = await start_session(session, cfg, user, method="password",
                                     client=ClientInfo("127.0.0.1", DEVICE_AGENT))
        ending = asyncio.create_task(end)
        await asyncio.sleep(0.5)  # the ending runs now: it must wait for this commit
    answer = await ending
    no_5xx(answer)
    assert answer.status_code in (200, 204), answer.text
    return issued.session_id


DEVICE_AGENT = "RaceBrowser/1.0"


@pytest.mark.parametrize("who", ["self", "admin"])
async def test_logging_out_everywhere_during_a_sign_in_ends_its_session(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers, who: str,
) -> None:
    """Log out everywhere (or an administrator's revocation of the account's sessions)
    that ran while a sign-in was past its password check: the sign-in's session ended
    too (it was invisible to the ending's statement until it committed, and survived)."""
    user_id, headers = await make_user(database)
    end = (client.post("/api/v1/auth/logout-all", headers=headers) if who == "self" else
           client.post(f"/api/v1/users/{user_id}/sessions/revoke", headers=admin_headers))
    session_id = await _ending_during_a_sign_in(client, database, user_id, end)
    alive = await scalar(database, "SELECT count(*) FROM sessions WHERE id = :id "
                         "AND revoked_at IS NULL", id=session_id)
    assert alive == 0, "the sign-in's session outlived the ending"


async def test_revoking_a_device_during_a_sign_in_on_it_ends_its_session(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Revoking a device while a sign-in from it was past its password check: that
    sign-in's session ended too (it survived, its device id set to null)."""
    name = f"drace-{uuid.uuid4().hex[:8]}"
    user_id = await password_user(database, name)
    first = await client.post("/api/v1/auth/login", json={"login": name, "password": PASSWORD},
                              headers={"User-Agent": DEVICE_AGENT})
    assert first.status_code == 200, first.text
    headers = {"Authorization": f"Bearer {first.json()['access_token']}"}
    listed = await client.get("/api/v1/users/me/devices", headers=headers)
    assert listed.status_code == 200 and len(listed.json()) == 1, listed.text
    device = listed.json()[0]["id"]
    end = client.delete(f"/api/v1/users/me/devices/{device}", headers=headers)
    session_id = await _ending_during_a_sign_in(client, database, user_id, end)
    alive = await scalar(database, "SELECT count(*) FROM sessions WHERE id = :id "
                         "AND revoked_at IS NULL", id=session_id)
    assert alive == 0, "the sign-in's session outlived its device's revocation"


@pytest.mark.parametrize("edit", ["admin status", "own email", "own settings"])
async def test_an_edit_of_an_account_deleted_meanwhile_is_a_404(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers, edit: str,
) -> None:
    """An account edited (by an administrator, or its user: email, settings) while its
    deletion commits between the edit's read and its write: a 404, as when the deletion
    came first.  The ORM's UPDATE matched no row: StaleDataError, a 500.  Deterministic:
    the deletion is held open until the edit waits on it."""
    name = f"gone-{uuid.uuid4().hex[:6]}"
    user_id = await password_user(database, name)
    headers = await bearer(client, name)
    path, body, who = {
        "admin status": (f"/api/v1/users/{user_id}", {"status": "suspended"}, admin_headers),
        "own email": ("/api/v1/users/me", {"email": f"{name}-new@example.test"}, headers),
        "own settings": (f"/api/v1/users/{user_id}/settings", {"theme": "light"}, headers),
    }[edit]
    resp = await answer_behind(database, "DELETE FROM users WHERE id = :u", {"u": user_id},
                               "users", client.patch(path, json=body, headers=who))
    no_5xx(resp)
    assert resp.status_code in (401, 404), resp.text
