"""GET /api/v1/llm/usage: usage_records summed per UTC day, model and user; administrators
see everyone's, a user only their own; bad ranges are 422, no credentials 401."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from roost.billing.models import UsageRecord
from roost.db.base import utcnow
from roost.db.engine import Database
from tests.support.identity import make_user

Headers = dict[str, str]
DAY1 = datetime(2025, 3, 1, 23, 30, tzinfo=UTC)  # late: a non-UTC grouping would move it
DAY2 = datetime(2025, 3, 2, 0, 15, tzinfo=UTC)
MARCH = {"since": "2025-03-01", "until": "2025-03-31"}


async def add_usage(database: Database, user_id: uuid.UUID | None, model: str, at: datetime, *,
                    tokens_in: int, tokens_out: int, credits: int = 0,
                    latency_ms: int | None = None, success: bool = True) -> None:
    async with database.transaction() as session:
        session.add(UsageRecord(user_id=user_id, request_type="chat", model=model,
                                tokens_input=tokens_in, tokens_output=tokens_out,
                                credits_used=credits, latency_ms=latency_ms, success=success,
                                created_at=at))


async def _seed(database: Database) -> tuple[uuid.UUID, Headers, uuid.UUID, Headers, Headers]:
    alice, alice_h = await make_user(database, username="alice")
    bob, bob_h = await make_user(database, username="bob")
    _, admin_h = await make_user(database, admin=True, username="root-ann")
    await add_usage(database, alice, "gpt-a", DAY1, tokens_in=10, tokens_out=5, credits=1, latency_ms=100)
    await add_usage(database, alice, "gpt-a", DAY2, tokens_in=20, tokens_out=10, credits=2, latency_ms=300)
    await add_usage(database, alice, "claude-b", DAY2, tokens_in=1, tokens_out=1, success=False)
    await add_usage(database, bob, "claude-b", DAY1, tokens_in=100, tokens_out=50, credits=7, latency_ms=50)
    # Outside the range: never counted.
    await add_usage(database, bob, "gpt-a", datetime(2025, 4, 1, tzinfo=UTC), tokens_in=999, tokens_out=999)
    return alice, alice_h, bob, bob_h, admin_h


def _by_key(body: dict[str, object]) -> dict[str | None, dict[str, object]]:
    rows = body["rows"]
    assert isinstance(rows, list)
    return {row["key"]: row for row in rows}


async def test_administrators_see_everyones_usage_per_day_model_and_user(
    client: httpx.AsyncClient, database: Database,
) -> None:
    alice, _, bob, _, admin_h = await _seed(database)

    days = await client.get("/api/v1/llm/usage", params={**MARCH, "group_by": "day"}, headers=admin_h)
    assert days.status_code == 200, days.text
    body = days.json()
    assert [r["key"] for r in body["rows"]] == ["2025-03-01", "2025-03-02"]
    first, second = body["rows"]
    sums = ("requests", "tokens_input", "tokens_output", "credits_used")
    assert [first[f] for f in sums] == [2, 110, 55, 8]
    assert first["avg_latency_ms"] == 75.0 and first["failures"] == 0
    assert (second["requests"], second["tokens_input"], second["tokens_output"]) == (2, 21, 11)
    assert second["avg_latency_ms"] == 300.0 and second["failures"] == 1
    assert body["totals"] == {"requests": 4, "tokens_input": 131, "tokens_output": 66,
                              "credits_used": 10, "failures": 1, "cost": "0.000000",
                              "currency": "USD", "costs": {"USD": "0.000000"}}

    models = _by_key((await client.get("/api/v1/llm/usage", params={**MARCH, "group_by": "model"},
                                       headers=admin_h)).json())
    assert set(models) == {"gpt-a", "claude-b"}
    assert (models["gpt-a"]["requests"], models["gpt-a"]["tokens_input"]) == (2, 30)
    assert (models["claude-b"]["requests"], models["claude-b"]["failures"]) == (2, 1)
    assert models["claude-b"]["avg_latency_ms"] == 50.0  # a call without latency is not averaged

    users = _by_key((await client.get("/api/v1/llm/usage", params={**MARCH, "group_by": "user"},
                                      headers=admin_h)).json())
    assert set(users) == {str(alice), str(bob)}
    assert users[str(alice)]["username"] == "alice" and users[str(alice)]["requests"] == 3
    assert users[str(bob)]["username"] == "bob" and users[str(bob)]["tokens_output"] == 50


async def test_a_user_sees_only_their_own_usage(client: httpx.AsyncClient, database: Database) -> None:
    alice, alice_h, _, bob_h, _ = await _seed(database)
    users = (await client.get("/api/v1/llm/usage", params={**MARCH, "group_by": "user"},
                              headers=alice_h)).json()
    assert [(r["key"], r["username"], r["requests"]) for r in users["rows"]] == [(str(alice), "alice", 3)]
    models = _by_key((await client.get("/api/v1/llm/usage", params={**MARCH, "group_by": "model"},
                                       headers=bob_h)).json())
    assert set(models) == {"claude-b"} and models["claude-b"]["tokens_input"] == 100


async def test_the_default_range_is_the_last_30_days(client: httpx.AsyncClient, database: Database) -> None:
    user, headers = await make_user(database)
    await add_usage(database, user, "m", utcnow() - timedelta(days=2), tokens_in=3, tokens_out=4)
    await add_usage(database, user, "m", utcnow() - timedelta(days=40), tokens_in=50, tokens_out=50)
    answer = await client.get("/api/v1/llm/usage", headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["group_by"] == "day" and body["totals"]["tokens_input"] == 3
    span = datetime.fromisoformat(body["until"]) - datetime.fromisoformat(body["since"])
    assert span == timedelta(days=30)
    # A timestamp with an offset is honoured as given.
    exact = await client.get("/api/v1/llm/usage", headers=headers, params={
        "since": (utcnow() - timedelta(days=3)).isoformat(), "until": utcnow().isoformat()})
    assert exact.json()["totals"]["requests"] == 1


async def test_bad_ranges_are_422_and_no_credentials_401(
    client: httpx.AsyncClient, database: Database,
) -> None:
    _, headers = await make_user(database)
    for params in ({"since": "2025-03-05", "until": "2025-03-01"},  # until before since
                   {"since": "2025-03-01T10:00:00Z", "until": "2025-03-01T10:00:00Z"},
                   {"since": "2023-01-01", "until": "2025-01-01"},  # longer than 366 days
                   {"since": "yesterday"},
                   {"until": "9999-12-31"},  # the end of that day is beyond the year 9999
                   {"until": "0001-01-05"},  # the default 30 days before it are too
                   {"group_by": "week"}):
        answer = await client.get("/api/v1/llm/usage", params=params, headers=headers)
        assert answer.status_code == 422, (params, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    assert (await client.get("/api/v1/llm/usage")).status_code == 401


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


@pytest.mark.parametrize("bounds", [
    {"since": "9999-12-31T00:00:00-10:00", "until": "9999-12-31T23:00:00-10:00"},
    {"since": "0001-01-01T00:00:00+14:00", "until": "0001-01-02T00:00:00+14:00"},
], ids=["after-9999-in-utc", "before-year-1-in-utc"])
async def test_usage_bounds_outside_the_calendar_in_utc_are_a_422(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], bounds: dict[str, str],
) -> None:
    """A bound outside years 1-9999 in UTC is a 422 like other bad bounds, not a 400."""
    resp = await client.get("/api/v1/llm/usage", params=bounds, headers=user[1])
    assert resp.status_code == 422, resp.text


@pytest.mark.needs_clickhouse
async def test_llm_usage_honours_source_clickhouse_as_billing_usage_does(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """/api/v1/llm/usage is "the same report": source=clickhouse is honoured, not ignored."""
    for path in ("/api/v1/llm/usage", "/api/v1/billing/usage"):
        answer = await client.get(path, params={"source": "clickhouse"}, headers=user[1])
        assert answer.status_code == 200, answer.text
        assert answer.json()["source"] == "clickhouse", (path, answer.json())
        bad = await client.get(path, params={"source": "mysql"}, headers=user[1])
        assert bad.status_code == 422, bad.text


@pytest.mark.parametrize("path", ["/api/v1/llm/usage", "/api/v1/billing/usage"])
async def test_an_administrator_reads_one_users_usage_with_user_id(
    client: httpx.AsyncClient, database: Database, path: str,
) -> None:
    """?user_id= is honoured for administrators (even one naming an administrator); a user
    may name only themself (another user: 403); a malformed id is a 422."""
    alice, alice_h, bob, _, admin_h = await _seed(database)
    models = await client.get(path, params={**MARCH, "group_by": "model",
                                            "user_id": str(bob)}, headers=admin_h)
    assert models.status_code == 200, models.text
    assert {k: r["requests"] for k, r in _by_key(models.json()).items()} == {"claude-b": 1}
    assert models.json()["totals"]["tokens_input"] == 100
    nobody = await client.get(path, params={**MARCH, "user_id": str(uuid.uuid4())},
                              headers=admin_h)
    assert nobody.status_code == 200 and nobody.json()["rows"] == [], nobody.text

    own = await client.get(path, params={**MARCH, "group_by": "user", "user_id": str(alice)},
                           headers=alice_h)
    assert own.status_code == 200, own.text
    assert [r["key"] for r in own.json()["rows"]] == [str(alice)]
    other = await client.get(path, params={**MARCH, "user_id": str(bob)}, headers=alice_h)
    assert other.status_code == 403, other.text
    assert other.headers["content-type"] == "application/problem+json"
    malformed = await client.get(path, params={"user_id": "bob"}, headers=admin_h)
    assert malformed.status_code == 422, malformed.text


@pytest.mark.needs_clickhouse
async def test_user_id_filters_the_clickhouse_report_too(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """The same filter from ClickHouse: nothing of the others' (here nothing shipped at
    all), and a user naming another is refused there as well."""
    _, alice_h, bob, _, admin_h = await _seed(database)
    params = {**MARCH, "source": "clickhouse", "user_id": str(bob)}
    ok = await client.get("/api/v1/billing/usage", params=params, headers=admin_h)
    assert ok.status_code == 200 and ok.json()["source"] == "clickhouse", ok.text
    refused = await client.get("/api/v1/billing/usage", params=params, headers=alice_h)
    assert refused.status_code == 403, refused.text
