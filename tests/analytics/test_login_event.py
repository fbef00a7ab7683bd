"""Sign-ins write an ``auth.login`` event to the outbox: the method and the outcome,
the user when known, never what was typed or the tokens issued."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select

from roost.analytics.models import AnalyticsEvent
from roost.db.engine import Database
from tests.identity.conftest import PASSWORD, login, password_user


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
