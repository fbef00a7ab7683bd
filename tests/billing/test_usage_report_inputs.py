"""Usage reports (GET /api/v1/billing/usage) and the ledger's ingest: digits of other
scripts, ordinal-date timestamps, the format of a zero total, invisible model names."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx

from roost.billing.models import UsageRecord
from roost.db.engine import Database
from tests.support.identity import make_user

URL = "/api/v1/billing/usage"


def _fullwidth(text: str) -> str:
    """``text`` with its ASCII digits as fullwidth digits (U+FF10..U+FF19)."""
    return "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in text)


async def _add(database: Database, user_id: uuid.UUID, at: datetime) -> None:
    async with database.transaction() as session:
        session.add(UsageRecord(user_id=user_id, request_type="chat", model="m",
                                tokens_input=1, tokens_output=1, credits_used=1,
                                created_at=at))


async def test_fullwidth_ordinal_date_refused_like_fullwidth_calendar_date(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Digits of other scripts are refused in every ISO form: the ordinal 2025-060 in
    fullwidth digits is a 422 as the calendar date is (it was read as 2025-03-01)."""
    _, admin_h = await make_user(database, admin=True)
    calendar = await client.get(URL, params={"since": _fullwidth("2025-03-01"),
                                             "until": "2025-03-31"}, headers=admin_h)
    assert calendar.status_code == 422, calendar.text
    ordinal = await client.get(URL, params={"since": _fullwidth("2025-060"),
                                            "until": "2025-03-31"}, headers=admin_h)
    assert ordinal.status_code == 422, ordinal.text


async def test_ordinal_timestamp_accepted_like_week_timestamp(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A timestamp on an ordinal date (`2025-060T12:00:00Z`) is read as the same moment on
    a week date is (it was a 422)."""
    uid, admin_h = await make_user(database, admin=True)
    await _add(database, uid, datetime(2025, 3, 1, 13, 0, tzinfo=UTC))
    week = await client.get(URL, params={"since": "2025-W09-6T12:00:00Z",
                                         "until": "2025-03-31"}, headers=admin_h)
    assert week.status_code == 200, week.text
    assert week.json()["totals"]["requests"] == 1
    ordinal = await client.get(URL, params={"since": "2025-060T12:00:00Z",
                                            "until": "2025-03-31"}, headers=admin_h)
    assert ordinal.status_code == 200, ordinal.text
    assert ordinal.json()["since"] == week.json()["since"]


async def test_empty_totals_cost_format(client: httpx.AsyncClient, database: Database) -> None:
    """Every amount is a 6-decimal string: a report with no rows totals `"0.000000"` (it
    gave `"0"`)."""
    _, admin_h = await make_user(database, admin=True)
    r = await client.get(URL, params={"since": "2025-03-01", "until": "2025-03-31"},
                         headers=admin_h)
    assert r.status_code == 200, r.text
    assert r.json()["totals"]["cost"] == "0.000000", r.text


async def test_blank_model_name_refused_at_ingest(client: httpx.AsyncClient,
                                                  database: Database) -> None:
    """A model name that shows nothing (zero-width spaces only) is a 422, as API key and
    passkey names are (it was accepted: a report row whose key looked empty)."""
    uid, admin_h = await make_user(database, admin=True)
    r = await client.post("/api/v1/billing/usage-events", headers=admin_h, json={"events": [
        {"idempotency_key": "probe-1", "user_id": str(uid), "request_type": "chat",
         "model": "\u200b\u200b"}]})
    assert r.status_code == 422, r.text


async def test_usage_report_reads_a_lowercase_z_offset_as_streaming_does(
        client: httpx.AsyncClient, database: Database) -> None:
    """A timestamp ending in a lower-case "z" (RFC 3339 allows it) is UTC for the usage
    report, as for /api/v1/analytics/streaming and as a lower-case "t" is (it was a 422)."""
    _, admin = await make_user(database, admin=True)
    since = "2026-01-01T00:00:00z"
    streaming = await client.get("/api/v1/analytics/streaming", headers=admin, params={"since": since})
    assert streaming.status_code == 200, streaming.text
    lower_t = await client.get(URL, headers=admin, params={
        "since": "2026-01-01t00:00:00Z", "until": "2026-01-02"})
    assert lower_t.status_code == 200, lower_t.text
    report = await client.get(URL, headers=admin, params={"since": since,
                                                            "until": "2026-01-02"})
    assert report.status_code == 200, report.text
