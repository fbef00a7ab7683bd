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


async def test_roost_mcp_and_lsp_name_a_server_literally_not_by_a_like_pattern(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """``roost mcp rm %`` (or ``_``) names no server: '%' and '_' are no id prefix, yet the
    id prefix was matched with LIKE unescaped, so it deleted whatever single server there
    was (roost.db.lookup.id_starts_with now); the same for ``roost lsp rm``."""
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "d")}
    added = run_roost("mcp", "add", "echo", "--command", sys.executable, "--arg",
                      str(ECHO_SERVER), env=env)
    assert added.returncode == 0, added.stderr
    added = run_roost("lsp", "add", "pyls", "--command", sys.executable,
                      "--language", "python", env=env)
    assert added.returncode == 0, added.stderr
    for ref in ("%", "_"):
        removed = run_roost("mcp", "rm", ref, env=env)
        assert removed.returncode == 1 and "no MCP server" in removed.stderr, removed.stdout
        removed = run_roost("lsp", "rm", ref, env=env)
        assert removed.returncode == 1 and "no language server" in removed.stderr, removed.stdout
    assert "echo" in run_roost("mcp", "ls", env=env).stdout
    assert "pyls" in run_roost("lsp", "ls", env=env).stdout


async def test_roost_tools_call_with_a_nul_in_its_arguments_is_no_traceback(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """``roost tools call current_time --args '{"timezone": "a\\u0000"}'``: a one-line
    error and exit 1, not a traceback ending in UntranslatableCharacterError."""
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "d")}
    called = run_roost("tools", "call", "current_time", "--args",
                       '{"timezone": "a\\u0000"}', env=env)
    assert called.returncode == 1
    assert "CharacterError" not in called.stderr, called.stderr[-800:]
    assert "/timezone" in called.stderr, called.stderr[-800:]
    assert len(called.stderr.strip().splitlines()) <= 3, called.stderr[-800:]
