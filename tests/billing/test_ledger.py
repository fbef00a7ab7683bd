"""The usage ledger: idempotent batch ingest, costs in decimal from the price table, usage
reports by provider, agent and API key; streamed answers leave their time to first token."""

from __future__ import annotations

import asyncio
import unicodedata
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer

Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=5, llm_local_model=False)


async def _subscribe(client: httpx.AsyncClient, admin: Headers, user_id: uuid.UUID,
                     credits: int = 1000) -> dict[str, Any]:
    key = f"p{uuid.uuid4().hex[:8]}"
    resp = await client.post("/api/v1/billing/plans", headers=admin, json={
        "key": key, "name": "Team", "price": "20.00", "included_credits": credits})
    assert resp.status_code == 201, resp.text
    resp = await client.post("/api/v1/billing/subscriptions", headers=admin,
                             json={"user_id": str(user_id), "plan": key})
    assert resp.status_code == 201, resp.text
    sub: dict[str, Any] = resp.json()
    return sub


def _event(user_id: uuid.UUID, key: str, **fields: Any) -> dict[str, Any]:
    return {"idempotency_key": key, "user_id": str(user_id), "request_type": "chat",
            "model": "gpt-4o-mini", "tokens_input": 1000, "tokens_output": 500, **fields}


async def test_replaying_events_bills_nothing_twice(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    user_id, _ = await make_user(database)
    sub = await _subscribe(client, admin_headers, user_id)
    batch = [_event(user_id, f"evt-{i}") for i in range(50)]
    first = await client.post("/api/v1/billing/usage-events", headers=admin_headers,
                              json={"events": batch})
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 50, "duplicates": 0, "credits_charged": 100}
    # The same batch again, and a batch repeating one key inside itself.
    again = await client.post("/api/v1/billing/usage-events", headers=admin_headers,
                              json={"events": batch})
    assert again.json() == {"accepted": 0, "duplicates": 50, "credits_charged": 0}
    twice = await client.post("/api/v1/billing/usage-events", headers=admin_headers,
                              json={"events": [_event(user_id, "x"), _event(user_id, "x")]})
    assert twice.json()["accepted"] == 1 and twice.json()["duplicates"] == 1

    async with database.transaction() as s:
        row = (await s.execute(text(
            "SELECT count(*) AS n, sum(cost) AS cost, min(currency) AS currency, "
            "(SELECT credits_used FROM subscriptions WHERE id = :sub) AS used "
            "FROM usage_records WHERE user_id = :u"), {"u": user_id, "sub": sub["id"]})).one()
    # gpt-4o-mini's default price: 0.15 in and 0.60 out per million tokens.
    assert row.n == 51
    assert row.cost == Decimal("0.000450") * 51
    assert row.currency == "USD" and row.used == 102


async def test_a_used_key_sent_with_another_event_is_a_422_and_roosts_keys_are_refused(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    """One key per step for every user (a client's mistake) must not lose the second
    user's event as a "duplicate": a 422 naming the key, nothing of its batch written.
    Keys shaped like Roost's own (``llm:``, ``tool:``, ``once:``) are refused: a model
    call's usage row would otherwise be dropped as the client event's replay."""
    first_user, _ = await make_user(database)
    second_user, _ = await make_user(database)
    ingest = "/api/v1/billing/usage-events"
    ok = await client.post(ingest, headers=admin_headers,
                           json={"events": [_event(first_user, "step-3")]})
    assert ok.json()["accepted"] == 1, ok.text
    for batch in ([_event(second_user, "fresh"), _event(second_user, "step-3")],
                  [_event(first_user, "step-3", tokens_output=501)],
                  [_event(second_user, "twice"), _event(first_user, "twice")]):
        clash = await client.post(ingest, headers=admin_headers, json={"events": batch})
        assert clash.status_code == 422, clash.text
        assert clash.json()["field"] == "idempotency_key", clash.text
    # The same event again (its price looked up again) is still a replay.
    replay = await client.post(ingest, headers=admin_headers,
                               json={"events": [_event(first_user, "step-3")]})
    assert replay.json() == {"accepted": 0, "duplicates": 1, "credits_charged": 0}, replay.text
    for key in ("llm:" + str(uuid.uuid4()), "TOOL:x", "once:y"):
        reserved = await client.post(ingest, headers=admin_headers,
                                     json={"events": [_event(first_user, key)]})
        assert reserved.status_code == 422, (key, reserved.text)
    async with database.transaction() as s:
        keys = (await s.scalars(text(
            "SELECT idempotency_key FROM usage_records WHERE user_id IN (:a, :b)"),
            {"a": first_user, "b": second_user})).all()
    assert keys == ["step-3"], keys


async def test_an_events_cost_is_in_its_payers_currency_or_refused(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    """A cost sent without a currency, for a user on an EUR plan, is in EUR (it was stored
    as USD, and the append-only ledger then blocked that subscriber's invoice for the
    whole period); a cost in another currency than the payer's is a 422 naming the event."""
    user_id, headers = await make_user(database)
    plan = f"p{uuid.uuid4().hex[:8]}"
    assert (await client.post("/api/v1/billing/plans", headers=admin_headers, json={
        "key": plan, "name": "Euro", "price": "1.00", "currency": "EUR",
        "included_credits": 1000})).status_code == 201
    sub = await client.post("/api/v1/billing/subscriptions", headers=admin_headers,
                            json={"user_id": str(user_id), "plan": plan})
    assert sub.status_code == 201, sub.text
    ingest = "/api/v1/billing/usage-events"
    for event in (_event(user_id, "usd", cost="3", currency="USD"),
                  _event(user_id, "priced-in-usd")):  # gpt-4o-mini's default price is USD
        wrong = await client.post(ingest, headers=admin_headers, json={"events": [event]})
        assert wrong.status_code == 422, wrong.text
        assert wrong.json()["field"] == "currency", wrong.text
    ok = await client.post(ingest, headers=admin_headers,
                           json={"events": [_event(user_id, "eur", cost="3")]})
    assert ok.status_code == 200, ok.text
    preview = await client.get(f"/api/v1/billing/subscriptions/{sub.json()['id']}"
                               "/invoice-preview", headers=headers)
    assert preview.status_code == 200, preview.text
    assert preview.json()["currency"] == "EUR", preview.text
    assert Decimal(preview.json()["subtotal"]) == Decimal("4.00"), preview.text


async def test_usage_reports_never_add_costs_in_two_currencies(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    """Costs in USD and in EUR on one day: the day's row and the totals give each
    currency's amount (``costs``) and no ``cost`` (it added 1.5 USD and 2 EUR to 3.5); a
    row in one currency names it."""
    user_id, _ = await make_user(database)
    batch = [_event(user_id, f"mixed-{uuid.uuid4()}", model="usd-model", cost="1.5",
                    currency="USD"),
             _event(user_id, f"mixed-{uuid.uuid4()}", model="eur-model", cost="2",
                    currency="EUR")]
    ok = await client.post("/api/v1/billing/usage-events", headers=admin_headers,
                           json={"events": batch})
    assert ok.status_code == 200, ok.text
    params: dict[str, str] = {"user_id": str(user_id)}
    by_day = (await client.get("/api/v1/billing/usage", headers=admin_headers,
                               params={**params, "group_by": "day"})).json()
    [day] = by_day["rows"]
    assert (day["cost"], day["currency"]) == (None, None), day
    assert {k: Decimal(v) for k, v in day["costs"].items()} == {
        "USD": Decimal("1.5"), "EUR": Decimal("2")}
    assert by_day["totals"]["cost"] is None and set(by_day["totals"]["costs"]) == {"USD", "EUR"}
    assert day["requests"] == 2 and day["avg_latency_ms"] is None
    by_model = (await client.get("/api/v1/billing/usage", headers=admin_headers,
                                 params={**params, "group_by": "model"})).json()
    assert sorted((r["key"], Decimal(r["cost"]), r["currency"]) for r in by_model["rows"]) == [
        ("eur-model", Decimal("2"), "EUR"), ("usd-model", Decimal("1.5"), "USD")]


async def test_bad_events_are_refused_whole(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    user_id, headers = await make_user(database)
    cases: list[tuple[dict[str, Any], int]] = [
        ({"events": [_event(user_id, "a", tokens_input=-5)]}, 422),
        ({"events": [_event(user_id, "a", cost="-1")]}, 422),
        ({"events": [_event(user_id, "a", cost="1e30")]}, 422),
        ({"events": [_event(user_id, "a", currency="usd")]}, 422),
        ({"events": [_event(uuid.uuid4(), "a")]}, 422),
        ({"events": [_event(user_id, "a", currency="EUR")]}, 422),  # priced in USD
        ({"events": []}, 422),
        ({"events": [_event(user_id, "a" * 201)]}, 422),
    ]
    for body, status in cases:
        resp = await client.post("/api/v1/billing/usage-events", headers=admin_headers, json=body)
        assert resp.status_code == status, (body, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
    not_admin = await client.post("/api/v1/billing/usage-events", headers=headers,
                                  json={"events": [_event(user_id, "a")]})
    assert not_admin.status_code == 403
    async with database.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM usage_records")) == 0


async def test_an_event_whose_model_holds_a_control_character_is_a_422_naming_it(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    """Not the database's anonymous 400 for a NUL (PostgreSQL keeps none in text); nor
    stored when it holds a C1 control (CSI U+009B, a terminal escape; NEL) or a line
    separator, which every usage report would then print."""
    user_id, _ = await make_user(database)
    for model in ("gpt\x00x", "gpt\x01x", "gpt\nx", "gpt\x9b31m", "gpt\x85x", "gpt\u2028x"):
        resp = await client.post("/api/v1/billing/usage-events", headers=admin_headers,
                                 json={"events": [_event(user_id, "k1", model=model)]})
        assert resp.status_code == 422, (model, resp.text)
        assert "model" in str(resp.json()["errors"]), resp.text
    async with database.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM usage_records")) == 0


async def test_an_event_the_price_table_prices_above_the_cap_is_a_422_naming_it(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    """A cost from the price table has the cap a sent cost has (10^6): not the database's
    anonymous 400 for a value its numeric cannot hold."""
    user_id, _ = await make_user(database)
    await _subscribe(client, admin_headers, user_id)
    model = f"pricey-{uuid.uuid4().hex[:6]}"
    resp = await client.post("/api/v1/billing/prices", headers=admin_headers, json={
        "model_pattern": model, "input_per_million": "999999999.999999",
        "output_per_million": "999999999.999999"})
    assert resp.status_code == 201, resp.text
    key = f"k-{uuid.uuid4().hex}"
    huge = _event(user_id, key, model=model, tokens_input=1_000_000_000,
                  tokens_output=1_000_000_000)
    resp = await client.post("/api/v1/billing/usage-events", headers=admin_headers,
                             json={"events": [_event(user_id, "fine"), huge]})
    assert resp.status_code == 422, resp.text
    assert key in resp.text and resp.json()["field"] == "cost", resp.text
    async with database.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM usage_records WHERE user_id = :u"),
                              {"u": user_id}) == 0


async def test_concurrent_replays_of_one_batch_in_opposite_orders_both_succeed(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    """The same events posted twice at once in opposite orders (a client's retry racing
    its first try): both answer 200 and each event is charged once.  The ledger inserts
    in key order, so the two queue instead of deadlocking (a 503)."""
    user_id, _ = await make_user(database)
    sub = await _subscribe(client, admin_headers, user_id, credits=10**9)
    for round_ in range(4):  # a deadlock needs the two to interleave: a few tries
        events = [_event(user_id, f"race-{round_}-{i}", credits=1) for i in range(3000)]
        replies = await asyncio.gather(*(
            client.post("/api/v1/billing/usage-events", headers=admin_headers,
                        json={"events": batch}) for batch in (events, events[::-1])))
        assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
        assert sorted(r.json()["accepted"] for r in replies) == [0, 3000]
    async with database.transaction() as s:
        used = await s.scalar(text("SELECT credits_used FROM subscriptions WHERE id = :id"),
                              {"id": sub["id"]})
    assert used == 4 * 3000


@pytest.mark.parametrize(("since", "until"), [
    ("0001-01-01T00:00:00+14:00", "0001-01-02T00:00:00+14:00"),
    ("9999-12-31T00:00:00-14:00", "9999-12-31T12:00:00-14:00"),
])
async def test_usage_report_bounds_outside_utc_years_are_422_naming_the_field(
    client: httpx.AsyncClient, admin_headers: Headers, since: str, until: str,
) -> None:
    """since/until that are no moment of years 1-9999 in UTC are a 422 naming the bound
    (as in bodies: roost.inputs.in_utc_range), not the database's "out of range" 400."""
    for url in ("/api/v1/billing/usage", "/api/v1/llm/usage"):
        resp = await client.get(url, headers=admin_headers,
                                params={"since": since, "until": until})
        assert resp.status_code == 422, (url, resp.text)
        assert resp.json()["field"] in ("since", "until"), resp.text
        assert resp.json()["field"] in resp.json()["detail"]


@pytest.mark.parametrize("until", ["2026-01-31", "20260131", "2026-031", "2026031",
                                   "2026-W05-6"])
async def test_a_date_as_until_covers_its_whole_day_in_any_iso_form(
    client: httpx.AsyncClient, admin_headers: Headers, until: str,
) -> None:
    """``until=20260131`` (an ISO date in basic form) was read as the start of that day by
    the timestamp parser, leaving the last day out; an ordinal date (``2026-031``) was a
    422; a date in any ISO form means through its end."""
    resp = await client.get("/api/v1/billing/usage", headers=admin_headers,
                            params={"since": "20260101", "until": until})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["since"], resp.json()["until"]) == (
        "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")


async def test_an_ordinal_date_past_its_years_last_day_is_a_422_naming_it(
    client: httpx.AsyncClient, admin_headers: Headers,
) -> None:
    resp = await client.get("/api/v1/billing/usage", headers=admin_headers,
                            params={"since": "2026-366", "until": "2027-001"})
    assert resp.status_code == 422 and resp.json()["field"] == "since", resp.text


async def test_usage_by_provider_agent_and_api_key_with_cost_and_stream_metrics(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    user_id, headers = await make_user(database)
    resp = await client.post("/api/v1/llm/providers", headers=admin_headers, json={
        "name": "stub", "type": "openai", "base_url": stub.base_url, "model": "gpt-4o"})
    assert resp.status_code == 201, resp.text
    done = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "price me"}]})
    assert done.status_code == 200, done.text
    async with client.stream("POST", "/v1/chat/completions", headers=headers, json={
            "model": "gpt-4o", "stream": True,
            "messages": [{"role": "user", "content": "stream a few words to me"}]}) as streamed:
        assert streamed.status_code == 200
        body = "".join([part async for part in streamed.aiter_text()])
    assert "[DONE]" in body

    by_provider = await client.get("/api/v1/billing/usage", headers=admin_headers,
                                   params={"group_by": "provider"})
    assert by_provider.status_code == 200, by_provider.text
    rows = by_provider.json()["rows"]
    assert [(r["label"], r["requests"]) for r in rows] == [("stub", 2)]
    assert Decimal(rows[0]["cost"]) > 0  # gpt-4o has a default price
    by_key = await client.get("/api/v1/billing/usage", headers=headers,
                              params={"group_by": "api_key"})
    assert by_key.status_code == 200
    assert by_key.json()["totals"]["requests"] == 2
    assert (await client.get("/api/v1/billing/usage", headers=headers,
                             params={"group_by": "planet"})).status_code == 422

    async with database.transaction() as s:
        metrics = (await s.execute(text(
            "SELECT event_type, stream_id, model, provider, latency_ms FROM streaming_analytics "
            "WHERE user_id = :u ORDER BY chunk_number, event_type"), {"u": user_id})).all()
        streamed_request = (await s.execute(text(
            "SELECT id FROM llm_requests WHERE user_id = :u AND id::text IN "
            "(SELECT stream_id FROM streaming_analytics)"), {"u": user_id})).scalars().all()
        kinds = [m.event_type for m in metrics]
        outbox = (await s.execute(text(
            "SELECT event_type, event_data FROM clickhouse_analytics WHERE user_id = :u "
            "AND event_type = 'llm.call'"), {"u": user_id})).all()
    assert kinds[0] == "first_token" and kinds[-1] == "done"
    # one stream, of the streamed request, each row naming its model and provider
    assert len(streamed_request) == 1
    assert {(m.stream_id, m.model, m.provider) for m in metrics} == {
        (str(streamed_request[0]), "gpt-4o", "stub")}
    assert all(m.latency_ms >= 0 for m in metrics)
    assert len(outbox) == 2 and {o.event_data["provider"] for o in outbox} == {"stub"}
    assert all(Decimal(o.event_data["cost"]) > 0 for o in outbox)


async def test_a_model_call_records_its_model_name_composed(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """A model the provider names with a decomposed "é" (NFD) is on the call's usage row
    composed (NFC), as an ingested event's is: one report row per model (it was stored as
    the provider spelled it)."""
    nfd = unicodedata.normalize("NFD", "café-model")
    user_id, headers = await make_user(database)
    resp = await client.post("/api/v1/llm/providers", headers=admin_headers, json={
        "name": "stub", "type": "openai", "base_url": stub.base_url, "model": nfd})
    assert resp.status_code == 201, resp.text
    done = await client.post("/v1/chat/completions", headers=headers, json={
        "model": nfd, "messages": [{"role": "user", "content": "name yourself"}]})
    assert done.status_code == 200, done.text
    async with database.transaction() as s:
        models = (await s.execute(text("SELECT model FROM usage_records WHERE user_id = :u"),
                                  {"u": user_id})).scalars().all()
    assert models == [unicodedata.normalize("NFC", "café-model")]


@pytest.mark.parametrize(("field", "first", "second"),
                         [("credits", 1, 500), ("cost", "0.01", "900")])
async def test_usage_replay_with_another_sent_amount_is_a_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database, field: str,
    first: Any, second: Any,
) -> None:
    """An event sent again under its key with other credits (or cost) is another event: a
    422 naming the key (it was counted a duplicate, the 499 credits never billed); with the
    same amounts, a duplicate."""
    user_id, _ = await make_user(database)
    event: dict[str, Any] = {"idempotency_key": "ev-1", "user_id": str(user_id),
                             "request_type": "chat", "model": "m", "tokens_input": 10}
    ingest = "/api/v1/billing/usage-events"
    one = await client.post(ingest, headers=admin_headers,
                            json={"events": [{**event, field: first}]})
    assert one.status_code == 200 and one.json()["accepted"] == 1, one.text
    two = await client.post(ingest, headers=admin_headers,
                            json={"events": [{**event, field: second}]})
    assert two.status_code == 422, two.text
    same = await client.post(ingest, headers=admin_headers,
                             json={"events": [{**event, field: first}]})
    assert same.status_code == 200 and same.json()["duplicates"] == 1, same.text
