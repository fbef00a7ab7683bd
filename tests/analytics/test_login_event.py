"""Sign-ins write an ``auth.login`` event to the outbox: the method and the outcome,
the user when known, never what was typed or the tokens issued."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select

from roost.analytics.models import AnalyticsEvent
from roost.db.engine import Database
from roost.security.totp import current_totp_step, totp_code_at
from tests.identity.conftest import PASSWORD, bearer, login, password_user, wait_for_fresh_totp_step


async def test_login_outcomes_are_analytics_events_without_secrets(
    client: httpx.AsyncClient, database: Database,
) -> None:
    user_id = await password_user(database, "ana-lytics")
    ok = await login(client, "ana-lytics")
    assert ok.status_code == 200, ok.text
    wrong = await login(client, "ana-lytics", "not-the-password-1")
    assert wrong.status_code == 401
    nobody = await login(client, "no-such-user", "whatever-password-2")
    assert nobody.status_code == 401

    async with database.transaction() as session:
        events = list((await session.scalars(
            select(AnalyticsEvent).where(AnalyticsEvent.event_type == "auth.login")
            .order_by(AnalyticsEvent.timestamp))).all())
    assert [(e.event_data, e.user_id) for e in events] == [
        ({"method": "password", "success": True}, user_id),
        ({"method": "password", "success": False}, user_id),
        ({"method": "password", "success": False}, None),
    ]
    assert events[0].session_id is not None and events[1].session_id is None
    assert all(not e.exported for e in events)
    stored = json.dumps([e.event_data for e in events])
    for secret in (PASSWORD, "not-the-password-1", "whatever-password-2",
                   ok.json()["access_token"], ok.json()["refresh_token"], "no-such-user"):
        assert secret not in stored


async def test_sign_in_with_a_second_factor_is_an_event_when_complete(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """The password step of a two-factor sign-in writes nothing (not complete yet); a wrong
    code at the second step is a failure, the correct one the success, with the session
    and which second factor was used (before: two-factor sign-ins wrote no event)."""
    user_id = await password_user(database, "mfa-ana")
    headers = await bearer(client, "mfa-ana")  # before enrolment: one event, success
    secret = (await client.post("/api/v1/auth/2fa/setup", headers=headers)).json()["secret"]
    wait_for_fresh_totp_step()
    step = current_totp_step()
    ok = await client.post("/api/v1/auth/2fa/confirm", headers=headers,
                           json={"code": totp_code_at(secret, step)})
    assert ok.status_code == 200, ok.text
    first = (await login(client, "mfa-ana")).json()
    assert first["mfa_required"]
    valid = {totp_code_at(secret, s) for s in range(step - 2, step + 3)}
    wrong_code = next(c for c in ("123456", "654321", "111111") if c not in valid)
    wrong = await client.post("/api/v1/auth/login/2fa", json={
        "mfa_token": first["mfa_token"], "code": wrong_code})
    assert wrong.status_code == 401, wrong.text
    done = await client.post("/api/v1/auth/login/2fa", json={
        "mfa_token": first["mfa_token"], "code": totp_code_at(secret, step + 1)})
    assert done.status_code == 200, done.text

    async with database.transaction() as session:
        events = list((await session.scalars(
            select(AnalyticsEvent).where(AnalyticsEvent.event_type == "auth.login")
            .order_by(AnalyticsEvent.timestamp))).all())
    assert [(e.event_data, e.user_id) for e in events] == [
        ({"method": "password", "success": True}, user_id),
        ({"method": "password", "second_factor": None, "success": False}, user_id),
        ({"method": "password", "second_factor": "totp", "success": True}, user_id),
    ]
    assert events[1].session_id is None
    assert events[-1].session_id is not None and events[-1].session_id != events[0].session_id
    stored = json.dumps([e.event_data for e in events])
    for secret_text in (PASSWORD, secret, wrong_code, first["mfa_token"]):
        assert secret_text not in stored
