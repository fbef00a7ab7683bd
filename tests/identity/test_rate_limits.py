"""Rate limits and quotas (roost.identity.ratelimits): requests per minute and concurrent
streams, per user and per API key, shared through PostgreSQL by every process, set by
administrators; 429 with Retry-After when over."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text, update

from roost.app import create_app
from roost.config import Settings
from roost.db.engine import Database, create_database
from roost.errors import TooManyRequests
from roost.http.auth import CSRF_COOKIE
from roost.identity import resolver
from roost.identity.apikeys import create_api_key
from roost.identity.common import principal_for
from roost.identity.models import ApiKey, Session, User
from roost.identity.ratelimits import Limiter, RequestLimits
from roost.identity.sessions import cleanup_expired
from roost.keyfiles import KeyMaterial
from roost.principal import Principal
from tests.console.conftest import session_cookies
from tests.identity.limits import dispose_limiter, limit_settings, live_leases, until
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.listening import statements
from tests.support.openai_stub import Reply, StubServer
from tests.support.pg import PgTestServer
from tests.support.server import in_process, roost_server, serve_env

Headers = dict[str, str]
LIST_KEYS = "/api/v1/api-keys"
# A counted request: listing keys and revoking one are never refused for the rate.
COUNTED = "/api/v1/users/me"


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return limit_settings(tmp_path, rate_limit_requests_per_minute=3)


@pytest.fixture
async def limited_app(app: FastAPI) -> AsyncIterator[FastAPI]:
    """The app fixture, its limiter's pool closed afterwards (ASGITransport runs no lifespan)."""
    yield app
    await dispose_limiter(app)


async def _second_key(database: Database, user_id: uuid.UUID) -> Headers:
    async with database.transaction() as session:
        user = await session.get(User, user_id)
        assert user is not None
        created = await create_api_key(session, principal_for(user), name="second")
    return {"Authorization": f"Bearer {created.key}"}


async def _helper_key_id(database: Database, user_id: uuid.UUID) -> uuid.UUID:
    """The id of the key make_user gave the user ("test helper")."""
    async with database.transaction() as session:
        key_id = await session.scalar(select(ApiKey.id).where(
            ApiKey.user_id == user_id, ApiKey.name == "test helper"))
    assert key_id is not None
    return key_id


async def _statuses(client: httpx.AsyncClient, headers: Headers, n: int) -> list[int]:
    return [(await client.get(COUNTED, headers=headers)).status_code for _ in range(n)]


async def test_the_request_after_the_limit_gets_429_with_retry_after(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database,
) -> None:
    _, headers = await make_user(database)
    assert await _statuses(client, headers, 3) == [200, 200, 200]
    refused = await client.get(COUNTED, headers=headers)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 20  # one request's share of the minute
    problem = refused.json()
    assert problem["type"].endswith("/too-many-requests")
    assert problem["retry_after_s"] == retry_after and "3" in problem["detail"]
    # /v1 answers in OpenAI's shape, Retry-After included (what OpenAI SDKs back off on).
    v1 = await client.get("/v1/models", headers=headers)
    assert v1.status_code == 429 and v1.json()["error"]["type"] == "rate_limit_error"
    assert int(v1.headers["Retry-After"]) >= 1
    # Another user's minute is their own.
    _, other = await make_user(database)
    assert await _statuses(client, other, 1) == [200]


async def test_mcp_over_the_limit_is_a_problem_429_with_retry_after(
    tmp_path: Path, database: Database, test_keys: KeyMaterial,
) -> None:
    settings = limit_settings(tmp_path, rate_limit_requests_per_minute=2, rate_limit_streams=1)
    app = create_app(settings, database=database, keys=test_keys, configure_logs=False)
    _, headers = await make_user(database)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "limits", "version": "0"}}}
    mcp_headers = {**headers, "Accept": "application/json, text/event-stream",
                   "Content-Type": "application/json"}
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        answers = [await http.post("/mcp", headers=mcp_headers, json=init) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429], [a.text for a in answers]
    refused = answers[2]
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.headers["Retry-After"].isdigit()


async def test_per_key_and_per_user_limits_are_independent(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    user_id, key_a = await make_user(database)
    key_b = await _second_key(database, user_id)
    key_a_id = await _helper_key_id(database, user_id)
    # The user may make 5 a minute with all their keys; key A 2 of them.
    put = await client.put(f"/api/v1/admin/limits/users/{user_id}", headers=admin_headers,
                           json={"requests_per_minute": 5})
    assert put.status_code == 200, put.text
    assert put.json()["effective_requests_per_minute"] == 5
    put = await client.put(f"/api/v1/admin/limits/api-keys/{key_a_id}", headers=admin_headers,
                           json={"requests_per_minute": 2})
    assert put.status_code == 200 and put.json()["requests_per_minute"] == 2
    # Key A: two (its own limit), then refused; a refused request costs the user nothing.
    assert await _statuses(client, key_a, 4) == [200, 200, 429, 429]
    # Key B has no limit of its own, only the user's: 5 - 2 used = 3 more.
    assert await _statuses(client, key_b, 4) == [200, 200, 200, 429]
    refused = await client.get(COUNTED, headers=key_b)
    assert "your account's limit of 5 requests per minute" in refused.json()["detail"]


async def test_a_refusal_names_the_limit_that_refused(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """With both the user and the key limited, the 429 says which one refused: the key's
    own limit, or the account's (all the user's keys together)."""
    user_id, key_a = await make_user(database)
    key_b = await _second_key(database, user_id)
    key_a_id = await _helper_key_id(database, user_id)
    for path, rpm in ((f"users/{user_id}", 4), (f"api-keys/{key_a_id}", 2)):
        put = await client.put(f"/api/v1/admin/limits/{path}", headers=admin_headers,
                               json={"requests_per_minute": rpm})
        assert put.status_code == 200, put.text
    assert await _statuses(client, key_a, 2) == [200, 200]
    by_key = await client.get(COUNTED, headers=key_a)
    assert by_key.status_code == 429
    assert by_key.json()["detail"].startswith(
        "rate limit reached: the API key's limit of 2 requests per minute; try again in ")
    assert by_key.json()["retry_after_s"] == int(by_key.headers["Retry-After"])
    assert await _statuses(client, key_b, 2) == [200, 200]  # the user's 4 are used up
    by_user = await client.get(COUNTED, headers=key_b)
    assert by_user.status_code == 429
    assert "your account's limit of 4 requests per minute" in by_user.json()["detail"]
    # Key A is now over both: it is still refused, naming one of them.
    both = (await client.get(COUNTED, headers=key_a)).json()["detail"]
    assert "the API key's limit of 2" in both or "your account's limit of 4" in both


async def test_revoked_and_expired_keys_limits_are_neither_listed_nor_set(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """A revoked or expired key authenticates no more: the overview leaves out its
    override and setting its limits is a 409 (a live key's still 200)."""
    user_id, _ = await make_user(database)
    ids: dict[str, str] = {}
    for name in ("live", "revoked", "expired"):
        made = await client.post(f"{LIST_KEYS}?user_id={user_id}", headers=admin_headers,
                                 json={"name": name})
        assert made.status_code == 201, made.text
        ids[name] = made.json()["id"]
        put = await client.put(f"/api/v1/admin/limits/api-keys/{ids[name]}",
                               headers=admin_headers, json={"requests_per_minute": 7})
        assert put.status_code == 200, put.text
    gone = await client.delete(f"{LIST_KEYS}/{ids['revoked']}", headers=admin_headers)
    assert gone.status_code in (200, 204), gone.text
    async with database.transaction() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == uuid.UUID(ids["expired"]))
                              .values(expires_at=text("now() - interval '1 minute'")))
    overview = (await client.get("/api/v1/admin/limits", headers=admin_headers)).json()
    assert [o["id"] for o in overview["overrides"] if o["kind"] == "api_key"] == [ids["live"]]
    for name in ("revoked", "expired"):
        put = await client.put(f"/api/v1/admin/limits/api-keys/{ids[name]}",
                               headers=admin_headers, json={"requests_per_minute": 1})
        assert put.status_code == 409, put.text
        assert "revoked or expired" in put.json()["detail"]
    async with database.transaction() as session:
        kept = (await session.execute(select(ApiKey.rate_limit_rpm).where(
            ApiKey.id.in_([uuid.UUID(i) for i in ids.values()])))).scalars().all()
    assert kept == [7, 7, 7]  # nothing changed by the refused PUTs
    live = await client.put(f"/api/v1/admin/limits/api-keys/{ids['live']}",
                            headers=admin_headers, json={})
    assert live.status_code == 200, live.text


async def test_a_revoked_keys_requests_do_not_charge_its_user(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database,
) -> None:
    """A user limited to 3 requests a minute revokes a leaked key. Whoever holds the
    revoked key gets 401s: not authenticated requests, they do not spend the user's
    minute. The one-statement paths (chat history here) charge the limits this process
    remembers with the key before the database refuses it: that charge is given back (the
    user's own third request was a 429)."""
    user_id, key_a = await make_user(database)
    key_b = await _second_key(database, user_id)
    key_a_id = await _helper_key_id(database, user_id)
    # 1: key A is used once (this process now knows it).
    assert (await client.get(COUNTED, headers=key_a)).status_code == 200
    # The user revokes it with key B (a revocation is not counted).
    assert (await client.delete(f"{LIST_KEYS}/{key_a_id}", headers=key_b)).status_code == 204
    # The revoked key's holder reads a chat history: 401, not an authenticated request.
    leaked = await client.get(f"/api/v1/chat/sessions/{uuid.uuid4()}/messages", headers=key_a)
    assert leaked.status_code == 401, leaked.text
    # 2 and 3: the user's own second and third requests of the minute; then over.
    assert await _statuses(client, key_b, 3) == [200, 200, 429]


async def test_the_charge_given_back_is_a_whole_request_at_any_limit(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """At 7 requests a minute one request's spacing is 60/7 s: a revoked key's refused
    read gives all of it back (an integer division gave back 8 s, and the user lost part
    of a request with every such 401), so the user's 6 remaining requests all pass."""
    user_id, key_a = await make_user(database)
    key_b = await _second_key(database, user_id)
    key_a_id = await _helper_key_id(database, user_id)
    assert (await client.put(f"/api/v1/admin/limits/users/{user_id}", headers=admin_headers,
                             json={"requests_per_minute": 7})).status_code == 200
    assert (await client.get(COUNTED, headers=key_a)).status_code == 200  # 1
    assert (await client.delete(f"{LIST_KEYS}/{key_a_id}", headers=key_b)).status_code == 204
    leaked = await client.get(f"/api/v1/chat/sessions/{uuid.uuid4()}/messages", headers=key_a)
    assert leaked.status_code == 401, leaked.text
    assert await _statuses(client, key_b, 7) == [200] * 6 + [429]


async def test_a_user_over_the_limit_can_still_find_and_revoke_a_leaked_key(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database,
) -> None:
    """A leaked key spends its user's whole minute: the user's other requests are 429s,
    but listing the keys and revoking the leaked one are never refused for the rate (nor
    charged), so the holder of a leaked key cannot keep its owner from revoking it."""
    user_id, leaked = await make_user(database)
    own = await _second_key(database, user_id)
    assert (await client.get("/api/v1/users/me", headers=leaked)).status_code == 200
    assert (await client.get("/api/v1/users/me", headers=leaked)).status_code == 200
    assert (await client.get("/api/v1/users/me", headers=leaked)).status_code == 200
    assert (await client.get("/api/v1/users/me", headers=own)).status_code == 429
    listed = await client.get(LIST_KEYS, headers=own)
    assert listed.status_code == 200, listed.text
    leaked_id = next(k["id"] for k in listed.json() if k["name"] == "test helper")
    revoked = await client.delete(f"{LIST_KEYS}/{leaked_id}", headers=own)
    assert revoked.status_code == 204, revoked.text
    assert (await client.get("/api/v1/users/me", headers=leaked)).status_code == 401
    assert (await client.get("/api/v1/users/me", headers=own)).status_code == 429  # still over


async def test_a_user_over_the_limit_can_still_see_and_end_their_sessions_and_sign_out(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
) -> None:
    """A leaked cookie or key spending its user's whole minute must not keep the user
    signed in: listing their sessions and devices, and the console's Sign out (the
    console answered 429 and the session stayed live) are never refused for the rate, and
    every route exempted exists."""
    user_id, headers = await make_user(database)
    cookies = await session_cookies(database, test_keys, user_id)
    assert await _statuses(client, headers, 4) == [200, 200, 200, 429]
    for path in ("/api/v1/auth/sessions", f"/api/v1/users/{user_id}/sessions",
                 f"/api/v1/users/{user_id}/devices"):
        listed = await client.get(path, headers=headers)
        assert listed.status_code == 200, (path, listed.text)
    out = await client.post("/console/logout", cookies=cookies,
                            headers={"X-CSRF-Token": cookies[CSRF_COOKIE]})
    assert out.status_code == 303, (out.status_code, out.text[:200])
    async with database.transaction() as session:
        ended = (await session.scalars(select(Session).where(Session.user_id == user_id))).all()
    assert ended and all(row.revoked_at is not None for row in ended)
    assert (await client.get(COUNTED, headers=headers)).status_code == 429  # still over
    documented = limited_app.openapi()["paths"]  # the console's sign-out is tried above
    missing = {(method, path) for method, path in resolver._REVOCATIONS
               if not path.startswith("/console/")
               and method.lower() not in documented.get(path, {})}
    assert not missing, missing


async def test_a_console_page_over_the_limit_is_an_html_page(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
) -> None:
    """A signed-in user over their limit who opens a console page (even the sign-in page)
    gets an HTML 429 page saying when to try again, with Retry-After, not problem JSON."""
    user_id, headers = await make_user(database)
    cookies = await session_cookies(database, test_keys, user_id)
    assert await _statuses(client, headers, 3) == [200, 200, 200]
    for path in ("/console/chat", "/console/login", "/console/no-such-page"):
        page = await client.get(path, cookies=cookies)
        assert page.status_code == 429, (path, page.status_code)
        assert page.headers["content-type"].startswith("text/html"), path
        assert page.headers["Retry-After"].isdigit(), path
        assert "Content-Security-Policy" in page.headers
        assert "your account&#39;s limit of 3 requests per minute; try again in" in page.text
    # The API still answers problem JSON.
    api = await client.get(COUNTED, headers=headers)
    assert api.status_code == 429
    assert api.headers["content-type"].startswith("application/problem+json")


async def test_a_key_made_with_a_throttled_key_keeps_its_limits(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """The holder of a key an administrator limited to 2 a minute makes a new key with it:
    the new key has the same limits (not none of its own) and spends the same minute (the
    making was the first request of it); a key made at sign-in (a session) or by an
    administrator starts without limits of its own."""
    user_id, key_a = await make_user(database)
    key_a_id = await _helper_key_id(database, user_id)
    put = await client.put(f"/api/v1/admin/limits/api-keys/{key_a_id}", headers=admin_headers,
                           json={"requests_per_minute": 2, "streams": 1})
    assert put.status_code == 200, put.text
    roomy = await client.put(f"/api/v1/admin/limits/users/{user_id}", headers=admin_headers,
                             json={"requests_per_minute": 100})  # only the keys' limits bite
    assert roomy.status_code == 200, roomy.text
    made = await client.post(LIST_KEYS, headers=key_a, json={"name": "escape"})
    assert made.status_code == 201, made.text
    async with database.transaction() as session:
        limits = (await session.execute(select(ApiKey.rate_limit_rpm, ApiKey.rate_limit_streams)
                                        .where(ApiKey.id == uuid.UUID(made.json()["id"])))).one()
    assert tuple(limits) == (2, 1)
    minted = {"Authorization": f"Bearer {made.json()['key']}"}
    assert await _statuses(client, minted, 2) == [200, 429]
    by_admin = await client.post(f"{LIST_KEYS}?user_id={user_id}", headers=admin_headers,
                                 json={"name": "fresh"})
    assert by_admin.status_code == 201, by_admin.text
    async with database.transaction() as session:
        fresh = (await session.execute(select(ApiKey.rate_limit_rpm).where(
            ApiKey.id == uuid.UUID(by_admin.json()["id"])))).scalar_one()
    assert fresh is None


async def test_keys_made_with_one_another_share_its_minute_and_its_later_limits(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """Minting is no way around a key's limit: the keys made with a key (and with those)
    spend one minute between them (each minted key counted a fresh one), and an
    administrator who throttles a key after it made others throttles them too."""
    user_id, key_a = await make_user(database)
    key_a_id = await _helper_key_id(database, user_id)
    roomy = await client.put(f"/api/v1/admin/limits/users/{user_id}", headers=admin_headers,
                             json={"requests_per_minute": 100})
    assert roomy.status_code == 200, roomy.text
    made = await client.post(LIST_KEYS, headers=key_a, json={"name": "child"})
    assert made.status_code == 201, made.text
    child = {"Authorization": f"Bearer {made.json()['key']}"}
    made = await client.post(LIST_KEYS, headers=child, json={"name": "grandchild"})
    assert made.status_code == 201, made.text
    grandchild = {"Authorization": f"Bearer {made.json()['key']}"}
    put = await client.put(f"/api/v1/admin/limits/api-keys/{key_a_id}", headers=admin_headers,
                           json={"requests_per_minute": 2})
    assert put.status_code == 200, put.text
    assert put.json()["requests_per_minute"] == 2
    assert await _statuses(client, key_a, 1) == [200]
    assert await _statuses(client, child, 1) == [200]
    for holder in (key_a, child, grandchild):  # the family's minute is spent
        assert await _statuses(client, holder, 1) == [429]
    async with database.transaction() as session:
        audited = await session.scalar(text(
            "SELECT changes->>'keys_made_with_it' FROM audit_logs "
            "WHERE action = 'rate_limit.updated' AND resource_id = :k"), {"k": str(key_a_id)})
    assert audited == "2"


async def test_two_app_instances_share_the_count(
    tmp_path: Path, database: Database, test_keys: KeyMaterial,
) -> None:
    """Two apps with their own engines and limiters on one database: one budget."""
    _, headers = await make_user(database)
    settings = limit_settings(tmp_path, rate_limit_requests_per_minute=4)
    async with AsyncExitStack() as stack:
        clients = []
        for port in (50101, 50102):
            db = create_database(settings, url=database.url)
            stack.push_async_callback(db.dispose)
            app = create_app(settings, database=db, keys=test_keys, configure_logs=False)
            stack.push_async_callback(dispose_limiter, app)
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", port))
            clients.append(await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://roost.test")))
        one, two = clients
        # Concurrent requests from both instances: exactly 4 pass.
        answers = await asyncio.gather(*(c.get(COUNTED, headers=headers)
                                          for c in (one, two, one, two, one, two)))
        assert sorted(a.status_code for a in answers) == [200] * 4 + [429] * 2
        assert (await one.get(COUNTED, headers=headers)).status_code == 429
        assert (await two.get(COUNTED, headers=headers)).status_code == 429


async def _burst(bases: list[str], headers: Headers, n: int) -> list[httpx.Response]:
    """``n`` requests at once, spread over the processes at ``bases``."""
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=n)) as http:
        return list(await asyncio.gather(*(
            http.get(bases[i % len(bases)] + COUNTED, headers=headers) for i in range(n))))


def _tally(answers: list[httpx.Response]) -> dict[int, int]:
    """How many of each status; every 429 a problem with a Retry-After of 1-60 s that its
    body repeats."""
    counts: dict[int, int] = {}
    for a in answers:
        counts[a.status_code] = counts.get(a.status_code, 0) + 1
        if a.status_code == 429:
            retry = a.headers.get("Retry-After", "")
            assert retry.isdigit() and 1 <= int(retry) <= 60, retry
            assert a.headers["content-type"].startswith("application/problem+json")
            assert a.json()["retry_after_s"] == int(retry), a.text
    return counts


async def test_bursts_across_two_server_processes_let_exactly_the_limit_through(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
    test_keys: KeyMaterial, admin_headers: Headers,
) -> None:
    """Two ``roost serve`` processes, 10 requests a minute: bursts of concurrent requests
    spread over both get exactly the limit in force, a key's own, none for a user made
    unlimited; a change through one process applies to the next burst through the other,
    for a caller that process remembers too."""
    env = serve_env(pg_server, db_name, tmp_path / "data", test_keys,
                    ROOST_RATE_LIMIT_REQUESTS_PER_MINUTE="10")
    _, plain = await make_user(database)
    keyed_id, keyed = await make_user(database)
    open_id, opened = await make_user(database)
    lowered_id, lowered = await make_user(database)
    async with database.transaction() as session:
        key_id = await session.scalar(select(ApiKey.id).where(ApiKey.user_id == keyed_id))
    with roost_server(env) as one, roost_server(env) as two:
        bases = [one.base_url, two.base_url]
        async with httpx.AsyncClient(timeout=30, headers=admin_headers) as admin:

            async def put(base: str, path: str, rpm: int | None) -> None:
                answer = await admin.put(f"{base}/api/v1/admin/limits/{path}",
                                         json={"requests_per_minute": rpm})
                assert answer.status_code == 200, answer.text

            await put(one.base_url, f"api-keys/{key_id}", 7)
            await put(one.base_url, f"users/{open_id}", 0)
            assert _tally(await _burst(bases, plain, 30)) == {200: 10, 429: 20}
            assert _tally(await _burst(bases, keyed, 30)) == {200: 7, 429: 23}
            assert _tally(await _burst(bases, opened, 30)) == {200: 30}
            await put(two.base_url, f"users/{open_id}", None)  # back to the default
            assert _tally(await _burst(bases, opened, 30)) == {200: 10, 429: 20}
            # Process two remembers this caller; the limit is lowered through process one.
            assert (await admin.get(f"{two.base_url}{COUNTED}", headers=lowered)
                    ).status_code == 200
            await put(one.base_url, f"users/{lowered_id}", 2)
            assert _tally(await _burst([two.base_url], lowered, 10)) == {200: 1, 429: 9}
    for process in (one, two):
        assert "Traceback" not in process.output, process.output[-3000:]


async def test_admin_override_and_back_to_the_default(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    user_id, headers = await make_user(database)
    url = f"/api/v1/admin/limits/users/{user_id}"
    assert (await client.put(url, headers=admin_headers, json={"requests_per_minute": 0})).json()[
        "effective_requests_per_minute"] == 0  # 0 = unlimited
    assert await _statuses(client, headers, 6) == [200] * 6
    overview = (await client.get("/api/v1/admin/limits", headers=admin_headers)).json()
    assert overview["defaults"] == {"requests_per_minute": 3, "streams": 0, "lease_s": 60}
    assert [(o["kind"], o["id"], o["requests_per_minute"]) for o in overview["overrides"]] == [
        ("user", str(user_id), 0)]
    # Back to the default (3 a minute); what the unlimited requests did is not charged.
    back = await client.put(url, headers=admin_headers, json={})
    assert back.status_code == 200
    assert back.json()["requests_per_minute"] is None
    assert back.json()["effective_requests_per_minute"] == 3
    assert await _statuses(client, headers, 4) == [200, 200, 200, 429]
    assert (await client.get(url, headers=admin_headers)).json()["effective_streams"] == 0
    async with database.transaction() as session:
        changes = (await session.execute(text(
            "SELECT changes FROM audit_logs WHERE action = 'rate_limit.updated' "
            "ORDER BY seq"))).scalars().all()
    assert [c["after"]["requests_per_minute"] for c in changes] == [0, None]


# A route's answer when it succeeds.  The first three take one statement for a caller the
# process remembers (roost.identity.resolver.known_caller), which asks the limiter before
# the database confirms the caller's limits; the last takes the usual path.
LIFTED_ROUTES = {
    "chat history": ("GET", "{messages}", None, 200),
    "chat message stored": ("POST", "{messages}", {"content": "hi", "reply": False}, 201),
    "knowledge text search": ("POST", "/api/v1/knowledge/search",
                              {"query": "hi", "mode": "text"}, 200),
    "your account": ("GET", COUNTED, None, 200),
}


@pytest.mark.parametrize("route", LIFTED_ROUTES)
async def test_a_limit_lifted_by_an_administrator_applies_on_the_next_request(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: Headers,
    route: str,
) -> None:
    """3 a minute; the user spends them, an administrator lifts the user's limit (0 =
    unlimited): the very next request passes."""
    method, url, body, ok = LIFTED_ROUTES[route]
    user_id, headers = await make_user(database)
    chat = await client.post("/api/v1/chat/sessions", headers=headers, json={})  # one of three
    assert chat.status_code == 201, chat.text
    url = url.format(messages=f"/api/v1/chat/sessions/{chat.json()['id']}/messages")

    async def call() -> int:
        return (await client.request(method, url, headers=headers, json=body)).status_code

    assert [await call() for _ in range(3)] == [ok, ok, 429]
    put = await client.put(f"/api/v1/admin/limits/users/{user_id}", headers=admin_headers,
                           json={"requests_per_minute": 0})
    assert put.status_code == 200 and put.json()["effective_requests_per_minute"] == 0
    assert [await call() for _ in range(3)] == [ok, ok, ok]


async def test_a_raised_or_lowered_limit_counts_the_minutes_requests_at_the_new_pace(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """1 a minute, spent, raised to 5: the request already made counts as one of five, so
    four more pass at once (the old limit's spacing kept it refused for a minute). Then
    lowered to 1 with one request made: refused for about a minute, never longer."""
    user_id, headers = await make_user(database)
    url = f"/api/v1/admin/limits/users/{user_id}"

    async def limit(rpm: int) -> None:
        put = await client.put(url, headers=admin_headers, json={"requests_per_minute": rpm})
        assert put.status_code == 200 and put.json()["effective_requests_per_minute"] == rpm

    await limit(1)
    assert await _statuses(client, headers, 2) == [200, 429]
    await limit(5)
    assert await _statuses(client, headers, 5) == [200, 200, 200, 200, 429]

    other_id, other = await make_user(database)
    url = f"/api/v1/admin/limits/users/{other_id}"
    await limit(5)
    assert await _statuses(client, other, 1) == [200]
    await limit(1)
    refused = await client.get(COUNTED, headers=other)
    assert refused.status_code == 429
    assert 50 <= int(refused.headers["retry-after"]) <= 60, refused.headers


async def test_only_administrators_set_limits_and_bad_input_is_422(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    user_id, headers = await make_user(database)
    url = f"/api/v1/admin/limits/users/{user_id}"
    mine = await client.put(url, headers=headers, json={"requests_per_minute": 1000})
    assert mine.status_code == 403 and mine.json()["type"].endswith("/forbidden")
    assert (await client.get("/api/v1/admin/limits", headers=headers)).status_code == 403
    for body in ({"requests_per_minute": -1}, {"streams": "many"}, {"requests_per_minute": 1.5},
                 {"rpm": 5}, {"streams": True}, {"requests_per_minute": 10**9}):
        bad = await client.put(url, headers=admin_headers, json=body)
        assert bad.status_code == 422, (body, bad.text)
        assert bad.json()["type"].endswith("/validation-error")
    assert (await client.put(f"/api/v1/admin/limits/groups/{user_id}", headers=admin_headers,
                             json={})).status_code == 422
    assert (await client.put("/api/v1/admin/limits/users/not-a-uuid", headers=admin_headers,
                             json={})).status_code == 422
    missing = await client.put(f"/api/v1/admin/limits/api-keys/{uuid.uuid4()}",
                               headers=admin_headers, json={"streams": 1})
    assert missing.status_code == 404


async def test_without_limits_no_round_trip_is_added(
    tmp_path: Path, database: Database, test_keys: KeyMaterial,
) -> None:
    """Nothing configured: the limiter is never opened and no statement is added."""
    app = create_app(limit_settings(tmp_path), database=database, keys=test_keys,
                     configure_logs=False)
    _, headers = await make_user(database)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50103))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
        await client.get(COUNTED, headers=headers)  # warm: types, prepared statements
        async with statements(database) as sent:
            assert (await client.get(COUNTED, headers=headers)).status_code == 200
    assert not any("roost_rate_take" in s or "stream_leases" in s for s in sent)
    assert getattr(app.state, "rate_limiter", None) is None


# --- concurrent streams -----------------------------------------------------------------


async def _open_stream(http: httpx.AsyncClient, headers: Headers, stack: AsyncExitStack
                       ) -> httpx.Response:
    """A /v1 streamed completion, open until ``stack`` closes it."""
    response = await stack.enter_async_context(http.stream(
        "POST", "/v1/chat/completions", headers=headers,
        json={"model": "stub-model", "stream": True,
              "messages": [{"role": "user", "content": "hold the line"}]}))
    if response.status_code == 200:
        lines = response.aiter_lines()  # kept: a dropped iterator closes the response
        stack.push_async_callback(lines.aclose)
        first = await anext(lines)  # the stream has started
        assert first.startswith("data: ")
    return response


async def test_concurrent_streams_are_held_refused_and_released(
    tmp_path: Path, database: Database, test_keys: KeyMaterial, stub: StubServer,
    admin_headers: Headers,
) -> None:
    settings = limit_settings(tmp_path)
    app = create_app(settings, database=database, keys=test_keys, configure_logs=False)
    user_id, headers = await make_user(database)
    stub.script(Reply(" ".join(["slow"] * 200), chunk_delay_ms=300, times=None))
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        added = await http.post("/api/v1/llm/providers", headers=admin_headers, json={
            "name": "stub", "type": "openai", "base_url": stub.base_url, "model": "stub-model"})
        assert added.status_code == 201, added.text
        put = await http.put(f"/api/v1/admin/limits/users/{user_id}", headers=admin_headers,
                             json={"streams": 2})
        assert put.json()["effective_streams"] == 2
        subject = f"u:{user_id}"
        async with AsyncExitStack() as first:
            async with AsyncExitStack() as second:
                assert (await _open_stream(http, headers, first)).status_code == 200
                assert (await _open_stream(http, headers, second)).status_code == 200
                assert await live_leases(database, subject) == 2
                third = await http.post("/v1/chat/completions", headers=headers, json={
                    "model": "stub-model", "stream": True,
                    "messages": [{"role": "user", "content": "one too many"}]})
                assert third.status_code == 429
                assert third.json()["error"]["type"] == "rate_limit_error"
                assert int(third.headers["Retry-After"]) >= 1
                # A request that does not stream is not a stream.
                plain = await http.get(COUNTED, headers=headers)
                assert plain.status_code == 200
            # The client closed the second stream: its slot comes back.
            await until(lambda: live_leases(database, subject), 1)
            again = await _open_stream(http, headers, first)
            assert again.status_code == 200
        await until(lambda: live_leases(database, subject), 0)


async def test_a_crashed_holders_leases_expire(
    tmp_path: Path, database: Database,
) -> None:
    """Leases are renewed while held; one whose process died stops counting at expiry."""
    limiter = Limiter(database.url, limit_settings(tmp_path, rate_limit_streams=1))
    user_id = uuid.uuid4()
    principal = Principal(user_id=user_id, is_admin=False, kind="session")
    limits = RequestLimits.build(principal, limit_settings(tmp_path, rate_limit_streams=1),
                                 user_rpm=None, user_streams=None, key_rpm=None,
                                 key_streams=None)
    assert limits is not None and limits.streams == ((f"u:{user_id}", 1),)
    try:
        lease = await limiter.acquire_stream(limits)
        assert lease is not None
        with pytest.raises(TooManyRequests):
            await limiter.acquire_stream(limits)
        # The holder dies without releasing (its renewals stop); time passes beyond expiry.
        assert lease._renewer is not None
        lease._renewer.cancel()
        async with database.transaction() as session:
            await session.execute(text(
                "UPDATE stream_leases SET expires_at = now() - interval '1 second' "
                "WHERE id = :id"), {"id": lease.id})
        async with database.transaction() as session:  # identity's hourly clean-up
            assert (await cleanup_expired(session)).rate_limit_rows == 1
        replacement = await limiter.acquire_stream(limits)
        assert replacement is not None
        await replacement.release()
        assert await live_leases(database, f"u:{user_id}") == 0
    finally:
        await limiter.dispose()


async def test_cli_sets_and_shows_limits(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, pg_server: PgTestServer,
    db_name: str, tmp_path: Path,
) -> None:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "cli-data"),
           "ROOST_RATE_LIMIT_REQUESTS_PER_MINUTE": "3"}
    user_id, headers = await make_user(database, username="limited-lou")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_roost("limits", *args, env=env)

    set_ = await asyncio.to_thread(run, "set", "--user", "limited-lou", "--rpm", "2",
                                   "--streams", "4")
    assert set_.returncode == 0, set_.stderr
    assert "limited-lou" in set_.stdout and str(user_id) in set_.stdout
    assert await _statuses(client, headers, 3) == [200, 200, 429]
    shown = await asyncio.to_thread(run, "show")
    assert shown.returncode == 0, shown.stderr
    assert "3 requests/min" in shown.stdout
    row = next(line for line in shown.stdout.splitlines() if "limited-lou" in line)
    assert " 2 " in row and " 4 " in row
    # Back to the default for requests; streams kept.
    back = await asyncio.to_thread(run, "set", "--user", "limited-lou", "--rpm", "default")
    assert back.returncode == 0, back.stderr
    assert "3 (default)" in back.stdout and " 4 " in back.stdout
    bad = (("set", "--user", "limited-lou", "--rpm", "-5"),
           ("set", "--user", "limited-lou", "--key", "abc", "--rpm", "1"),
           ("set", "--user", "nobody-here", "--rpm", "1"))
    for args, refused in zip(bad, await asyncio.gather(
            *(asyncio.to_thread(run, *args) for args in bad)), strict=True):
        assert refused.returncode == 1, (args, refused.stdout)
        assert refused.stderr.strip() and "Traceback" not in refused.stderr


async def test_every_kind_of_stream_takes_a_slot_before_any_work(
    limited_app: FastAPI, client: httpx.AsyncClient, database: Database, tmp_path: Path,
    admin_headers: Headers,
) -> None:
    """Chat streams and run event streams are refused while the user's one slot is held
    elsewhere (another process: its own limiter), and nothing is stored."""
    user_id, headers = await make_user(database)
    assert (await client.put(f"/api/v1/admin/limits/users/{user_id}", headers=admin_headers,
                             json={"streams": 1, "requests_per_minute": 0})).status_code == 200
    chat = await client.post("/api/v1/chat/sessions", headers=headers, json={"title": "t"})
    assert chat.status_code == 201, chat.text
    messages = f"/api/v1/chat/sessions/{chat.json()['id']}/messages"
    elsewhere = Limiter(database.url, limit_settings(tmp_path))
    limits = RequestLimits.build(Principal(user_id=user_id, is_admin=False, kind="session"),
                                 limit_settings(tmp_path), user_rpm=0, user_streams=1,
                                 key_rpm=None, key_streams=None)
    assert limits is not None
    try:
        held = await elsewhere.acquire_stream(limits)
        assert held is not None
        refused = await client.post(messages, headers=headers,
                                    json={"content": "hello", "stream": True})
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "5"
        events = await client.get(f"/api/v1/runs/{uuid.uuid4()}/events", headers=headers)
        assert events.status_code == 429
        assert (await client.get(messages, headers=headers)).json()["items"] == []
        # What does not stream is not refused.
        stored = await client.post(messages, headers=headers,
                                   json={"content": "just store it", "reply": False})
        assert stored.status_code == 201, stored.text
        await held.release()
        # The slot is free again: the run's stream gets as far as "no such run", and gives
        # its slot back when the answer is sent.
        missing = await client.get(f"/api/v1/runs/{uuid.uuid4()}/events", headers=headers)
        assert missing.status_code == 404
        assert await live_leases(database, f"u:{user_id}") == 0
    finally:
        await elsewhere.dispose()
