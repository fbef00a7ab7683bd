"""Streaming metrics: the meter's rows (time to first token, sampled chunks, the total)
and GET /api/v1/analytics/streaming (p50/p95 time to first token, tokens/s per model)."""

from __future__ import annotations

import time
import unicodedata
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from roost.analytics.models import StreamingMetric
from roost.analytics.streaming import StreamMeter
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]


def test_meter_records_first_token_sampled_chunks_and_total() -> None:
    meter = StreamMeter(sample_every=10)
    time.sleep(0.05)
    for _ in range(45):
        meter.on_chunk(2)
    meter.finish(None)
    rows = meter.rows("req-1", None, "gpt-test", "stub")

    kinds = [(r.event_type, r.chunk_number) for r in rows]
    assert kinds[0] == ("first_token", 1)
    # every chunk up to 20, then one in ten, then the total
    assert [n for k, n in kinds if k == "chunk"] == [*range(2, 21), 30, 40]
    assert kinds[-1] == ("done", 45)
    assert len(rows) == 1 + 19 + 2 + 1
    first, done = rows[0], rows[-1]
    assert first.latency_ms >= 50  # the time to the first token includes the wait
    assert done.tokens_delta == 90  # no provider count: the sum of the deltas
    assert all(r.tokens_delta == 2 for r in rows[:-1])
    latencies = [r.latency_ms for r in rows]
    assert latencies == sorted(latencies) and done.latency_ms >= first.latency_ms
    assert {r.stream_id for r in rows} == {"req-1"}
    assert {(r.model, r.provider) for r in rows} == {("gpt-test", "stub")}
    assert len({r.id for r in rows}) == len(rows)
    timestamps = [r.timestamp for r in rows]
    assert timestamps == sorted(timestamps)


def test_meter_total_is_the_providers_count_and_finish_counts_once() -> None:
    meter = StreamMeter(sample_every=3)
    for _ in range(25):
        meter.on_chunk(1)
    meter.finish(total_output_tokens=31)
    meter.finish(total_output_tokens=99)  # later calls change nothing
    meter.on_chunk(5)  # after the end: not part of the stream
    rows = meter.rows("s", uuid.uuid4(), None, None)
    chunks = [r.chunk_number for r in rows if r.event_type == "chunk"]
    assert chunks == [*range(2, 21), 21, 24]
    assert rows[-1].event_type == "done" and rows[-1].tokens_delta == 31
    assert rows[-1].chunk_number == 25


def test_meter_without_chunks_gives_only_the_total_and_rows_finishes() -> None:
    meter = StreamMeter()
    rows = meter.rows("empty", None, "m", "p")  # no finish(): rows() ends the stream
    assert [(r.event_type, r.chunk_number, r.tokens_delta) for r in rows] == [("done", 0, 0)]
    assert meter.ttft_ms is None
    with pytest.raises(ValueError):
        StreamMeter(sample_every=0)


def test_negative_deltas_count_as_zero() -> None:
    meter = StreamMeter()
    meter.on_chunk(-3)
    meter.on_chunk(4)
    rows = meter.rows("s", None, None, None)
    assert [r.tokens_delta for r in rows] == [0, 4, 4]


async def add_stream(database: Database, user_id: uuid.UUID | None, model: str,
                     ttft_ms: int, total_ms: int, tokens: int) -> None:
    start = utcnow() - timedelta(minutes=5)
    stream = str(uuid7())
    async with database.transaction() as session:
        session.add_all([
            StreamingMetric(id=uuid7(), stream_id=stream, event_type="first_token",
                            chunk_number=1, latency_ms=ttft_ms, tokens_delta=1,
                            user_id=user_id, model=model, provider="stub",
                            timestamp=start + timedelta(milliseconds=ttft_ms)),
            StreamingMetric(id=uuid7(), stream_id=stream, event_type="done",
                            chunk_number=10, latency_ms=total_ms, tokens_delta=tokens,
                            user_id=user_id, model=model, provider="stub",
                            timestamp=start + timedelta(milliseconds=total_ms)),
        ])


async def test_streaming_api_per_model_own_streams_for_users_all_for_admins(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
    user: User, other_user: User,
) -> None:
    alice, alice_headers = user
    bob, bob_headers = other_user
    for ttft in (100, 200, 300):  # 100 tokens in the second after the first token
        await add_stream(database, alice, "m1", ttft, ttft + 1000, 100)
    await add_stream(database, alice, "m2", 50, 550, 1000)  # 2000 tokens/s
    await add_stream(database, bob, "m1", 900, 1900, 10)

    mine = await client.get("/api/v1/analytics/streaming", headers=alice_headers)
    assert mine.status_code == 200, mine.text
    by_model = {i["model"]: i for i in mine.json()["items"]}
    assert set(by_model) == {"m1", "m2"}
    assert by_model["m1"]["streams"] == 3
    assert by_model["m1"]["ttft_ms_p50"] == 200
    assert by_model["m1"]["ttft_ms_p95"] == pytest.approx(290)
    assert by_model["m1"]["tokens_per_s"] == pytest.approx(100)
    assert by_model["m2"]["tokens_per_s"] == pytest.approx(2000)

    everyone = await client.get("/api/v1/analytics/streaming", headers=admin_headers)
    m1 = {i["model"]: i for i in everyone.json()["items"]}["m1"]
    assert m1["streams"] == 4 and m1["ttft_ms_p50"] == 250

    only_bob = await client.get("/api/v1/analytics/streaming", headers=admin_headers,
                                params={"user_id": str(bob)})
    assert [(i["model"], i["streams"], i["tokens_per_s"]) for i in only_bob.json()["items"]] \
        == [("m1", 1, pytest.approx(10))]

    # a user may not read another's; time windows filter; bad input is a 4xx
    peek = await client.get("/api/v1/analytics/streaming", headers=bob_headers,
                            params={"user_id": str(alice)})
    assert peek.status_code == 403
    future = await client.get("/api/v1/analytics/streaming", headers=alice_headers,
                              params={"since": (utcnow() + timedelta(hours=1)).isoformat()})
    assert future.status_code == 200 and future.json()["items"] == []
    backwards = await client.get("/api/v1/analytics/streaming", headers=alice_headers,
                                 params={"since": "2027-01-02T00:00:00Z",
                                         "until": "2027-01-01T00:00:00Z"})
    assert backwards.status_code == 422
    numeric = await client.get("/api/v1/analytics/streaming", headers=alice_headers,
                               params={"since": "12"})
    assert numeric.status_code == 422
    anonymous = await client.get("/api/v1/analytics/streaming")
    assert anonymous.status_code == 401


async def test_streaming_metrics_name_the_model_composed_as_the_ledger_does(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """A streamed answer whose provider names its model decomposed (NFD "é"): its
    streaming metrics name the model as its usage row does, composed, and GET
    /analytics/streaming lists it so (they kept the provider's spelling: one model, two
    names)."""
    nfd = unicodedata.normalize("NFD", "café-model")
    nfc = unicodedata.normalize("NFC", nfd)
    user_id, headers = await make_user(database)
    resp = await client.post("/api/v1/llm/providers", headers=admin_headers, json={
        "name": "stub", "type": "openai", "base_url": stub.base_url, "model": nfd})
    assert resp.status_code == 201, resp.text
    async with client.stream("POST", "/v1/chat/completions", headers=headers, json={
            "model": nfd, "stream": True,
            "messages": [{"role": "user", "content": "stream a few words to me"}]}) as streamed:
        assert streamed.status_code == 200
        body = "".join([part async for part in streamed.aiter_text()])
    assert "[DONE]" in body
    async with database.transaction() as s:
        ledger = (await s.execute(text("SELECT model FROM usage_records WHERE user_id = :u"),
                                  {"u": user_id})).scalars().all()
        metrics = set((await s.execute(text(
            "SELECT model FROM streaming_analytics WHERE user_id = :u"),
            {"u": user_id})).scalars().all())
    assert ledger == [nfc]
    assert metrics == {nfc}, [ascii(m) for m in metrics]
    listed = await client.get("/api/v1/analytics/streaming", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [i["model"] for i in listed.json()["items"]] == [nfc]
