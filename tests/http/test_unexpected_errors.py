"""Unexpected errors over a real uvicorn server and one keep-alive connection: a 500 in the
right shape with the request id (body and X-Request-ID), and the connection survives."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import make_url
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send
from tests.support.server import free_port

from roost.app import create_app
from roost.config import Settings
from roost.db.engine import create_database
from roost.keyfiles import KeyMaterial


class _Broken(Exception):
    pass


class _BrokenMiddleware:
    """A middleware (inside the request-id one) that fails on one path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/_test/middleware-boom":
            raise _Broken("middleware failed")
        await self.app(scope, receive, send)


def _with_broken_routes(app: FastAPI) -> FastAPI:
    @app.get("/_test/boom")
    async def boom() -> None:
        raise _Broken("route failed")

    @app.get("/v1/_test/boom")
    async def v1_boom() -> None:
        raise _Broken("route failed under /v1")

    # Appended last = innermost, so it runs inside RequestContextMiddleware.
    app.user_middleware.append(Middleware(_BrokenMiddleware))
    return app


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn server in a thread (lifespan off: no database needed)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _local_port(resp: httpx.Response) -> int:
    return int(resp.extensions["network_stream"].get_extra_info("client_addr")[1])


def _exercise(base: str) -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(base_url=base, limits=limits, timeout=10) as http:
        first = http.get("/metrics")
        assert first.status_code == 200
        port = _local_port(first)

        boom = http.get("/_test/boom", headers={"X-Request-ID": "boom-1"})
        assert boom.status_code == 500
        assert boom.headers["content-type"] == "application/problem+json"
        assert boom.headers["x-request-id"] == "boom-1"
        problem = boom.json()
        assert problem["status"] == 500 and problem["request_id"] == "boom-1"
        assert "route failed" not in boom.text and "Traceback" not in boom.text

        again = http.get("/metrics")  # same keep-alive connection, not reset
        assert again.status_code == 200 and _local_port(again) == port

        generated = http.get("/_test/boom")  # no id sent: one is generated, in both places
        assert generated.status_code == 500
        assert generated.json()["request_id"] == generated.headers["x-request-id"]

        v1 = http.get("/v1/_test/boom")
        assert v1.status_code == 500
        error = v1.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "internal_error"
        assert error["request_id"] == v1.headers["x-request-id"]

        middleware = http.get("/_test/middleware-boom")
        assert middleware.status_code == 500
        assert middleware.json()["request_id"] == middleware.headers["x-request-id"]

        last = http.get("/metrics")
        assert last.status_code == 200 and _local_port(last) == port


async def test_unexpected_errors_keep_the_connection_and_carry_the_request_id(
    app: FastAPI,
) -> None:
    served = _with_broken_routes(app)

    def run() -> None:
        with _serve(served) as base:
            _exercise(base)

    await asyncio.to_thread(run)


async def test_a_database_whose_socket_is_gone_is_503_and_a_missing_file_is_500(
    tmp_path: Path, test_keys: KeyMaterial,
) -> None:
    """The embedded PostgreSQL stopped (its Unix socket gone: FileNotFoundError while the
    driver connects): every route that needs it answers 503 with Retry-After, as
    /health does (docs/architecture.md), not a 500.  A FileNotFoundError that is no
    database's stays a 500."""
    socket_dir = tmp_path / "no-socket-here"
    settings = Settings(data_dir=tmp_path / "data", log_json=True,
                        database_url=SecretStr(f"postgresql://postgres@/roost?host={socket_dir}"))
    database = create_database(
        settings, url=make_url(f"postgresql+asyncpg://postgres@/roost?host={socket_dir}"))
    app = create_app(settings, database=database, keys=test_keys, configure_logs=False)

    @app.get("/_test/missing-file")
    async def missing_file() -> None:
        (tmp_path / "no-such-upload").read_bytes()

    headers = {"Authorization": f"Bearer {test_keys.admin_token}"}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://roost.test") as client:
            health = await client.get("/health")
            users = await client.get("/api/v1/users", headers=headers)
            missing = await client.get("/_test/missing-file")
    finally:
        await database.dispose()
    assert health.status_code == 503, health.text
    assert users.status_code == 503 and users.headers["retry-after"] == "5", users.text
    assert users.json()["detail"] == "the database is unavailable; try again shortly"
    assert missing.status_code == 500, missing.text
