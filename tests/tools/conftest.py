"""Fixtures of the tools tests: settings that let loopback MCP servers through (the
admin allowlist), a short call deadline, a small output cap, and a real MCP server
over streamable HTTP on loopback (a subprocess)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from roost.config import Settings
from roost.tools import stdiopool

ECHO_SERVER = Path(__file__).with_name("mcp_echo_server.py")
CALL_TIMEOUT_S = 6.0
MAX_OUTPUT_BYTES = 4096


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", log_json=True, max_request_bytes=64 * 1024,
        tools_allowed_hosts="127.0.0.1", tools_call_timeout_s=CALL_TIMEOUT_S,
        tools_max_output_bytes=MAX_OUTPUT_BYTES, knowledge_embedding_provider="hash",
    )


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _stop_stdio_servers() -> AsyncIterator[None]:
    """Tool calls leave long-lived stdio servers in the loop's pool (the in-process app
    runs no lifespan): stop them after each test, as a server's shutdown would."""
    yield
    await stdiopool.close_default()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def http_mcp_url() -> Iterator[str]:
    """``python tests/tools/mcp_echo_server.py --http PORT`` (uvicorn in a subprocess)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ECHO_SERVER), "--http", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the streamable-HTTP MCP test server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
