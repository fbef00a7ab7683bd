"""Profiles and settings (point 6) and OAuth token storage (point 5)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import select, text

from roost.audit.models import AuditLog
from roost.db.engine import Database
from roost.identity.models import User, UserOAuthToken
from tests.support.identity import make_user


async def test_settings_read_write_and_validation(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    user_id, headers = await make_user(database, username="sal")
    base = (await client.get("/api/v1/users/me/settings", headers=headers)).json()
    assert base["theme"] == "dark" and base["timezone"] == "UTC"
    assert base["notifications_enabled"] and base["model_preferences"] == {}
    assert base["web_search_provider"] == "disabled" and not base["web_search_api_key_set"]

    changed = await client.patch("/api/v1/users/me/settings", headers=headers, json={
        "theme": "light", "timezone": "Europe/Paris", "notifications_enabled": False,
        "model_preferences": {"selected": "llama3.2:3b", "coding": "qwen2.5-coder:7b"},
        "agent_settings": {"max_steps": 12}, "personal_goals": ["ship v1"],
        "web_search_provider": "tavily", "web_search_api_key": "tvly-secret-123456"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["timezone"] == "Europe/Paris" and body["web_search_api_key_set"]
    assert body["model_preferences"]["coding"] == "qwen2.5-coder:7b"
    assert "tvly-secret" not in changed.text
    async with database.transaction() as session:
        stored = await session.scalar(select(User.web_search_api_key_encrypted)
                                      .where(User.id == user_id))
    assert stored is not None and "tvly-secret" not in stored

    # Only the fields sent change.
    again = await client.patch("/api/v1/users/me/settings", headers=headers, json={"theme": "dark"})
    assert again.json()["timezone"] == "Europe/Paris" and again.json()["theme"] == "dark"

    for bad in ({"timezone": "Mars/Olympus"}, {"model_preferences": {"nonsense_node": "m"}},
                {"agent_settings": {"blob": "x" * 20_000}}, {"web_search_provider": "bing"},
                {"is_superuser": True}, {"theme": "Not Valid!"}):
        answer = await client.patch("/api/v1/users/me/settings", headers=headers, json=bad)
        assert answer.status_code == 422, bad
        assert answer.json()["type"].endswith("validation-error")
    untouched = (await client.get("/api/v1/users/me/settings", headers=headers)).json()
    assert untouched["timezone"] == "Europe/Paris" and untouched["agent_settings"] == {"max_steps": 12}

    # Administrators read and change anyone's.
    by_admin = await client.patch(f"/api/v1/users/{user_id}/settings", headers=admin_headers,
                                  json={"web_search_api_key": ""})
    assert by_admin.status_code == 200 and not by_admin.json()["web_search_api_key_set"]


async def test_profile_read_write(client: httpx.AsyncClient, database: Database) -> None:
    user_id, headers = await make_user(database, username="pia")
    empty = (await client.get("/api/v1/users/me/profile", headers=headers)).json()
    assert empty["user_id"] == str(user_id) and empty["first_name"] is None
    updated = await client.patch("/api/v1/users/me/profile", headers=headers, json={
        "first_name": "Pia", "last_name": "Lund", "date_of_birth": "1990-04-01",
        "phone_number": "+46 70 123 45 67", "personal_address": {"city": "Malmö"},
        "work_email": "Pia@Work.example", "preferred_contact_method": "email",
        "bio": "Builds agents.", "website": "https://pia.example", "github": "pialund",
        "language": "sv-SE", "timezone": "Europe/Stockholm"})
    assert updated.status_code == 200, updated.text
    profile = updated.json()
    assert profile["work_email"] == "pia@work.example" and profile["timezone"] == "Europe/Stockholm"
    settings = (await client.get("/api/v1/users/me/settings", headers=headers)).json()
    assert settings["timezone"] == "Europe/Stockholm"  # one time zone per account
    cleared = await client.patch("/api/v1/users/me/profile", headers=headers, json={"bio": None})
    assert cleared.json()["bio"] is None and cleared.json()["first_name"] == "Pia"
    for bad in ({"date_of_birth": "not a date"}, {"website": "javascript:alert(1)"},
                {"bio": "x" * 6000}, {"emergency_contact": {"n": "x" * 5000}},
                {"phone_number": "call me maybe"}, {"work_email": "nope"}):
        answer = await client.patch("/api/v1/users/me/profile", headers=headers, json=bad)
        assert answer.status_code == 422, bad
    account = await client.patch("/api/v1/users/me", headers=headers,
                                 json={"full_name": "Pia Lund", "username": "pia.lund"})
    assert account.json()["username"] == "pia.lund"
    # What the column cannot hold is the 422 registration gives, and nothing changes.
    nul = await client.patch("/api/v1/users/me", headers=headers, json={"full_name": "a\x00b"})
    assert nul.status_code == 422 and nul.json()["field"] == "full_name", nul.text
    assert (await client.get("/api/v1/users/me", headers=headers)).json()["full_name"] == "Pia Lund"
    _, other = await make_user(database, username="taken")
    clash = await client.patch("/api/v1/users/me", headers=headers, json={"username": "taken"})
    assert clash.status_code == 409 and clash.json()["field"] == "username"
    assert (await client.get("/api/v1/users/me", headers=other)).json()["username"] == "taken"


async def test_oauth_tokens_encrypted_and_never_returned(
    client: httpx.AsyncClient, database: Database
) -> None:
    _, headers = await make_user(database, username="olga")
    access, refresh = "ya29.A0ARrdaM-access-token-value", "1//0g-refresh-token-value"
    stored = await client.put("/api/v1/users/me/oauth/google_calendar", headers=headers, json={
        "access_token": access, "refresh_token": refresh, "scope": "calendar.readonly",
        "token_expiry": "2030-01-01T00:00:00Z", "service_email": "olga@gmail.example"})
    assert stored.status_code == 200, stored.text
    view = stored.json()
    assert view["access_token_hint"] == "..." + access[-4:] and view["has_refresh_token"]
    assert access not in stored.text and refresh not in stored.text and not view["expired"]
    async with database.transaction() as session:
        row = await session.scalar(select(UserOAuthToken))
        raw = (await session.execute(text("SELECT * FROM user_oauth_tokens"))).one()
    assert row is not None and access not in row.access_token_encrypted
    assert access not in str(raw) and refresh not in str(raw)

    refreshed = await client.patch("/api/v1/users/me/oauth/google_calendar", headers=headers,
                                   json={"access_token": "ya29.new-access-token-XYZW",
                                         "token_expiry": "2020-01-01T00:00:00Z"})
    assert refreshed.json()["access_token_hint"] == "...XYZW" and refreshed.json()["expired"]
    listed = (await client.get("/api/v1/users/me/oauth", headers=headers)).json()
    assert [t["service"] for t in listed] == ["google_calendar"]
    assert "ya29" not in str(listed)
    bad_service = await client.put("/api/v1/users/me/oauth/Bad%20Service", headers=headers,
                                   json={"access_token": "x"})
    assert bad_service.status_code == 422
    assert (await client.delete("/api/v1/users/me/oauth/google_calendar",
                                headers=headers)).status_code == 204
    assert (await client.get("/api/v1/users/me/oauth/google_calendar",
                             headers=headers)).status_code == 404


async def test_oauth_ciphertext_is_bound_to_its_row(database: Database) -> None:
    """A ciphertext copied into another user's row does not decrypt (AES-GCM + AAD)."""
    import base64
    import secrets

    import pytest

    from roost.identity import oauth
    from roost.identity.config import IdentityConfig
    from roost.principal import Principal
    from roost.security.crypto import DecryptionError, SecretBox

    cfg = IdentityConfig(jwt_secret="x" * 48,
                         box=SecretBox.from_keys(base64.b64decode(base64.b64encode(secrets.token_bytes(32)))))
    a, _ = await make_user(database, username="ada")
    b, _ = await make_user(database, username="ben")
    pa = Principal(user_id=a, is_admin=False, kind="session")
    pb = Principal(user_id=b, is_admin=False, kind="session")
    async with database.transaction() as session:
        row_a = await oauth.store(session, cfg, pa, "github", access_token="gho_secret_of_ada")
        row_b = await oauth.store(session, cfg, pb, "github", access_token="gho_secret_of_ben")
        row_b.access_token_encrypted = row_a.access_token_encrypted
        await session.flush()
        assert (await oauth.get_credentials(session, cfg, pa, "github")).access_token == \
            "gho_secret_of_ada"
        with pytest.raises(DecryptionError):
            await oauth.get_credentials(session, cfg, pb, "github")
    assert uuid.UUID(str(a))


async def test_a_date_of_birth_sent_as_a_number_is_refused_and_not_stored(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A JSON number is no date: {"date_of_birth": 0} is refused, not stored as 1970-01-01."""
    _, headers = await make_user(database)
    answer = await client.patch("/api/v1/users/me/profile", headers=headers,
                                json={"date_of_birth": 0})
    assert answer.status_code == 422, answer.text
    profile = (await client.get("/api/v1/users/me/profile", headers=headers)).json()
    assert profile["date_of_birth"] is None
    stamp = await client.patch("/api/v1/users/me/profile", headers=headers,
                               json={"date_of_birth": "1990-05-17T00:00:00Z"})
    assert stamp.status_code == 422, stamp.text
    day = await client.patch("/api/v1/users/me/profile", headers=headers,
                             json={"date_of_birth": "1990-05-17"})
    assert day.status_code == 200, day.text
    profile = (await client.get("/api/v1/users/me/profile", headers=headers)).json()
    assert profile["date_of_birth"] == "1990-05-17"


BASE = "/api/v1/users"


async def test_oauth_nul_in_stored_text_fields_is_a_422(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A NUL in scope, service_user_id or service_email (stored as text) is a 422 naming
    the field, as for other inputs (it was the database's anonymous 400)."""
    _, alice = await make_user(database)
    for field in ("scope", "service_user_id", "service_email"):
        answer = await client.put(f"{BASE}/me/oauth/svc", headers=alice,
                                  json={"access_token": "abcdefghijklmnop", field: "a\x00b"})
        assert answer.status_code == 422 and field in answer.text, (field, answer.text)
    stored = await client.put(f"{BASE}/me/oauth/svc", headers=alice, json={
        "access_token": "abcdefghijklmnop", "scope": None, "service_user_id": None,
        "service_email": None})  # null stays "none given" (it was a 500 for a moment)
    assert stored.status_code == 200, stored.text
    cleared = await client.patch(f"{BASE}/me/oauth/svc", headers=alice, json={"scope": None})
    assert cleared.status_code == 200, cleared.text
    patched = await client.patch(f"{BASE}/me/oauth/svc", headers=alice, json={"scope": "a\x00b"})
    assert patched.status_code == 422 and "scope" in patched.text, patched.text


async def test_oauth_admin_naming_missing_user_is_no_such_user(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    """An administrator naming an account that does not exist: 404 "no such user" (as on
    every /users/{id}/... route; GET, PATCH and DELETE said "no tokens stored")."""
    ghost = uuid.uuid4()
    for method in ("GET", "PATCH", "DELETE", "PUT"):
        body = {"access_token": "abcdefghijklmnop"} if method in ("PATCH", "PUT") else None
        answer = await client.request(method, f"{BASE}/{ghost}/oauth/svc",
                                      headers=admin_headers, json=body)
        assert answer.status_code == 404, (method, answer.text)
        assert "no such user" in answer.json()["detail"], (method, answer.json())


async def test_oauth_concurrent_disconnects_count_once(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Two disconnects of one service at once: one 204 and one 404, as one after the
    other, and one `oauth.disconnected` record (both were 204s, audited twice)."""
    _, alice = await make_user(database)
    twice = 0
    for round_ in range(6):
        put = await client.put(f"{BASE}/me/oauth/svc{round_}", headers=alice,
                               json={"access_token": "abcdefghijklmnop"})
        assert put.status_code == 200
        answers = await asyncio.gather(*(client.delete(f"{BASE}/me/oauth/svc{round_}",
                                                       headers=alice) for _ in range(2)))
        if [a.status_code for a in answers].count(204) == 2:
            twice += 1
    async with database.transaction() as session:
        audited: int = (await session.execute(text(
            "SELECT count(*) FROM audit_logs WHERE action = 'oauth.disconnected'"))).scalar_one()
    assert twice == 0 and audited == 6, (twice, audited)


async def _actions(database: Database, action: str) -> list[str]:
    async with database.transaction() as session:
        return list((await session.scalars(
            select(AuditLog.action).where(AuditLog.action == action))).all())


async def test_two_first_profile_edits_at_once_both_apply(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Two tabs each save one field of a profile never saved before: both edits are kept
    (200 each); one was a 409 about "the same user_id" (both inserted the profile)."""
    _, headers = await make_user(database, username="twotabs")
    first, last = await asyncio.wait_for(asyncio.gather(
        client.patch("/api/v1/users/me/profile", headers=headers, json={"first_name": "Ann"}),
        client.patch("/api/v1/users/me/profile", headers=headers, json={"last_name": "Lee"}),
    ), 60)
    assert (first.status_code, last.status_code) == (200, 200), (first.text, last.text)
    final = (await client.get("/api/v1/users/me/profile", headers=headers)).json()
    assert (final["first_name"], final["last_name"]) == ("Ann", "Lee"), final


async def test_two_first_oauth_stores_at_once_both_succeed(
    client: httpx.AsyncClient, database: Database
) -> None:
    """PUT …/oauth/{service} is "store or replace": two at once for a service not yet
    connected are both 200, one `oauth.connected` and one `oauth.replaced`; one was a
    409 "another record already has the same user_id, service"."""
    _, headers = await make_user(database, username="twoputs")
    answers = await asyncio.wait_for(asyncio.gather(*(
        client.put("/api/v1/users/me/oauth/github", headers=headers,
                   json={"access_token": f"gho_token_number_{i}_wxyz"}) for i in range(2)
    )), 60)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert await _actions(database, "oauth.connected") == ["oauth.connected"]
    assert await _actions(database, "oauth.replaced") == ["oauth.replaced"]


async def test_a_bad_work_email_is_a_422_naming_work_email(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A malformed `work_email` in a profile edit is a 422 whose `field` is `work_email`,
    the field sent; it named `email`, the account's address, not in the request."""
    _, headers = await make_user(database, username="wemail")
    answer = await client.patch("/api/v1/users/me/profile", headers=headers,
                                json={"work_email": "nope"})
    assert answer.status_code == 422
    assert answer.json().get("field") == "work_email", answer.text


async def test_an_empty_work_email_is_refused_and_null_clears_it(
    client: httpx.AsyncClient, database: Database
) -> None:
    """`work_email: ""` is no address: a 422 naming `work_email`, as for "nope" (and as
    "" is for `website` or a phone), while null clears it; "" was stored as the address."""
    _, headers = await make_user(database, username="wempty")
    answer = await client.patch("/api/v1/users/me/profile", headers=headers,
                                json={"work_email": ""})
    assert answer.status_code == 422 and answer.json().get("field") == "work_email", answer.text
    stored = await client.patch("/api/v1/users/me/profile", headers=headers,
                                json={"work_email": "ann@work.example"})
    assert stored.json()["work_email"] == "ann@work.example", stored.text
    cleared = await client.patch("/api/v1/users/me/profile", headers=headers,
                                 json={"work_email": None})
    assert cleared.status_code == 200 and cleared.json()["work_email"] is None, cleared.text


async def test_clearing_a_web_search_key_never_set_records_no_change(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Clearing the web search key ("") of an account that has none changes nothing, so
    no `user.settings_updated` is recorded; one claimed the key had changed."""
    _, headers = await make_user(database, username="nokey")
    answer = await client.patch("/api/v1/users/me/settings", headers=headers,
                                json={"web_search_api_key": ""})
    assert answer.status_code == 200 and not answer.json()["web_search_api_key_set"]
    assert await _actions(database, "user.settings_updated") == []


async def test_an_empty_oauth_refresh_changes_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A PATCH …/oauth/{service} with no field is a 200 that changes nothing: no
    `oauth.refreshed` record and the same `updated_at`; both were written (with an empty
    field list)."""
    _, headers = await make_user(database, username="norefresh")
    stored = await client.put("/api/v1/users/me/oauth/github", headers=headers,
                              json={"access_token": "gho_token_value_abcd"})
    assert stored.status_code == 200, stored.text
    answer = await client.patch("/api/v1/users/me/oauth/github", headers=headers, json={})
    assert answer.status_code == 200, answer.text
    assert answer.json()["updated_at"] == stored.json()["updated_at"], answer.text
    assert await _actions(database, "oauth.refreshed") == []
