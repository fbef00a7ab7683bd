"""Usage reports (GET /api/v1/billing/usage) and the ledger's ingest: digits of other
scripts, ordinal-date timestamps (with any separator), weeks with no day, the format of a
zero total, invisible model names and model names in two Unicode normal forms."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime

import httpx
import pytest

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


@pytest.mark.parametrize(("calendar", "ordinal"), [
    ("2025-03-01t12:00:00Z", "2025-060t12:00:00Z"),
    ("2025-03-01 12:00:00Z", "2025-060 12:00:00Z"),
    ("2025-03-01t12Z", "2025060t12Z"),
])
async def test_an_ordinal_timestamp_with_a_lowercase_t_or_a_space_is_read_as_a_calendar_one(
    client: httpx.AsyncClient, database: Database, calendar: str, ordinal: str,
) -> None:
    """`2025-060t12:00:00Z` (RFC 3339's lower-case t) and `2025-060 12:00:00Z` (its space)
    are the moment `2025-03-01t12:00:00Z` / `2025-03-01 12:00:00Z` are (they were a 422:
    only an upper-case T was split off an ordinal date)."""
    uid, admin_h = await make_user(database, admin=True)
    await _add(database, uid, datetime(2025, 3, 1, 13, 0, tzinfo=UTC))
    cal = await client.get(URL, params={"since": calendar, "until": "2025-03-31"},
                           headers=admin_h)
    assert cal.status_code == 200, cal.text
    assert cal.json()["totals"]["requests"] == 1
    ordi = await client.get(URL, params={"since": ordinal, "until": "2025-03-31"},
                            headers=admin_h)
    assert ordi.status_code == 200, ordi.text
    assert ordi.json()["since"] == cal.json()["since"]
    assert ordi.json()["totals"]["requests"] == 1


@pytest.mark.parametrize("week", ["2026-W05", "2026W05", "2026-W05T12:00Z", "2026-W05 12:00"])
async def test_a_week_with_no_day_is_a_422_asking_for_its_day(
    client: httpx.AsyncClient, database: Database, week: str,
) -> None:
    """`until=2026-W05` (a week with no day, with or without a time) is a 422 naming the
    field and the form to give, `YYYY-Www-D`, as the month `2026-01` is refused (it was
    read as Monday 26 January: a call on the Wednesday of that week went uncounted)."""
    uid, admin_h = await make_user(database, admin=True)
    await _add(database, uid, datetime(2026, 1, 28, 12, 0, tzinfo=UTC))
    for name in ("since", "until"):
        params = {"since": "2026-01-01", "until": "2026-02-28", name: week,
                  "user_id": str(uid)}
        r = await client.get(URL, params=params, headers=admin_h)
        assert r.status_code == 422, r.text
        assert r.json()["field"] == name
        assert "YYYY-Www-D" in r.json()["detail"]
    whole = await client.get(URL, params={"since": "2026-W05-1", "until": "2026-W05-7",
                                          "user_id": str(uid)}, headers=admin_h)
    assert whole.status_code == 200, whole.text
    assert whole.json()["until"].startswith("2026-02-02"), whole.json()["until"]
    assert whole.json()["totals"]["requests"] == 1


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


async def test_a_model_named_composed_or_decomposed_is_one_report_row(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Usage events for `café-model` typed composed (NFC) and decomposed (NFD, as macOS
    keyboards send it) are one model: group_by=model gives one row of 2 requests, keyed by
    the NFC name (they were two rows whose keys looked the same)."""
    uid, admin_h = await make_user(database, admin=True)
    nfc = unicodedata.normalize("NFC", "café-model")
    nfd = unicodedata.normalize("NFD", "café-model")
    assert nfc != nfd
    now = datetime.now(UTC).replace(microsecond=0)
    events = [{"idempotency_key": f"nfc-{uuid.uuid4().hex}", "user_id": str(uid),
               "request_type": "chat", "model": name, "tokens_input": 1,
               "cost": "0", "currency": "USD", "occurred_at": now.isoformat()}
              for name in (nfc, nfd)]
    ingest = await client.post("/api/v1/billing/usage-events", json={"events": events},
                               headers=admin_h)
    assert ingest.status_code == 200, ingest.text
    assert ingest.json()["accepted"] == 2
    r = await client.get(URL, params={"group_by": "model", "user_id": str(uid)},
                         headers=admin_h)
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert [(row["key"], row["requests"]) for row in rows] == [(nfc, 2)], rows


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
