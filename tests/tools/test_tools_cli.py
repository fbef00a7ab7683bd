"""``roost mcp`` and ``roost tools`` as an operator runs them (real console script)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.cli import run_roost
from tests.support.pg import PgTestServer
from tests.tools.conftest import ECHO_SERVER

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_roost_mcp_and_tools_commands(pg_server: PgTestServer, db_name: str, tmp_path: Path) -> None:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d")}
    added = run_roost("mcp", "add", "echo", "--command", sys.executable, "--arg", str(ECHO_SERVER),
                      "--env", "TOKEN=hidden-value", env=env)
    assert added.returncode == 0, added.stderr
    assert "Registered MCP server echo" in added.stdout
    synced = run_roost("mcp", "sync", "echo", env=env)
    assert synced.returncode == 0, synced.stderr
    assert "10 added" not in synced.stdout and "9 added" in synced.stdout  # no bonus file
    checked = run_roost("mcp", "check", "echo", env=env)
    assert checked.returncode == 0 and "healthy" in checked.stdout
    listed = run_roost("mcp", "ls", env=env)
    assert "echo" in listed.stdout and "hidden-value" not in listed.stdout
    tools = run_roost("tools", "ls", "--server", "echo", env=env)
    assert tools.returncode == 0 and "sleep" in tools.stdout
    called = run_roost("tools", "call", "add", "--args", '{"a": 20, "b": 22}', env=env)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["structuredContent"] == {"result": 42}
    invalid = run_roost("tools", "call", "add", "--args", '{"a": "x", "b": 1}', env=env)
    assert invalid.returncode == 1 and "/a" in invalid.stderr
    removed = run_roost("mcp", "rm", "echo", env=env)
    assert removed.returncode == 0
    missing = run_roost("mcp", "sync", "echo", env=env)
    assert missing.returncode == 1 and "no MCP server" in missing.stderr
