"""Hostile language servers: an error answer whose ``code`` is not LSP's integer (a NUL, a
lone surrogate, 200,000 characters) and a diagnostic whose position is a boolean."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from roost.db.engine import Database
from tests.support.identity import make_user
from tests.tools.test_lsp_hostile_servers import DIAGNOSE, SERVERS, register, workspace

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["workspace"]  # the fixture, used by name


@pytest.mark.parametrize("mode", ["code_nul", "code_sur", "code_big"])
async def test_check_of_server_whose_error_code_is_hostile(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, mode: str,
) -> None:
    """A server answering ``initialize`` with such an error ``code``: the check records
    the failure (escaped, cut as the server's message is) and answers 502.  The code went
    into the detail raw: a NUL or a surrogate made the recording fail (400, nothing
    recorded), a long code was stored whole in health_error (200 KB)."""
    sid = await register(client, admin_headers, tmp_path, mode)
    checked = await client.post(f"{SERVERS}/{sid}/check", headers=admin_headers)
    assert checked.status_code == 502, checked.text[:500]
    row = (await client.get(f"{SERVERS}/{sid}", headers=admin_headers)).json()
    assert row["health_status"] == "unhealthy"
    assert len(row["health_error"]) < 5000, len(row["health_error"])


@pytest.mark.parametrize("mode", ["code_nul", "code_sur", "code_big"])
async def test_diagnostics_of_server_whose_error_code_is_hostile(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    workspace: Path, tmp_path: Path, mode: str,
) -> None:
    """The same error ``code`` during an ``lsp_diagnostics`` call: a 502 with an escaped,
    bounded detail (it was a 400, the tool run could not be recorded, or a 200 KB
    problem detail)."""
    await register(client, admin_headers, tmp_path, mode)
    _, alice = await make_user(database)
    called = await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": "a.py"}})
    assert called.status_code == 502, called.text[:500]
    assert len(called.json()["detail"]) < 5000


async def test_diagnostics_line_bool(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    workspace: Path, tmp_path: Path,
) -> None:
    """A diagnostic whose start position is ``{"line": true, "character": false}`` (not
    LSP's uinteger) is dropped as malformed like any other non-integer position (it was
    answered with ``range.start.line`` ``true`` and ``line`` 2: a bool is an int)."""
    await register(client, admin_headers, tmp_path, "line_bool")
    _, alice = await make_user(database)
    called = await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": "a.py"}})
    assert called.status_code == 200, called.text[:500]
    diags = called.json()["output"]["diagnostics"]
    assert all(type(d["range"]["start"]["line"]) is int for d in diags), diags
