"""Helpers of the personas, secrets and agents API tests: create things through the API
as their users would, and read back what the database stored."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from tests.support.identity import join_persona, make_user

Headers = dict[str, str]


async def named_user(database: Database, prefix: str) -> tuple[uuid.UUID, str, Headers]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    user_id, headers = await make_user(database, username=name)
    return user_id, name, headers


async def create_persona(client: httpx.AsyncClient, headers: Headers,
                         **fields: Any) -> dict[str, Any]:
    body = {"name": f"Persona {uuid.uuid4().hex[:6]}", **fields}
    resp = await client.post("/api/v1/personas", json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def add_member(client: httpx.AsyncClient, headers: Headers, persona_id: str, user: str,
                     role: str, user_headers: Headers | None = None) -> dict[str, Any]:
    """``user`` joins the persona (docs/agents.md, "Personas and members"): invited by an
    owner (``headers``, 202), accepting with their own ``user_headers`` (201); without
    ``user_headers``, ``headers`` are a site administrator's, who adds them at once (201).
    The membership's JSON."""
    if user_headers is not None:
        return await join_persona(client, headers, persona_id, user, user_headers, role=role)
    resp = await client.post(f"/api/v1/personas/{persona_id}/members",
                             json={"user": user, "role": role}, headers=headers)
    assert resp.status_code == 201, resp.text
    member: dict[str, Any] = resp.json()
    return member


async def create_agent(client: httpx.AsyncClient, headers: Headers,
                       **fields: Any) -> dict[str, Any]:
    body = {"name": "Helper", "slug": f"helper-{uuid.uuid4().hex[:8]}", **fields}
    resp = await client.post("/api/v1/agents", json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def audit_rows(database: Database, action_prefix: str) -> list[dict[str, Any]]:
    async with database.transaction() as session:
        rows = (await session.execute(text(
            "SELECT action, user_id, persona_id, resource_id, changes, metadata "
            "FROM audit_logs WHERE action LIKE :p ORDER BY seq"),
            {"p": action_prefix + "%"})).mappings().all()
    return [dict(r) for r in rows]


async def columns_holding(database: Database, needle: str) -> list[str]:
    """Every text, varchar, json and jsonb column of every table (as ``table.column``)
    holding ``needle`` in some row: what a ``pg_dump`` of the database would show."""
    found = []
    async with database.transaction() as session:
        columns = (await session.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN "
            "('text', 'character varying', 'json', 'jsonb', 'bytea')"))).tuples().all()
        for table, column in columns:
            hit = await session.scalar(text(
                f'SELECT EXISTS (SELECT 1 FROM "{table}" '
                f'WHERE position(:needle IN "{column}"::text) > 0)'), {"needle": needle})
            if hit:
                found.append(f"{table}.{column}")
    return found


async def persona_with_secret_server(
    client: httpx.AsyncClient, admin_headers: Headers, headers: Headers, *, name: str,
    script: Path, env: dict[str, str], secret: str,
) -> dict[str, Any]:
    """A global stdio MCP server running ``script`` with ``env`` (``${secret:tok}`` in it),
    synced, and a new persona of ``headers``' user holding ``secret`` as its mcp_env
    ``tok``: the persona."""
    server = await client.post("/api/v1/mcp-servers", headers=admin_headers, json={
        "name": name, "transport": "stdio", "command": sys.executable,
        "args": [str(script)], "is_global": True, "env": env})
    assert server.status_code == 201, server.text
    synced = await client.post(f"/api/v1/mcp-servers/{server.json()['id']}/sync",
                               headers=admin_headers)
    assert synced.status_code == 200, synced.text
    persona = await create_persona(client, headers)
    stored = await client.put(f"/api/v1/personas/{persona['id']}/secrets", headers=headers,
                              json={"secret_type": "mcp_env", "key_name": "tok",
                                    "value": secret})
    assert stored.status_code == 200, stored.text
    return persona
