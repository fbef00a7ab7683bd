"""A real ``roost serve`` child process on a free loopback port."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from roost.keyfiles import KeyMaterial
from tests.support.cli import ROOST
from tests.support.pg import PgTestServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[Any], timeout_s: float = 90,
                 poll_s: float = 0.2) -> None:
    """Until ``url``/health answers 200; RuntimeError if ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited early with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"{url} was not healthy within {timeout_s} s")


@dataclass
class RunningServer:
    base_url: str
    process: subprocess.Popen[str]
    output: str = ""


def serve_env(pg_server: PgTestServer, db_name: str, data_dir: Path, keys: KeyMaterial,
              **variables: str) -> dict[str, str]:
    """The environment of a ``roost serve`` on the test's database with the test's keys
    (every process of one install shares them), without the local model, logging
    warnings only; ``variables`` adds more (``ROOST_RATE_LIMIT_STREAMS="1"``)."""
    return {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(data_dir),
            "ROOST_ADMIN_TOKEN": keys.admin_token, "ROOST_SECRET_KEY": keys.secret_key,
            "ROOST_MESSAGE_KEYS": ",".join(keys.message_keys),
            "ROOST_SECRETS_KEY": base64.b64encode(keys.secrets_key).decode(),
            "ROOST_LLM_LOCAL_MODEL": "false", "ROOST_LOG_LEVEL": "warning", **variables}


@contextmanager
def roost_server(
    env: dict[str, str], *, args: tuple[str, ...] = (), timeout_s: float = 60
) -> Iterator[RunningServer]:
    """Start ``roost serve``, wait until /health answers 200, SIGTERM it on exit.

    ``output`` holds everything the server printed once the block has exited.  The output
    goes to a file, not a pipe: a pipe nobody reads until the end fills up (64 KiB, an
    info-level server's few hundred requests) and then every write blocks the server's
    event loop, a hang the test sees as a page that never updates.
    """
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    # No in-process worker unless a test asks: tests start their own workers when they
    # want jobs run, and some watch jobs stay queued.
    full_env["ROOST_SERVE_WORKER"] = "false"
    full_env.update(env)
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(
            [ROOST, "serve", "--port", str(port), *args], env=full_env,
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        server = RunningServer(base_url=f"http://127.0.0.1:{port}", process=proc)

        def printed() -> str:
            log.seek(0)
            return log.read()

        try:
            try:
                wait_healthy(server.base_url, proc, timeout_s, poll_s=0.1)
            except RuntimeError:
                proc.wait(timeout=30)
                raise RuntimeError(f"roost serve exited early:\n{printed()}") from None
            yield server
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            server.output = printed()


@asynccontextmanager
async def in_process(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """The app under uvicorn on loopback in this process, lifespan included, so the
    test can look at the SDK's session manager and this process's tasks and memory."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        assert not task.done(), "uvicorn stopped during start-up"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
