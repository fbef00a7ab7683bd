"""``roost settings ls|get|set|reset`` as an operator runs them (the real console script)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from roost.db.engine import Database
from tests.agents.test_agents_cli import cli_env
from tests.support.cli import run_roost
from tests.support.pg import PgTestServer


async def test_settings_from_the_command_line(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    env = cli_env(pg_server, db_name, tmp_path)

    out = run_roost("settings", "set", "chat_context_messages", "40", env=env)
    assert out.returncode == 0, out.stderr
    assert "chat_context_messages = 40 (override)" in out.stdout

    out = run_roost("settings", "ls", env=env)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "chat_context_messages" in x)
    assert "40" in line and "override" in line and "20" in line
    assert "open_registration" in out.stdout

    out = run_roost("settings", "get", "chat_context_messages", env=env)
    shown = json.loads(out.stdout)
    assert shown["value"] == 40 and shown["schema"]["maximum"] == 1000

    out = run_roost("settings", "set", "chat_context_messages", "0", env=env)
    assert out.returncode == 1
    assert "chat_context_messages: Input should be greater than or equal to 1" in out.stderr
    out = run_roost("settings", "set", "open_registration", "maybe", env=env)  # text, not JSON
    assert out.returncode == 1 and "valid boolean" in out.stderr
    out = run_roost("settings", "get", "nope", env=env)
    assert out.returncode == 1 and "no runtime setting 'nope'" in out.stderr

    out = run_roost("settings", "reset", "chat_context_messages", env=env)
    assert out.returncode == 0 and "chat_context_messages = 20 (default)" in out.stdout
    async with database.transaction() as s:
        actions = (await s.execute(text(
            "SELECT action FROM audit_logs WHERE resource_type = 'system_setting' "
            "ORDER BY seq"))).scalars().all()
    assert actions == ["system_settings.update", "system_settings.reset"]


async def test_a_value_nested_too_deeply_is_a_clean_error(
        pg_server: PgTestServer, db_name: str, tmp_path: Path) -> None:
    """VALUE '[[[[...' 5000 deep: one line and exit 1, not a RecursionError traceback."""
    env = cli_env(pg_server, db_name, tmp_path)
    out = run_roost("settings", "set", "chat_context_messages", "[" * 5000 + "]" * 5000,
                    env=env)
    assert out.returncode == 1, (out.stdout, out.stderr[-1500:])
    assert "Traceback" not in out.stderr and "nested too deeply" in out.stderr, out.stderr[-1500:]
