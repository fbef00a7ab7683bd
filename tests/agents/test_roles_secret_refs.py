"""Persona roles and secret references checked when an agent is configured (docs/agents.md
"By reference in tools"): the check reads the tools the agent's runs are offered, as the
runner resolves them — global ones, the owner's own and those granted to the persona —
whoever configures the agent (an editor's scope does not show the owner's private
server; an administrator's shows every user's tools)."""

from __future__ import annotations

import httpx

from roost.db.engine import Database
from tests.agents.roles import make_cast, synced_tool
from tests.support.identity import make_user
from tests.tools.conftest import http_mcp_url

__all__ = ["http_mcp_url"]  # a fixture


async def test_an_editor_s_agent_with_a_granted_tool_is_checked_for_its_server_s_secrets(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
    http_mcp_url: str,
) -> None:
    """The owner's private server, granted to the persona, names a secret the persona does
    not hold: an editor binding an agent to that tool is refused (422 naming the secret),
    as the owner is, not told 201 and the run's call failing later."""
    c = await make_cast(client, database, admin_headers)
    tool_id = await synced_tool(client, c.owner.headers, {
        "name": "owners-srv", "transport": "streamable_http", "url": http_mcp_url,
        "headers": {"Authorization": "Bearer ${secret:never_set_tok}"}})
    granted = await client.put(f"/api/v1/personas/{c.pid}/tools/{tool_id}",
                               headers=c.owner.headers, json={})
    assert granted.status_code == 200, granted.text
    for who, headers in (("owner", c.owner.headers), ("editor", c.editor.headers)):
        made = await client.post("/api/v1/agents", headers=headers, json={
            "name": "A", "slug": f"by-{who}", "persona_id": c.pid,
            "tool_permissions": [tool_id]})
        assert made.status_code == 422 and "never_set_tok" in made.json()["detail"], made.text
    # Once the persona holds it, the editor's agent is accepted.
    held = await client.put(f"/api/v1/personas/{c.pid}/secrets", headers=c.owner.headers,
                            json={"secret_type": "api_token", "key_name": "never_set_tok",
                                  "value": "tok-0123456789"})
    assert held.status_code == 200, held.text
    made = await client.post("/api/v1/agents", headers=c.editor.headers, json={
        "name": "A", "slug": "by-editor", "persona_id": c.pid, "tool_permissions": [tool_id]})
    assert made.status_code == 201, made.text


async def test_an_administrator_s_agent_is_not_refused_for_another_user_s_tool_of_the_same_name(
    client: httpx.AsyncClient, database: Database, http_mcp_url: str,
) -> None:
    """An administrator's agent naming their own tool `echo` (a server without secrets) is
    accepted: another user's private server with an `echo` tool naming a secret is never
    offered to the agent's runs, and its secret's name is not shown to anyone."""
    _, alice = await make_user(database)
    await synced_tool(client, alice, {
        "name": "alices-srv", "transport": "streamable_http", "url": http_mcp_url,
        "headers": {"X-Key": "${secret:alices_private_label}"}})
    _, admin = await make_user(database, admin=True)
    await synced_tool(client, admin, {
        "name": "admins-srv", "transport": "streamable_http", "url": http_mcp_url})
    made = await client.post("/api/v1/agents", headers=admin, json={
        "name": "A", "slug": "admins-echo", "tool_permissions": ["echo"]})
    assert made.status_code == 201 and "alices_private_label" not in made.text, made.text
