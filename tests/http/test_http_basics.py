"""Health, problem JSON, request ids, body limits and metrics."""

from __future__ import annotations

import inspect
import io
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI, Response
from fastapi.dependencies.models import Dependant
from pydantic import BaseModel, Field
from sqlalchemy import text
from tests.support.routes import api_routes

from roost.app import create_app
from roost.config import Settings
from roost.db.engine import Database, create_database
from roost.db.migrate import downgrade
from roost.errors import Conflict
from roost.http.problems import problem
from roost.http.routing import MAX_JSON_DEPTH, RoostRoute, RoostRouter
from roost.keyfiles import KeyMaterial
from roost.logging import configure_logging

PROBLEM = "application/problem+json"


class Echo(BaseModel):
    name: str = Field(max_length=20)
    count: int


@pytest.fixture
def echo_app(app: FastAPI) -> FastAPI:
    """The app plus one JSON-body route, to exercise body parsing and validation."""

    @app.post("/_test/echo")
    async def echo(body: Echo) -> Echo:
        return body

    return app


async def test_health_ok(client: httpx.AsyncClient) -> None:
    reply = await client.get("/health")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "database": "ok", "migrations": "head"}


async def test_health_503_when_schema_is_behind(
    client: httpx.AsyncClient, database: Database
) -> None:
    await downgrade(database.engine, "base")
    reply = await client.get("/health")
    assert reply.status_code == 503
    body = reply.json()
    assert body["migrations"] == "behind" and "roost db upgrade" in body["reason"]


async def test_health_503_when_a_newer_roost_migrated_the_schema(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A rolled-back Roost on a database a newer one migrated: not "behind" (upgrading
    the database cannot help), "newer", and the reason says to upgrade Roost."""
    async with database.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    reply = await client.get("/health")
    assert reply.status_code == 503
    body = reply.json()
    assert body["migrations"] == "newer" and "upgrade Roost" in body["reason"], body


@pytest.fixture
async def down_client(
    test_settings: Settings, test_keys: KeyMaterial
) -> AsyncIterator[httpx.AsyncClient]:
    # Nothing listens on port 9 (discard): connections are refused at once.
    settings = test_settings.model_copy(update={"db_connect_timeout_s": 2.0})
    db = create_database(settings, url=Database_url_unreachable())
    application = create_app(settings, database=db, keys=test_keys, configure_logs=False)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as c:
        yield c
    await db.dispose()


def Database_url_unreachable():
    from sqlalchemy import make_url

    return make_url("postgresql+asyncpg://nobody@127.0.0.1:9/none")


async def test_database_down_gives_503_not_a_hang(
    down_client: httpx.AsyncClient, test_keys: KeyMaterial
) -> None:
    health = await down_client.get("/health")
    assert health.status_code == 503
    assert health.json()["database"] in ("unreachable", "timeout")

    reply = await down_client.get(
        "/api/v1/audit/logs", headers={"Authorization": f"Bearer {test_keys.admin_token}"}
    )
    assert reply.status_code == 503
    assert reply.headers["content-type"] == PROBLEM
    assert "database" in reply.json()["detail"]


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    reply = await client.get("/no/such/route")
    assert reply.status_code == 404
    assert reply.headers["content-type"] == PROBLEM
    body = reply.json()
    assert body["status"] == 404 and body["title"] == "Not found"
    assert "/no/such/route" in body["detail"]
    assert body["type"].startswith("https://")


async def test_wrong_method_is_a_problem(client: httpx.AsyncClient) -> None:
    reply = await client.delete("/health")
    assert reply.status_code == 405
    assert reply.headers["content-type"] == PROBLEM


async def test_malformed_json_is_400(echo_app: FastAPI, client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/_test/echo", content=b'{"name": "x", "count": ', headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400
    assert reply.headers["content-type"] == PROBLEM
    assert "not valid JSON" in reply.json()["detail"]


async def test_lone_surrogates_are_malformed_json(
    echo_app: FastAPI, client: httpx.AsyncClient
) -> None:
    # json.loads accepts "\ud800"; the str then cannot be encoded (was a 500 on answering).
    reply = await client.post("/_test/echo", content=b'{"name": "a\\ud800", "count": 1}',
                              headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"] == PROBLEM
    body = reply.json()
    assert "lone UTF-16 surrogate" in body["detail"] and "string at name" in body["detail"]
    assert body["request_id"] == reply.headers["x-request-id"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1E+400",
                                    "1" + "0" * 400 + ".5"])
async def test_numbers_json_cannot_carry_are_malformed_json(
    echo_app: FastAPI, client: httpx.AsyncClient, number: str
) -> None:
    """NaN and Infinity are not JSON, and 1e400 reads as infinity: Python's json took all
    three (a prompt rendered "nan"; jsonb refuses them later).  A 400, as malformed JSON."""
    reply = await client.post("/_test/echo", content=f'{{"name": "x", "count": {number}}}',
                              headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"] == PROBLEM
    detail = reply.json()["detail"]
    assert "not valid JSON" in detail and "finite" in detail


async def test_json_nested_deeper_than_the_limit_is_malformed(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Arrays and objects nest at most MAX_JSON_DEPTH (100) levels in a body: deeper was
    a 500 when a route answered with the value (metadata 300 deep could be stored, not
    serialized), and far deeper the decoder ran out of stack."""

    @app.post("/_test/any")
    async def anything(body: dict[str, Any]) -> dict[str, Any]:
        return body

    def nested(levels: int) -> str:  # the document is level 1: {"d": [[...[1]...]]}
        return '{"d": ' + "[" * (levels - 1) + "1" + "]" * (levels - 1) + "}"

    json_headers = {"content-type": "application/json"}
    deepest = await client.post("/_test/any", content=nested(MAX_JSON_DEPTH), headers=json_headers)
    assert deepest.status_code == 200, deepest.text
    assert deepest.json() == json.loads(nested(MAX_JSON_DEPTH))
    for levels in (MAX_JSON_DEPTH + 1, 300, 30_000):  # 30,000: past the decoder's stack
        reply = await client.post("/_test/any", content=nested(levels), headers=json_headers)
        assert reply.status_code == 400, (levels, reply.text)
        assert reply.headers["content-type"] == PROBLEM
        assert f"nested deeper than {MAX_JSON_DEPTH} levels" in reply.json()["detail"]
    wide = {"items": [[{"a": [i]}] for i in range(500)]}  # many brackets, shallow: fine
    assert (await client.post("/_test/any", json=wide)).json() == wide


async def test_v1_answers_json_it_refuses_in_openai_shape(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """The OpenAI-compatible routes decode bodies as strictly, answering OpenAI's 400."""
    headers = {**admin_headers, "content-type": "application/json"}
    messages = '[{"role": "user", "content": "hi"}]'
    for extra, words in (('"temperature": NaN', "finite"), ('"temperature": 1e400', "finite"),
                         ('"metadata": ' + "[" * 200 + "]" * 200, "nested deeper")):
        body = f'{{"model": "m", "messages": {messages}, {extra}}}'
        reply = await client.post("/v1/chat/completions", content=body, headers=headers)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["code"] == "invalid_json" and words in error["message"], error


def test_every_route_decodes_json_bodies_strictly(app: FastAPI) -> None:
    routes = list(api_routes(app.routes))
    assert len(routes) > 50
    loose = [route.path for route in routes if not isinstance(route, RoostRoute)]
    assert not loose, f"routers must pass route_class=RoostRoute (http/routing.py): {loose}"


def test_every_router_is_a_roost_router() -> None:
    from roost.app import routers

    loose = [router for router in routers() if not isinstance(router, RoostRouter)]
    assert not loose, "routers must be RoostRouter (http/routing.py)"


@pytest.mark.parametrize("root_path", ["", "/roost"])
async def test_router_prefix_guard_answers_as_fastapi_would(root_path: str) -> None:
    """A RoostRouter skips its routes for paths outside their literal prefixes; what the
    app answers is unchanged, behind a proxy's root path too: the route, its path
    parameters, 405 with Allow, 404, and the trailing-slash redirect."""
    first = RoostRouter(prefix="/api/v1/a")
    second = RoostRouter(prefix="/api/v1/b")

    @first.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"router": "a", "item": item_id}

    @second.get("/items/{item_id}")
    async def other_item(item_id: int) -> dict[str, Any]:
        return {"router": "b", "item": item_id}

    @second.post("/things/")
    async def things() -> dict[str, Any]:
        return {"router": "b", "things": True}

    application = FastAPI()
    application.include_router(first)
    application.include_router(second)
    transport = httpx.ASGITransport(app=application, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get(f"{root_path}/api/v1/b/items/7")).json() == {
            "router": "b", "item": 7}
        assert (await client.get(f"{root_path}/api/v1/a/items/3")).json() == {
            "router": "a", "item": 3}
        wrong = await client.delete(f"{root_path}/api/v1/b/items/7")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
        assert (await client.get(f"{root_path}/api/v1/c/items/7")).status_code == 404
        redirect = await client.post(f"{root_path}/api/v1/b/things")
        assert redirect.status_code == 307
        assert redirect.headers["location"].endswith("/api/v1/b/things/")


def _sync_calls(dependant: Dependant) -> Iterator[str]:
    for sub in dependant.dependencies:
        call = sub.call
        if call is not None and not (inspect.iscoroutinefunction(call)
                                     or inspect.isasyncgenfunction(call)):
            yield getattr(call, "__qualname__", repr(call))
        yield from _sync_calls(sub)


def test_no_route_or_dependency_runs_in_the_thread_pool(app: FastAPI) -> None:
    """FastAPI runs a plain ``def`` endpoint or dependency in its thread pool: a thread
    hop (tens of microseconds, more under load) per call per request.  Every one is
    ``async def``; blocking work inside goes to ``anyio.to_thread`` explicitly."""
    routes = list(api_routes(app.routes))
    sync = {f"{route.path}: {name}" for route in routes for name in _sync_calls(route.dependant)}
    sync |= {f"{route.path}: endpoint" for route in routes
             if not inspect.iscoroutinefunction(route.endpoint)}
    assert not sync, sorted(sync)


async def test_wrong_types_are_422_without_echoing_input(
    echo_app: FastAPI, client: httpx.AsyncClient
) -> None:
    reply = await client.post("/_test/echo", json={"name": "s3cr3t-value-too-long-xx", "count": "x"})
    assert reply.status_code == 422
    body = reply.json()
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "name"), ("body", "count")}
    assert "s3cr3t" not in reply.text, "validation errors must not echo the input"
    assert "Traceback" not in reply.text


async def test_oversized_body_is_413(echo_app: FastAPI, client: httpx.AsyncClient) -> None:
    big = json.dumps({"name": "x", "count": 1, "pad": "y" * 100_000}).encode()
    reply = await client.post("/_test/echo", content=big, headers={"content-type": "application/json"})
    assert reply.status_code == 413
    assert reply.headers["content-type"] == PROBLEM

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(10):
            yield b" " * 10_000

    streamed = await client.post(
        "/_test/echo", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


async def test_request_id_is_echoed_generated_and_logged(
    echo_app: FastAPI, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", json=True)
    try:
        given = await client.get("/health", headers={"X-Request-ID": "trace-abc.123"})
        assert given.headers["x-request-id"] == "trace-abc.123"

        made = await client.get("/health")
        assert len(made.headers["x-request-id"]) == 32

        hostile = await client.get("/health", headers={"X-Request-ID": "x" * 500})
        assert hostile.headers["x-request-id"] != "x" * 500
        # 64 at most: the id is the audit records' correlation_id (docs/architecture.md)
        longest = await client.get("/health", headers={"X-Request-ID": "x" * 64})
        assert longest.headers["x-request-id"] == "x" * 64
        too_long = await client.get("/health", headers={"X-Request-ID": "x" * 65})
        assert too_long.headers["x-request-id"] != "x" * 65

        problem = await client.get("/missing", headers={"X-Request-ID": "req-for-problem"})
        assert problem.json()["request_id"] == "req-for-problem"
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "trace-abc.123"]
    assert mine and mine[-1]["event"] == "request" and mine[-1]["status"] == 200


async def test_metrics_count_requests_by_route_template(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await client.get("/health")
    await client.get("/api/v1/audit/logs", headers=admin_headers)
    text = (await client.get("/metrics")).text
    assert 'roost_http_requests_total{method="GET",route="/health",status="200"}' in text
    assert 'route="/api/v1/audit/logs"' in text
    assert "roost_http_request_duration_seconds_bucket" in text


async def test_invented_methods_add_no_metric_series(client: httpx.AsyncClient) -> None:
    """The method label was the raw request method: 200 invented methods (each a 405) on
    /health added 200 series (and 200 x 14 histogram buckets) to /metrics, for anyone
    without signing in. A method HTTP does not define is counted as ``_OTHER``."""
    for i in range(200):
        assert (await client.request(f"PROBE{i}", "/health")).status_code == 405
    text = (await client.get("/metrics")).text
    assert not re.findall(r'method="PROBE\d+"', text)
    assert 'roost_http_requests_total{method="_OTHER",route="/health",status="405"} 200.0' \
        in text, [ln for ln in text.splitlines() if "_OTHER" in ln]


async def test_openapi_and_docs_are_served(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["info"]["title"] == "Roost"
    assert "/health" in spec["paths"] and "/api/v1/audit/logs" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


def test_logs_go_to_the_stderr_of_the_moment_not_the_one_configured() -> None:
    """Configured while stderr was another stream, since closed (a test's capture, a
    redirect): log lines still reach the current stderr, without logging's error report."""
    real = sys.stderr
    first = io.StringIO()
    sys.stderr = first
    try:
        configure_logging("info", json=True)
    finally:
        sys.stderr = real
    first.close()
    second = io.StringIO()
    sys.stderr = second
    try:
        logging.getLogger("roost.test").warning("stdlib after the swap")
        structlog.get_logger().warning("structlog after the swap")
    finally:
        sys.stderr = real
        structlog.reset_defaults()
    out = second.getvalue()
    assert "stdlib after the swap" in out and "structlog after the swap" in out
    assert "Logging error" not in out


@pytest.mark.parametrize(("path", "target"), [("/console", "/console/"),
                                              ("/api/v1/auth/me/", "/api/v1/auth/me"),
                                              ("/console?next=x", "/console/?next=x"),
                                              # The console's catch-all matched these
                                              # first: its 404 page, not the page.
                                              ("/console/chat/", "/console/chat"),
                                              ("/console/admin/users/?q=a",
                                               "/console/admin/users?q=a")])
async def test_trailing_slash_redirects_are_paths_not_the_host_header(
    client: httpx.AsyncClient, path: str, target: str,
) -> None:
    """Starlette's slash redirect would build ``http://<Host header>/...``: a spoofed Host
    (or a proxy passing one along) must not choose where the browser goes."""
    reply = await client.get(path, headers={"Host": "evil.example"})
    assert reply.status_code == 307
    assert reply.headers["location"] == target
    unparsable = await client.get(path, headers={"Host": "[evil"})  # no URL holds it
    assert unparsable.status_code == 307


@pytest.mark.parametrize("path", ["/console/no-such-page/", "/console//evil.example/",
                                  "/console/%2F%2Fevil.example/"])
async def test_a_console_path_no_page_serves_is_the_404_page_with_or_without_a_slash(
    client: httpx.AsyncClient, path: str,
) -> None:
    reply = await client.get(path)
    assert reply.status_code == 404, (path, reply.headers.get("location"))


async def test_api_answers_are_not_stored_by_caches(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str],
) -> None:
    """Every /api and /v1 answer, success or problem, says ``no-store``; a route's own
    Cache-Control stands, and the console's static files keep theirs."""

    @app.get("/api/_test/cached")
    async def cached() -> Response:
        return Response("{}", media_type="application/json",
                        headers={"Cache-Control": "private, max-age=60"})

    own = await client.get("/api/_test/cached")
    assert own.headers.get_list("cache-control") == ["private, max-age=60"]
    for path, headers in (("/api/v1/auth/me", admin_headers), ("/api/v1/auth/me", {}),
                          ("/api/v1/no/such/thing", admin_headers), ("/v1/models", {}),
                          ("/v1/models", admin_headers)):
        reply = await client.get(path, headers=headers)
        assert reply.headers["cache-control"] == "no-store", (path, reply.status_code)
    static = await client.get("/console/static/console.css")
    assert static.status_code == 200 and static.headers["cache-control"] == "public, max-age=3600"
    health = await client.get("/health")
    assert "cache-control" not in health.headers


def test_an_errors_extra_members_never_replace_the_problems_own() -> None:
    """A domain error whose ``extra`` names a member of the answer itself (an account's
    ``status``, say) keeps the problem's ``status`` and ``detail``: it was a TypeError,
    so a 500, when ``extra`` was spread as keyword arguments."""
    error = Conflict("the account is suspended",
                     extra={"status": "suspended", "detail": "x", "field": "user"})
    answer = problem(error.status, error.detail, title=error.title,
                     type_slug=error.type_slug, extra=error.extra)
    body = json.loads(bytes(answer.body))
    assert (answer.status_code, body["status"], body["detail"], body["field"]) == (
        409, 409, "the account is suspended", "user")
