"""Language servers and the ``lsp_diagnostics`` tool, against real server processes:
jedi-language-server (the dev extra), a command that does not exist, and a process that
never answers."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer
from tests.tools.conftest import CALL_TIMEOUT_S

pytestmark = pytest.mark.asyncio(loop_scope="session")

JEDI = Path(sys.executable).with_name("jedi-language-server")
SERVERS = "/api/v1/lsp-servers"
DIAGNOSE = "/api/v1/tools/by-name/lsp_diagnostics/call"
BROKEN = "import os\n\ndef f(:\n    return os.sep\n"


@pytest.fixture(autouse=True)
def _jedi_installed() -> None:
    assert JEDI.exists(), "jedi-language-server is missing: pip install -e '.[dev]'"


def jedi_body(name: str = "jedi", **extra: Any) -> dict[str, Any]:
    return {"name": name, "language": "python", "command": str(JEDI),
            "file_patterns": ["*.py", "*.pyi"], **extra}


async def audit_actions(database: Database, server_id: str) -> list[str]:
    async with database.transaction() as session:
        rows = await session.scalars(text(
            "SELECT action FROM audit_logs WHERE resource_type = 'lsp_server' "
            "AND resource_id = :id ORDER BY seq"), {"id": server_id})
        return list(rows)


async def test_register_check_list_delete_and_tenancy(
    client: httpx.AsyncClient, database: Database
) -> None:
    _, admin = await make_user(database, admin=True)
    _, bob = await make_user(database)
    created = await client.post(SERVERS, headers=admin, json=jedi_body())
    assert created.status_code == 201, created.text
    server = created.json()
    assert server["is_global"] is False and server["health_status"] == "unknown"
    sid = server["id"]

    checked = await client.post(f"{SERVERS}/{sid}/check", headers=admin)
    assert checked.status_code == 200, checked.text
    health = checked.json()
    assert health["health_status"] == "healthy" and health["health_error"] is None
    assert "textDocumentSync" in health["capabilities"]
    assert health["server_info"]["name"] == "jedi-language-server"
    assert isinstance(health["latency_ms"], int) and health["last_checked_at"] is not None

    listed = (await client.get(SERVERS, params={"health_status": "healthy"}, headers=admin)).json()
    assert [s["id"] for s in listed["items"]] == [sid]
    assert (await client.get(f"{SERVERS}/{sid}", headers=admin)).json()["latency_ms"] is not None

    # Another tenant: nothing to see, check or delete.
    assert (await client.get(f"{SERVERS}/{sid}", headers=bob)).status_code == 404
    assert (await client.post(f"{SERVERS}/{sid}/check", headers=bob)).status_code == 404
    assert (await client.delete(f"{SERVERS}/{sid}", headers=bob)).status_code == 404
    assert (await client.get(SERVERS, headers=bob)).json()["items"] == []
    # Users do not run commands on the host.
    refused = await client.post(SERVERS, headers=bob, json=jedi_body("mine"))
    assert refused.status_code == 403, refused.text

    # Bad input: 4xx problems naming the field, never a 500.
    duplicate = await client.post(SERVERS, headers=admin, json=jedi_body())
    assert duplicate.status_code == 409
    for bad in (jedi_body("x" * 65), jedi_body(command=""), jedi_body(command="a" * 501),
                jedi_body(args=["-v"] * 101), jedi_body(file_patterns=["*.py\x00"]),
                jedi_body(language="py thon"), jedi_body(enabled=1), {"name": "n"},
                jedi_body(extra="field")):
        answer = await client.post(SERVERS, headers=admin, json=bad)
        assert answer.status_code == 422, (bad, answer.text)
    assert (await client.get(f"{SERVERS}/not-a-uuid", headers=admin)).status_code == 422
    assert (await client.get(SERVERS, params={"cursor": "garbage"}, headers=admin)).status_code == 400

    deleted = await client.delete(f"{SERVERS}/{sid}", headers=admin)
    assert deleted.status_code == 204
    assert (await client.get(f"{SERVERS}/{sid}", headers=admin)).status_code == 404
    assert await audit_actions(database, sid) == [
        "lsp_server.create", "lsp_server.check", "lsp_server.delete"]


async def test_missing_command_and_hanging_server_fail_clearly(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database, tmp_path: Path
) -> None:
    ghost = await client.post(SERVERS, headers=admin_headers, json={
        "name": "ghost", "language": "python", "command": "/nonexistent/roost-lsp-ghost",
        "is_global": True})
    assert ghost.status_code == 201, ghost.text
    gid = ghost.json()["id"]
    failed = await client.post(f"{SERVERS}/{gid}/check", headers=admin_headers)
    assert failed.status_code == 502, failed.text
    problem = failed.json()
    assert problem["type"].endswith("lsp-error") and problem["lsp_server_id"] == gid
    assert "/nonexistent/roost-lsp-ghost" in problem["detail"] and "not found" in problem["detail"]
    recorded = (await client.get(f"{SERVERS}/{gid}", headers=admin_headers)).json()
    assert recorded["health_status"] == "unhealthy" and "not found" in recorded["health_error"]
    assert await audit_actions(database, gid) == ["lsp_server.create", "lsp_server.check"]

    # A process that never answers initialize: 504 at the deadline, and it is gone.
    pid_file = tmp_path / "hang.pid"
    hang = await client.post(SERVERS, headers=admin_headers, json={
        "name": "hang", "language": "python", "command": sys.executable, "is_global": True,
        "args": ["-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                       "time.sleep(60)"]})
    hid = hang.json()["id"]
    started = time.monotonic()
    slow = await client.post(f"{SERVERS}/{hid}/check", headers=admin_headers)
    elapsed = time.monotonic() - started
    assert slow.status_code == 504, slow.text
    assert slow.json()["type"].endswith("lsp-timeout") and "did not finish" in slow.json()["detail"]
    assert CALL_TIMEOUT_S <= elapsed < CALL_TIMEOUT_S + 4
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
    assert (await client.get(f"{SERVERS}/{hid}", headers=admin_headers)).json()[
        "health_status"] == "unhealthy"


@pytest.fixture
def workspace(test_settings: Settings, tmp_path: Path) -> Path:
    """The tools workspace of the test app (DATA_DIR/workspace), with a broken module,
    and outside it a file and a directory that symbolic links point to."""
    root = test_settings.data_dir / "workspace"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "broken.py").write_text(BROKEN)
    (root / "notes.txt").write_text("not code")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("SECRET = (\n")
    (root / "escape.py").symlink_to(outside / "secret.py")
    (root / "elsewhere").symlink_to(outside)
    (root / "inner.py").symlink_to(root / "pkg" / "broken.py")  # stays inside: fine
    return root


async def test_lsp_diagnostics_tool(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database, workspace: Path
) -> None:
    _, alice = await make_user(database)
    none_yet = await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": "pkg/broken.py"}})
    assert none_yet.status_code == 422 and "roost lsp add" in none_yet.json()["detail"]
    created = await client.post(SERVERS, headers=admin_headers, json=jedi_body(is_global=True))
    assert created.status_code == 201, created.text

    called = await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": "pkg/broken.py"}})
    assert called.status_code == 200, called.text
    run = called.json()
    assert run["status"] == "success"
    output = run["output"]
    assert output["path"] == "pkg/broken.py" and output["server"] == "jedi"
    assert output["count"] >= 1 and output["truncated"] is False
    first = output["diagnostics"][0]
    assert first["severity"] == "error" and first["line"] == 3  # "def f(:"
    assert first["range"]["start"]["line"] == 2 and "line 3" in first["message"]
    assert first["source"]

    # A symbolic link that stays inside the workspace is followed.
    inner = await client.post(DIAGNOSE, headers=alice, json={
        "arguments": {"path": "inner.py", "language": "python", "server": "jedi"}})
    assert inner.status_code == 200, inner.text
    assert inner.json()["output"]["diagnostics"][0]["line"] == 3

    # Hostile paths: refused (422) before anything is read or started, and recorded.
    for hostile in ("/etc/passwd", str(workspace / "pkg" / "broken.py"), "../outside/secret.py",
                    "pkg/../../outside/secret.py", "escape.py",
                    "elsewhere/secret.py", "pkg\\broken.py", "."):
        refused = await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": hostile}})
        assert refused.status_code == 422, (hostile, refused.text)
        problem = refused.json()
        assert problem["type"].endswith("workspace-path-refused"), (hostile, problem)
        assert "SECRET" not in refused.text and "tool_run_id" in problem
    # A NUL byte fails the tool's input schema: 422, nothing run nor recorded.
    nul = await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": "pkg/broken.py\x00.txt"}})
    assert nul.status_code == 422 and "/path" in nul.json()["detail"] and "tool_run_id" not in nul.json()
    missing = await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": "pkg/gone.py"}})
    assert missing.status_code == 422 and "no file" in missing.json()["detail"]
    unmatched = await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": "notes.txt"}})
    assert unmatched.status_code == 422 and "no enabled language server" in unmatched.json()["detail"]
    wrong_language = await client.post(DIAGNOSE, headers=alice, json={
        "arguments": {"path": "pkg/broken.py", "language": "rust"}})
    assert wrong_language.status_code == 422
    runs = (await client.get("/api/v1/tool-runs", params={"tool_name": "lsp_diagnostics"},
                             headers=alice)).json()["items"]
    assert [r["status"] for r in runs].count("success") == 2
    assert all(r["status"] in ("success", "error") for r in runs)

    # Any user may check a global server; its health is recorded on the shared row.
    checked = await client.post(f"{SERVERS}/{created.json()['id']}/check", headers=alice)
    assert checked.status_code == 200, checked.text
    assert checked.json()["health_status"] == "healthy"
    # ...but not delete it.
    gone = await client.delete(f"{SERVERS}/{created.json()['id']}", headers=alice)
    assert gone.status_code == 403


async def test_a_file_with_a_byte_order_mark_gets_its_own_diagnostics(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database, workspace: Path
) -> None:
    """A Python file saved with a UTF-8 byte order mark (as editors on Windows write it;
    Python allows it) gets the diagnostics it has without one: the syntax error on line 3,
    not an "invalid non-printable character U+FEFF" on line 1."""
    (workspace / "bom.py").write_bytes(b"\xef\xbb\xbf" + BROKEN.encode())
    created = await client.post(SERVERS, headers=admin_headers, json=jedi_body(is_global=True))
    assert created.status_code == 201, created.text
    _, alice = await make_user(database)
    called = await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": "bom.py"}})
    assert called.status_code == 200, called.text
    diagnostics = called.json()["output"]["diagnostics"]
    assert [d["line"] for d in diagnostics] == [3], diagnostics
    assert "U+FEFF" not in diagnostics[0]["message"]


async def test_roost_lsp_commands(pg_server: PgTestServer, db_name: str, tmp_path: Path) -> None:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_TOOLS_CALL_TIMEOUT_S": "20"}
    added = run_roost("lsp", "add", "jedi", "--command", str(JEDI), "--language", "python",
                      "--pattern", "*.py", env=env)
    assert added.returncode == 0, added.stderr
    assert "Registered language server jedi" in added.stdout
    listed = run_roost("lsp", "ls", env=env)
    assert listed.returncode == 0 and "jedi" in listed.stdout and "*.py" in listed.stdout
    checked = run_roost("lsp", "check", "jedi", env=env)
    assert checked.returncode == 0, checked.stderr
    assert "jedi: healthy in" in checked.stdout and "jedi-language-server" in checked.stdout
    assert "healthy" in run_roost("lsp", "ls", env=env).stdout

    ghost = run_roost("lsp", "add", "ghost", "--command", "/nonexistent/roost-lsp", "--language",
                      "python", env=env)
    assert ghost.returncode == 0, ghost.stderr
    failed = run_roost("lsp", "check", "ghost", env=env)
    assert failed.returncode == 1 and "not found" in failed.stderr
    invalid = run_roost("lsp", "add", "bad name", "--command", "x", "--language", "python", env=env)
    assert invalid.returncode == 1 and "Invalid input" in invalid.stderr

    removed = run_roost("lsp", "rm", "jedi", env=env)
    assert removed.returncode == 0 and "Deleted" in removed.stdout
    missing = run_roost("lsp", "check", "jedi", env=env)
    assert missing.returncode == 1 and "no language server" in missing.stderr


async def test_roost_lsp_add_with_a_bad_option_says_which_and_why(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """``roost lsp add "bad name"`` printed only pydantic's "For further information visit
    https://errors.pydantic.dev/..." line; now the option and the rule, as ``roost mcp add``."""
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d")}
    invalid = run_roost("lsp", "add", "bad name", "--command", "x", "--language", "python", env=env)
    assert invalid.returncode == 1, invalid.stderr
    assert "errors.pydantic.dev" not in invalid.stderr, invalid.stderr
    assert "name: String should match pattern" in invalid.stderr, invalid.stderr


async def test_roost_lsp_ls_lists_every_server(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """`roost lsp ls` lists every server, page after page: with 501 it printed the first
    500 and stopped, saying nothing of the rest."""
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO lsp_servers (id, name, language, command) "
            "SELECT gen_random_uuid(), 'srv' || lpad(n::text, 3, '0'), 'python', 'pylsp' "
            "FROM generate_series(0, 500) n"))
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "COLUMNS": "200"}
    listed = run_roost("lsp", "ls", env=env)
    assert listed.returncode == 0, listed.stderr
    assert len(set(re.findall(r"\bsrv\d{3}\b", listed.stdout))) == 501
