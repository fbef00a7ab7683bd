"""Concurrent-stream slots (roost.identity.ratelimits, docs/operations.md) given back
whatever way a stream ends: the client hanging up (every kind of stream), the model
failing, hanging or dropping the connection, the client giving up before the model's first
chunk; a client that starts its next stream as the last one ends is never refused; a user's
and a key's slots are shared by every kind of stream, and a request refused for another
reason holds none; a burst gets exactly the slots, and a long stream keeps its own; a
server stopped by SIGTERM ends its open streams and exits, and a killed server's slots
count only until their leases expire."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from roost.app import create_app
from roost.db.engine import Database
from roost.identity.apikeys import create_api_key
from roost.identity.common import principal_for
from roost.identity.models import ApiKey, User
from roost.keyfiles import KeyMaterial
from tests.chat.conftest import add_provider
from tests.identity.limits import limit_settings, live_leases, until
from tests.support.identity import make_user
from tests.support.openai_stub import Fail, Hang, Reply, StubServer
from tests.support.openai_stub.script import Drop, Step
from tests.support.pg import PgTestServer
from tests.support.server import in_process, roost_server, serve_env
from tests.support.sql import scalar

Headers = dict[str, str]
SLOW = Reply(" ".join(["slow"] * 400), chunk_delay_ms=250, times=None)
V1 = {"model": "stub-model", "stream": True, "messages": [{"role": "user", "content": "x"}]}


@contextlib.asynccontextmanager
async def _served(tmp_path: Path, database: Database, keys: KeyMaterial, stub: StubServer,
                  admin_headers: Headers, **limits: Any) -> AsyncIterator[str]:
    """The app with ``limits`` under uvicorn in this process (real connections a client
    can drop), the stub as its provider; no worker, so a run stays queued."""
    app = create_app(limit_settings(tmp_path, **limits), database=database, keys=keys,
                     configure_logs=False)
    async with in_process(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            await add_provider(http, admin_headers, stub)
        yield base


async def _open_and_drop(base: str, method: str, url: str, headers: Headers,
                         body: dict[str, Any] | None, *, read_line: bool = False) -> int:
    """Open a stream on a connection of its own, wait for its headers (and a first line),
    then close the connection without reading on.  The answer's status."""
    http = httpx.AsyncClient(base_url=base, timeout=30)
    try:
        response = await http.send(http.build_request(method, url, headers=headers, json=body),
                                   stream=True)
        if response.status_code < 300 and read_line:
            await asyncio.wait_for(anext(response.aiter_lines()), 20)
        if response.status_code >= 300:
            await response.aread()
        return response.status_code
    finally:
        await http.aclose()  # closes the socket mid-stream


async def _until_status(attempt: Callable[[], Awaitable[int]], want: int,
                        seconds: float = 20) -> int:
    """``attempt`` repeated until it answers ``want``, or the time is up: its last status."""
    deadline = time.monotonic() + seconds
    status = await attempt()
    while status != want and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        status = await attempt()
    return status


async def _agent_and_queued_run(http: httpx.AsyncClient, headers: Headers) -> tuple[str, str]:
    """An agent's slug and the id of a run of it that stays queued (its event stream stays
    open)."""
    agent = await http.post("/api/v1/agents", headers=headers, json={
        "name": "Slowpoke", "slug": f"slow-{uuid.uuid4().hex[:8]}"})
    assert agent.status_code == 201, agent.text
    run = await http.post(f"/api/v1/agents/{agent.json()['id']}/runs", headers=headers,
                          json={"input": "stay queued"})
    assert run.status_code == 202, run.text
    return agent.json()["slug"], run.json()["id"]


async def test_a_client_hanging_up_gives_the_slot_back_on_every_kind_of_stream(
    tmp_path: Path, database: Database, test_keys: KeyMaterial, stub: StubServer,
    admin_headers: Headers,
) -> None:
    """One stream at a time, leases of 60 s: a slot not given back when the client hangs
    up would refuse the next stream for a minute."""
    user_id, headers = await make_user(database)
    stub.script(SLOW)
    async with _served(tmp_path, database, test_keys, stub, admin_headers,
                       rate_limit_streams=1) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            slug, run_id = await _agent_and_queued_run(http, headers)
            sid = (await http.post("/api/v1/chat/sessions", headers=headers, json={})).json()["id"]
        messages = f"/api/v1/chat/sessions/{sid}/messages"
        kinds: dict[str, tuple[str, str, dict[str, Any] | None, int]] = {
            "v1 model": ("POST", "/v1/chat/completions", V1, 200),
            "v1 agent": ("POST", "/v1/chat/completions", {**V1, "model": f"agent:{slug}"}, 200),
            "chat model": ("POST", messages, {"content": "talk", "stream": True}, 201),
            "chat agent": ("POST", messages, {"content": "talk", "stream": True,
                                              "model": f"agent:{slug}"}, 201),
            "run events": ("GET", f"/api/v1/runs/{run_id}/events", None, 200),
        }
        statuses: dict[str, list[int]] = {}
        for name, (method, url, body, ok) in kinds.items():
            statuses[name] = [await _until_status(
                lambda m=method, u=url, b=body: _open_and_drop(
                    base, m, u, headers, b, read_line=m == "POST"), ok) for _ in range(2)]
        await until(lambda: live_leases(database, f"u:{user_id}"), 0)
    assert statuses == {name: [ok] * 2 for name, (*_, ok) in kinds.items()}, statuses


async def test_a_stream_whose_model_fails_hangs_or_drops_gives_the_slot_back(
    tmp_path: Path, database: Database, test_keys: KeyMaterial, stub: StubServer,
    admin_headers: Headers,
) -> None:
    user_id, headers = await make_user(database)
    async with _served(tmp_path, database, test_keys, stub, admin_headers,
                       rate_limit_streams=1, llm_timeout_s=2) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            sid = (await http.post("/api/v1/chat/sessions", headers=headers, json={})).json()["id"]
            targets = {"v1": ("/v1/chat/completions", V1),
                       "chat": (f"/api/v1/chat/sessions/{sid}/messages",
                                {"content": "x", "stream": True})}
            failures: dict[str, Step] = {"fail 500": Fail(500), "fail 429": Fail(429),
                                         "drop": Drop("a b c d e f", after=2), "hang": Hang()}
            ended: dict[str, int] = {}
            for failure, step in failures.items():
                for target, (url, body) in targets.items():
                    stub.reset()
                    stub.script(step, Reply("fine", times=None))
                    async with http.stream("POST", url, headers=headers, json=body) as answer:
                        await answer.aread()  # an error status, or an error frame and the end
                    ended[f"{failure}, {target}"] = answer.status_code
                    await until(lambda: live_leases(database, f"u:{user_id}"), 0)
    assert all(status < 500 or status in (502, 503, 504) for status in ended.values()), ended


async def test_a_client_giving_up_before_the_first_chunk_frees_the_slot_at_once(
    tmp_path: Path, database: Database, test_keys: KeyMaterial, stub: StubServer,
    admin_headers: Headers,
) -> None:
    """The model never answers and the client gives up after a second: the slot comes
    back when it leaves, not when the provider's time limit (here 120 s) runs out."""
    _, headers = await make_user(database)
    async with _served(tmp_path, database, test_keys, stub, admin_headers,
                       rate_limit_streams=1, llm_timeout_s=120) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            sid = (await http.post("/api/v1/chat/sessions", headers=headers, json={})).json()["id"]
        next_streams: dict[str, int] = {}
        for target, url, body, ok in (
                ("v1", "/v1/chat/completions", V1, 200),
                ("chat", f"/api/v1/chat/sessions/{sid}/messages",
                 {"content": "x", "stream": True}, 201)):
            stub.reset()
            stub.script(Hang(), Reply("fine", times=None))
            with contextlib.suppress(httpx.TimeoutException):
                async with httpx.AsyncClient(base_url=base, timeout=1.0) as impatient:
                    await impatient.post(url, headers=headers, json=body)
            next_streams[target] = await _until_status(
                lambda u=url, b=body: _open_and_drop(base, "POST", u, headers, b),
                ok, seconds=30)
    assert next_streams == {"v1": 200, "chat": 201}, next_streams


async def test_a_stream_started_as_the_last_one_ends_is_never_refused(
    tmp_path: Path, database: Database, test_keys: KeyMaterial, stub: StubServer,
    admin_headers: Headers,
) -> None:
    """One stream at a time: a client that reads a stream to its end (or its error
    answer) and starts the next one at once has no stream open, so is never refused,
    though the server gives the slot back only after the last byte is sent (a race: a
    few hundred streams show it)."""
    _, headers = await make_user(database)
    refused: dict[str, int] = {}
    async with _served(tmp_path, database, test_keys, stub, admin_headers,
                       rate_limit_streams=1) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            sid = (await http.post("/api/v1/chat/sessions", headers=headers, json={})).json()["id"]
            for kind, step, n in (("completed", Reply("short answer", times=None), 400),
                                  ("failed", Fail(500, times=None), 20)):
                stub.reset()
                stub.script(step)
                answers = [
                    await http.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                                    json={"content": "x", "stream": True}) if i % 2 else
                    await http.post("/v1/chat/completions", headers=headers, json=V1)
                    for i in range(n)]
                refused[kind] = sum(a.status_code == 429 for a in answers)
    assert refused == {"completed": 0, "failed": 0}, refused


async def test_a_user_s_and_a_key_s_slots_are_shared_by_every_kind_of_stream(
    tmp_path: Path, database: Database, test_keys: KeyMaterial, stub: StubServer,
    admin_headers: Headers,
) -> None:
    """The user may hold 2 streams, their key A 1: /v1, chat and run events all count
    against both; a stream request refused for another reason (unknown or another's
    session, agent or run, empty input, a bad id) holds no slot afterwards."""
    user_id, key_a = await make_user(database)
    _, other = await make_user(database)
    async with database.transaction() as session:
        user = await session.get(User, user_id)
        assert user is not None
        key_a_id = await session.scalar(select(ApiKey.id).where(ApiKey.user_id == user_id))
        key_b = {"Authorization": "Bearer " + (await create_api_key(
            session, principal_for(user), name="b")).key}
    stub.script(SLOW)
    subject = f"u:{user_id}"
    async with _served(tmp_path, database, test_keys, stub, admin_headers) as base, \
            httpx.AsyncClient(base_url=base, timeout=30) as http:
        assert (await http.put(f"/api/v1/admin/limits/users/{user_id}", headers=admin_headers,
                               json={"streams": 2})).status_code == 200
        assert (await http.put(f"/api/v1/admin/limits/api-keys/{key_a_id}",
                               headers=admin_headers, json={"streams": 1})).status_code == 200
        slug, run_id = await _agent_and_queued_run(http, key_b)
        sid = (await http.post("/api/v1/chat/sessions", headers=key_a, json={})).json()["id"]
        others_sid = (await http.post("/api/v1/chat/sessions", headers=other,
                                      json={})).json()["id"]
        others_slug, others_run = await _agent_and_queued_run(http, other)
        statuses: dict[str, int] = {}
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                http.stream("POST", "/v1/chat/completions", headers=key_a, json=V1))
            statuses["key A: v1"] = first.status_code
            chat = await http.post(f"/api/v1/chat/sessions/{sid}/messages", headers=key_a,
                                   json={"content": "x", "stream": True})
            statuses["key A: chat (key full)"] = chat.status_code
            events = await stack.enter_async_context(
                http.stream("GET", f"/api/v1/runs/{run_id}/events", headers=key_b))
            statuses["key B: run events"] = events.status_code
            again = await http.post("/v1/chat/completions", headers=key_b, json=V1)
            statuses["key B: v1 (user full)"] = again.status_code
            statuses["live"] = await live_leases(database, subject)
            agent_v1 = await http.post("/v1/chat/completions", headers=key_b,
                                       json={**V1, "model": f"agent:{slug}"})
            statuses["key B: v1 agent (user full)"] = agent_v1.status_code
        await until(lambda: live_leases(database, subject), 0)
        refused = {
            "chat unknown session": await http.post(
                f"/api/v1/chat/sessions/{uuid.uuid4()}/messages", headers=key_a,
                json={"content": "x", "stream": True}),
            "chat another's session": await http.post(
                f"/api/v1/chat/sessions/{others_sid}/messages", headers=key_a,
                json={"content": "x", "stream": True}),
            "v1 unknown agent": await http.post("/v1/chat/completions", headers=key_a,
                                                json={**V1, "model": "agent:nope"}),
            "v1 another's agent": await http.post("/v1/chat/completions", headers=key_a,
                                                  json={**V1, "model": f"agent:{others_slug}"}),
            "v1 empty agent input": await http.post(
                "/v1/chat/completions", headers=key_a,
                json={**V1, "model": f"agent:{slug}",
                      "messages": [{"role": "user", "content": " "}]}),
            "events another's run": await http.get(f"/api/v1/runs/{others_run}/events",
                                                   headers=key_a),
            "events bad id": await http.get("/api/v1/runs/nope/events", headers=key_a),
        }
        leftover = await live_leases(database, subject)
        stub.reset()
        stub.script(Reply("short", times=None))
        after = await http.post(f"/api/v1/chat/sessions/{sid}/messages", headers=key_a,
                                json={"content": "x", "stream": True})
    assert statuses == {"key A: v1": 200, "key A: chat (key full)": 429,
                        "key B: run events": 200, "key B: v1 (user full)": 429, "live": 2,
                        "key B: v1 agent (user full)": 429}, statuses
    assert {k: r.status_code for k, r in refused.items()} == {
        "chat unknown session": 404, "chat another's session": 404, "v1 unknown agent": 404,
        "v1 another's agent": 404, "v1 empty agent input": 400, "events another's run": 404,
        "events bad id": 422}, {k: (r.status_code, r.text[:200]) for k, r in refused.items()}
    assert leftover == 0 and after.status_code == 201


async def test_a_burst_gets_exactly_the_slots_and_a_long_stream_keeps_its_own(
    tmp_path: Path, database: Database, test_keys: KeyMaterial, stub: StubServer,
    admin_headers: Headers,
) -> None:
    """Five streams, leases of 5 s: fifty stream requests at once get exactly five
    streams (the rest 429, no error), and streams open longer than their lease still hold
    their slots (renewed while open)."""
    user_id, headers = await make_user(database)
    subject = f"u:{user_id}"
    stub.script(SLOW)
    release = asyncio.Event()
    got: list[int] = []

    async def one(http: httpx.AsyncClient) -> None:
        async with http.stream("POST", "/v1/chat/completions", headers=headers,
                               json=V1) as response:
            got.append(response.status_code)
            if response.status_code == 200:
                await release.wait()
            else:
                await response.aread()

    async with _served(tmp_path, database, test_keys, stub, admin_headers,
                       rate_limit_streams=5, rate_limit_lease_s=5) as base, \
            httpx.AsyncClient(base_url=base, timeout=60,
                              limits=httpx.Limits(max_connections=60)) as http:
        tasks = [asyncio.create_task(one(http)) for _ in range(50)]
        for _ in range(600):  # until every request has its answer's status
            if len(got) == 50:
                break
            await asyncio.sleep(0.05)
        burst = sorted(got)
        live_after_burst = await live_leases(database, subject)
        await asyncio.sleep(7.5)  # one and a half leases: only renewed leases are live
        late = await http.post("/v1/chat/completions", headers=headers, json=V1)
        live_later = await live_leases(database, subject)
        release.set()
        await asyncio.gather(*tasks)
        await until(lambda: live_leases(database, subject), 0)
    assert burst == [200] * 5 + [429] * 45, burst
    assert (live_after_burst, live_later) == (5, 5)
    assert late.status_code == 429, late.text


async def _hold(base: str, method: str, url: str, headers: Headers,
                body: dict[str, Any] | None, opened: asyncio.Event) -> str:
    """Hold a stream open until the server ends it: how it ended."""
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            async with http.stream(method, url, headers=headers, json=body) as response:
                assert response.status_code in (200, 201), response.status_code
                opened.set()
                async for _ in response.aiter_raw():
                    pass
        return "ended"
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def _two_held_streams(base: str, headers: Headers
                            ) -> list[asyncio.Task[str]]:
    """A slow /v1 stream and a queued run's event stream, open."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        _, run_id = await _agent_and_queued_run(http, headers)
    opened = [asyncio.Event(), asyncio.Event()]
    holders = [
        asyncio.create_task(_hold(base, "POST", "/v1/chat/completions", headers, V1, opened[0])),
        asyncio.create_task(_hold(base, "GET", f"/api/v1/runs/{run_id}/events", headers, None,
                                  opened[1]))]
    await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 30)
    return holders


async def test_a_server_stopped_by_sigterm_ends_its_open_streams_and_exits(
    stub: StubServer, database: Database, pg_server: PgTestServer, db_name: str,
    tmp_path: Path, test_keys: KeyMaterial, admin_headers: Headers,
) -> None:
    """A run's event stream never ends by itself: the server ends it (and a slow /v1
    stream) once its shutdown grace is over, gives both slots back and exits."""
    user_id, headers = await make_user(database)
    stub.script(SLOW)
    env = serve_env(pg_server, db_name, tmp_path / "data", test_keys,
                    ROOST_RATE_LIMIT_STREAMS="2", ROOST_SERVE_SHUTDOWN_GRACE_S="2")
    with roost_server(env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            await add_provider(http, admin_headers, stub)
        holders = await _two_held_streams(server.base_url, headers)
        server.process.send_signal(signal.SIGTERM)
        try:
            exit_code = await asyncio.to_thread(server.process.wait, 60)
            ended = await asyncio.wait_for(asyncio.gather(*holders), 30)
        finally:
            for holder in holders:
                holder.cancel()
    assert exit_code == 0
    assert len(ended) == 2  # both ended by the server
    assert await live_leases(database, f"u:{user_id}") == 0  # not left to expire


async def test_a_killed_server_s_slots_count_only_until_their_leases_expire(
    stub: StubServer, database: Database, pg_server: PgTestServer, db_name: str,
    tmp_path: Path, test_keys: KeyMaterial, admin_headers: Headers,
) -> None:
    user_id, headers = await make_user(database)
    stub.script(SLOW)
    limits = {"rate_limit_streams": 2, "rate_limit_lease_s": 5}
    env = serve_env(pg_server, db_name, tmp_path / "killed", test_keys,
                    **{f"ROOST_{k.upper()}": str(v) for k, v in limits.items()})
    with roost_server(env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            await add_provider(http, admin_headers, stub)
        holders = await _two_held_streams(server.base_url, headers)
        server.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(server.process.wait, 30)
        await asyncio.gather(*holders)
    # Nobody gave them back: they stay until they expire.
    assert await scalar(database, "SELECT count(*) FROM stream_leases WHERE subject = :s",
                        s=f"u:{user_id}") == 2
    app = create_app(limit_settings(tmp_path, **limits), database=database, keys=test_keys,
                     configure_logs=False)
    async with in_process(app) as base:
        status = await _until_status(
            lambda: _open_and_drop(base, "POST", "/v1/chat/completions", headers, V1,
                                   read_line=True), 200, seconds=60)
    assert status == 200
