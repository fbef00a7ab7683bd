"""Long-lived stdio MCP server processes (``roost.tools.stdiopool``) and the pinned HTTP
transport, against real processes: the test MCP server (``mcp_echo_server.py``) reports
its pid, crashes (``os._exit``) and hangs (blocks its event loop) on request; psutil
checks which processes exist."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import psutil
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.db.engine import Database
from roost.tasks.worker import Worker, WorkerConfig
from roost.tools import mcpclient, stdiopool
from tests.tools.conftest import CALL_TIMEOUT_S, ECHO_SERVER
from tests.tools.test_tools_api import register_and_sync, stdio_body, tool_id

pytestmark = pytest.mark.asyncio(loop_scope="session")


def spec(name: str = "echo", **extra: Any) -> mcpclient.ServerSpec:
    return mcpclient.ServerSpec(name=name, transport="stdio", command=sys.executable,
                                args=(str(ECHO_SERVER),), server_id=uuid.uuid4(), **extra)


async def call(pool: stdiopool.StdioPool, server: mcpclient.ServerSpec, tool: str,
               arguments: dict[str, Any] | None = None, timeout_s: float = 10.0) -> Any:
    outcome = await mcpclient.call_tool(server, tool, arguments or {}, timeout_s=timeout_s,
                                        max_bytes=65536, pool=pool)
    return outcome.output["structuredContent"]["result"]


async def wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    """Until ``pid`` no longer exists (reaped, not a zombie)."""
    deadline = time.monotonic() + timeout_s
    while psutil.pid_exists(pid):
        assert time.monotonic() < deadline, f"process {pid} still exists"
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
async def pool() -> AsyncIterator[stdiopool.StdioPool]:
    made = stdiopool.StdioPool(stdiopool.PoolLimits(start_timeout_s=20, ping_timeout_s=1.0))
    yield made
    await made.close()


async def call_api(client: httpx.AsyncClient, headers: dict[str, str], tid: str,
                   arguments: dict[str, Any] | None = None) -> httpx.Response:
    return await client.post(f"/api/v1/tools/{tid}/call", headers=headers,
                             json={"arguments": arguments or {}})


async def test_one_process_serves_consecutive_and_concurrent_calls(
    pool: stdiopool.StdioPool,
) -> None:
    server = spec()
    first = await call(pool, server, "pid")
    assert first != psutil.Process().pid and alive(first)
    assert psutil.Process(first).ppid() == psutil.Process().pid  # our child
    assert [await call(pool, server, "pid") for _ in range(3)] == [first] * 3
    # Concurrent calls share the session: the SDK multiplexes requests by id, so a call
    # is answered while eight others are still open on the same process.
    sleepers = [asyncio.create_task(call(pool, server, "sleep", {"seconds": 5}, timeout_s=30))
                for _ in range(8)]
    await asyncio.sleep(1)  # let them reach the server (one after another: 40 s > 30 s)
    assert await call(pool, server, "pid") == first
    assert not any(sleeper.done() for sleeper in sleepers)
    assert await asyncio.gather(*sleepers) == ["woke up"] * 8
    assert await call(pool, server, "pid") == first and pool.processes == 1


async def test_crash_fails_the_call_then_restarts_after_backoff(
    pool: stdiopool.StdioPool,
) -> None:
    server = spec()
    first = await call(pool, server, "pid")
    with pytest.raises(mcpclient.McpError) as crashed:
        await call(pool, server, "crash")
    assert "failed during the call: it exited" in crashed.value.detail
    await wait_gone(first)
    # During the backoff a call fails at once, saying when the next start is tried.
    started = time.monotonic()
    with pytest.raises(mcpclient.McpError) as waiting:
        await call(pool, server, "pid")
    assert time.monotonic() - started < 0.5  # no process was started
    assert "is restarting" in waiting.value.detail and "next start is tried in" in waiting.value.detail
    await asyncio.sleep(stdiopool.BACKOFF_FIRST_S)
    second = await call(pool, server, "pid")
    assert second != first and alive(second)


async def test_start_failures_back_off_exponentially(pool: stdiopool.StdioPool) -> None:
    ghost = mcpclient.ServerSpec(name="ghost", transport="stdio",
                                 command="/nonexistent/roost-mcp-ghost", server_id=uuid.uuid4())
    with pytest.raises(mcpclient.McpError) as missing:
        await call(pool, ghost, "pid")
    assert "'/nonexistent/roost-mcp-ghost' was not found" in missing.value.detail
    with pytest.raises(mcpclient.McpError) as waiting:
        await call(pool, ghost, "pid")
    assert "restarting after it could not start" in waiting.value.detail
    await asyncio.sleep(stdiopool.BACKOFF_FIRST_S)
    with pytest.raises(mcpclient.McpError):
        await call(pool, ghost, "pid")  # second failure: the wait doubles
    with pytest.raises(mcpclient.McpError) as doubled:
        await call(pool, ghost, "pid")
    assert doubled.value.extra["retry_after_s"] > stdiopool.BACKOFF_FIRST_S


async def test_timeouts_cancel_the_request_and_a_hung_server_is_replaced(
    pool: stdiopool.StdioPool,
) -> None:
    server = spec()
    first = await call(pool, server, "pid")
    # A slow call: cancelled on the server (notifications/cancelled); the process stays.
    started = time.monotonic()
    with pytest.raises(mcpclient.McpTimeout):
        await call(pool, server, "sleep", {"seconds": 30}, timeout_s=1.0)
    assert time.monotonic() - started < 3.0  # the deadline, not the tool's 30/60 s
    assert await call(pool, server, "pid", timeout_s=5.0) == first
    # A hung server (its event loop blocked) answers no ping: the next call waits for the
    # ping's verdict and gets a new process, within its own deadline.
    started = time.monotonic()
    with pytest.raises(mcpclient.McpTimeout):
        await call(pool, server, "hang", {"seconds": 60}, timeout_s=1.0)
    assert time.monotonic() - started < 3.0  # the deadline, not the tool's 30/60 s
    second = await call(pool, server, "pid", timeout_s=8.0)
    assert second != first
    await wait_gone(first)


async def test_a_slow_start_does_not_count_against_the_first_calls_deadline(
    pool: stdiopool.StdioPool,
) -> None:
    # The start has the pool's own deadline (20 s here): a 1 s call still succeeds on a
    # server that takes 2 s to start, and the next calls reuse the started process.
    server = spec(env={"ECHO_START_DELAY_S": "2"})
    started = time.monotonic()
    first = await call(pool, server, "pid", timeout_s=1.0)
    assert time.monotonic() - started >= 2.0
    assert await call(pool, server, "pid", timeout_s=1.0) == first
    # A start past the pool's deadline fails with that reason, not as a call timeout.
    strict = stdiopool.StdioPool(stdiopool.PoolLimits(start_timeout_s=0.5))
    try:
        with pytest.raises(mcpclient.McpError, match="no answer to initialize in time"):
            await call(strict, spec(env={"ECHO_START_DELAY_S": "5"}), "pid", timeout_s=10.0)
    finally:
        await strict.close()


async def test_changed_registration_idle_and_eviction_stop_processes() -> None:
    pool = stdiopool.StdioPool(stdiopool.PoolLimits(max_processes=2, idle_s=60,
                                                    start_timeout_s=20))
    try:
        server = spec()
        first = await call(pool, server, "pid")
        # The same server with another revision (a discovery ran) or env: a new process,
        # the old one is closed.
        renewed = mcpclient.ServerSpec(**{**server.__dict__, "revision": "synced-again"})
        second = await call(pool, renewed, "pid")
        assert second != first
        await wait_gone(first)
        changed = mcpclient.ServerSpec(**{**renewed.__dict__, "env": {"EXTRA": "1"}})
        third = await call(pool, changed, "pid")
        await wait_gone(second)
        # At most two processes: a third server evicts the least recently used idle one.
        other, another = spec("other"), spec("another")
        fourth = await call(pool, other, "pid")
        assert pool.processes == 2
        await call(pool, changed, "pid")  # now `other` is the least recently used
        await call(pool, another, "pid")
        await wait_gone(fourth)
        assert alive(third) and pool.processes == 2
        # Idle processes are closed.
        pool.limits = stdiopool.PoolLimits(max_processes=2, idle_s=0.3)
        await call(pool, changed, "pid")
        await wait_gone(third)
        assert pool.processes < 2
    finally:
        await pool.close()


async def test_pool_close_and_worker_shutdown_leave_no_children(database: Database) -> None:
    pool = stdiopool.StdioPool()
    pids = [await call(pool, spec(f"s{i}"), "pid") for i in range(3)]
    await pool.close()
    for pid in pids:
        await wait_gone(pid)
    with pytest.raises(mcpclient.McpError, match="shutting down"):
        await call(pool, spec(), "pid")

    # The worker's shutdown hook (roost.tools.jobs) closes its loop's default pool.
    import roost.tools.jobs  # noqa: F401 - registers the hook, as the worker's discover() does

    pid = await call(stdiopool.default_pool(), spec(), "pid")
    worker = Worker(database, WorkerConfig(concurrency=1, schedules=False, listen=False,
                                           poll_interval_s=0.05))
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.started.wait(), 30)
    worker.stop()
    await asyncio.wait_for(running, 60)
    await wait_gone(pid)
    assert stdiopool.current_pool() is None


# --- through the API: recorded runs, registration changes, the app's lifespan --------


async def test_api_calls_share_a_process_and_crashes_are_recorded(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
) -> None:
    server, _ = await register_and_sync(client, admin_headers, stdio_body("pooled", is_global=True))
    sid = server["id"]
    pid_tool = await tool_id(client, admin_headers, sid, "pid")
    pids = [(await call_api(client, admin_headers, pid_tool)).json() for _ in range(3)]
    assert all(p["status"] == "success" for p in pids)
    first = pids[0]["output"]["structuredContent"]["result"]
    assert {p["output"]["structuredContent"]["result"] for p in pids} == {first}

    crash_tool = await tool_id(client, admin_headers, sid, "crash")
    crashed = await call_api(client, admin_headers, crash_tool)
    assert crashed.status_code == 502, crashed.text
    assert "exited" in crashed.json()["detail"]
    run = (await client.get(f"/api/v1/tool-runs/{crashed.json()['tool_run_id']}",
                            headers=admin_headers)).json()
    assert run["status"] == "error" and "failed during the call: it exited" in run["error"]
    await wait_gone(first)
    await asyncio.sleep(stdiopool.BACKOFF_FIRST_S)
    again = await call_api(client, admin_headers, pid_tool)
    assert again.status_code == 200, again.text
    second = again.json()["output"]["structuredContent"]["result"]
    assert second != first and alive(second)

    # A hanging call: 504 within the deadline, a timeout run; the next call works.
    hang_tool = await tool_id(client, admin_headers, sid, "hang")
    started = time.monotonic()
    hung = await call_api(client, admin_headers, hang_tool, {"seconds": 120})
    assert hung.status_code == 504, hung.text
    assert time.monotonic() - started < CALL_TIMEOUT_S + 2
    after = await call_api(client, admin_headers, pid_tool)
    assert after.status_code == 200, after.text
    third = after.json()["output"]["structuredContent"]["result"]
    assert third != second
    await wait_gone(second)

    # A changed registration (here: its arguments, in the database) gets a new process
    # and the old one stops; so does a discovery (new revision) and a deletion.
    async with database.transaction() as session:
        await session.execute(text(
            "UPDATE mcp_servers SET args = args || '[\"--changed\"]'::jsonb WHERE id = :id"),
            {"id": sid})
    changed = await call_api(client, admin_headers, pid_tool)
    fourth = changed.json()["output"]["structuredContent"]["result"]
    assert fourth != third
    await wait_gone(third)
    resynced = await client.post(f"/api/v1/mcp-servers/{sid}/sync", headers=admin_headers)
    assert resynced.status_code == 200, resynced.text
    fifth = (await call_api(client, admin_headers, pid_tool)).json()["output"][
        "structuredContent"]["result"]
    assert fifth != fourth
    await wait_gone(fourth)
    deleted = await client.delete(f"/api/v1/mcp-servers/{sid}", headers=admin_headers)
    assert deleted.status_code == 204
    await wait_gone(fifth)


async def test_app_shutdown_stops_the_stdio_servers(
    app: FastAPI, admin_headers: dict[str, str],
) -> None:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
        pids = []
        for name in ("one", "two"):
            server, _ = await register_and_sync(client, admin_headers,
                                                stdio_body(name, is_global=True))
            tid = await tool_id(client, admin_headers, server["id"], "pid")
            called = await call_api(client, admin_headers, tid)
            pids.append(called.json()["output"]["structuredContent"]["result"])
        assert all(alive(p) for p in pids)
    for pid in pids:
        await wait_gone(pid)
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    assert not mine & set(pids)


# --- streamable HTTP: connections pinned to the checked address -----------------------


async def test_http_connections_are_pinned_to_the_checked_address() -> None:
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    # A name that never resolves: the connection can only have used the pinned address.
    url = f"http://mcp.rebind.invalid:{port}/mcp"
    addresses = await mcpclient.check_server_url(f"http://127.0.0.1:{port}/mcp",
                                                 allow_private=True)
    try:
        async with mcpclient.pinned_http_client(url, addresses, {"X-Key": "k"}) as http:
            response = await http.get(url)
            assert response.status_code == 200 and response.text == "ok"
            assert str(response.request.url) == url  # the name, not the address
            with pytest.raises(httpx2.ConnectError, match="not the host"):
                await http.get(f"http://elsewhere.invalid:{port}/mcp")
    finally:
        listener.close()
        await listener.wait_closed()
    [head] = seen
    assert f"host: mcp.rebind.invalid:{port}".encode() in head.lower()
    assert b"x-key: k" in head.lower()
