"""One persona and everyone who might reach it, for tests/agents/test_roles_*.py: its
owner, a member of each role, another tenant, the owner's group peer, an administrator
and the operator token (``make_cast``); a checker that collects every unexpected answer
before failing, so that one run shows the whole picture (``Checker``); and the tools the
tests give the persona's agents."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from roost.db.engine import Database
from roost.tools.models import McpServer, Tool
from tests.agents.api import Headers, add_member, create_persona, named_user
from tests.support.identity import join_group, make_user


@dataclass(eq=False)
class Actor:
    name: str
    id: uuid.UUID | None
    headers: Headers


@dataclass
class Cast:
    pid: str
    persona: dict[str, Any]
    owner: Actor  # the persona's owner_id
    co_owner: Actor  # a member with role owner
    editor: Actor
    viewer: Actor
    outsider: Actor  # another tenant: no relation at all
    group_peer: Actor  # shares a group with the owner (groups cannot be members)
    admin: Actor  # a user with role admin
    operator: Actor  # the operator token (an administrator that is no user)

    def all(self) -> list[Actor]:
        return [self.owner, self.co_owner, self.editor, self.viewer, self.outsider,
                self.group_peer, self.admin, self.operator]

    def readers(self) -> tuple[Actor, ...]:
        """Who sees the persona and what is its: its members and the administrators."""
        return (self.owner, self.co_owner, self.editor, self.viewer, self.admin, self.operator)


async def _actor(database: Database, prefix: str) -> Actor:
    user_id, _, headers = await named_user(database, prefix)
    return Actor(prefix, user_id, headers)


async def make_cast(client: httpx.AsyncClient, database: Database,
                    admin_headers: Headers, **persona_fields: Any) -> Cast:
    """A persona named "Secret Project Falcon" ("confidential-description"), made by its
    owner through the API, with a member-owner, an editor and a viewer, and the owner in
    a group with the peer."""
    owner = await _actor(database, "owner")
    co_owner = await _actor(database, "coowner")
    editor = await _actor(database, "editor")
    viewer = await _actor(database, "viewer")
    outsider = await _actor(database, "outsider")
    group_peer = await _actor(database, "peer")
    admin_id, admin = await make_user(database, admin=True)
    persona = await create_persona(client, owner.headers, name="Secret Project Falcon",
                                   description="confidential-description", **persona_fields)
    pid = persona["id"]
    await add_member(client, owner.headers, pid, str(co_owner.id), "owner", co_owner.headers)
    await add_member(client, owner.headers, pid, str(editor.id), "editor", editor.headers)
    await add_member(client, owner.headers, pid, str(viewer.id), "viewer", viewer.headers)
    group = await client.post("/api/v1/groups", json={"name": f"team-{uuid.uuid4().hex[:6]}"},
                              headers=owner.headers)
    assert group.status_code == 201, group.text
    await join_group(client, owner.headers, group.json()["id"], str(group_peer.id),
                     group_peer.headers)
    return Cast(pid=pid, persona=persona, owner=owner, co_owner=co_owner, editor=editor,
                viewer=viewer, outsider=outsider, group_peer=group_peer,
                admin=Actor("admin", admin_id, admin),
                operator=Actor("operator", None, admin_headers))


@dataclass
class Checker:
    """Collects (route, actor, expected, got, body) for every answer that is not the
    expected one; ``done()`` fails listing them all."""

    wrong: list[str] = field(default_factory=list)

    def check(self, route: str, actor: Actor | str, resp: httpx.Response,
              expected: int | tuple[int, ...], *, leak: tuple[str, ...] = ()) -> None:
        """``resp`` answers one of the ``expected`` statuses; an error answer holds none
        of the ``leak`` strings."""
        who = actor if isinstance(actor, str) else actor.name
        allowed = (expected,) if isinstance(expected, int) else expected
        if resp.status_code not in allowed:
            self.wrong.append(f"{route} as {who}: expected {allowed}, got "
                              f"{resp.status_code} {resp.text[:200]}")
        for needle in leak:
            if needle and resp.status_code >= 400 and needle in resp.text:
                self.wrong.append(f"{route} as {who}: error answer leaks {needle!r}: "
                                  f"{resp.text[:200]}")

    def that(self, ok: bool, what: str) -> None:
        if not ok:
            self.wrong.append(what)

    def done(self) -> None:
        assert not self.wrong, "\n" + "\n".join(self.wrong)


async def private_tool(database: Database, owner: uuid.UUID | None,
                       name: str = "private_echo", description: str | None = None) -> uuid.UUID:
    """An MCP tool (and its server, never reached) owned by ``owner``, inserted as the
    system."""
    async with database.transaction() as session:
        server = McpServer(user_id=owner, name=f"srv-{uuid.uuid4().hex[:8]}",
                           transport="streamable_http", url="http://127.0.0.1:9/mcp")
        session.add(server)
        await session.flush()
        tool = Tool(user_id=owner, created_by=owner, mcp_server_id=server.id, kind="mcp",
                    name=name, description=description, input_schema={"type": "object"})
        session.add(tool)
        await session.flush()
        return tool.id


async def synced_tool(client: httpx.AsyncClient, headers: Headers, server: dict[str, Any],
                      name: str = "echo") -> str:
    """Register the MCP server ``server`` (the body of ``POST /mcp-servers``) as the user
    of ``headers``, sync it, and answer the id of its tool ``name``."""
    created = await client.post("/api/v1/mcp-servers", headers=headers, json=server)
    assert created.status_code == 201, created.text
    server_id = created.json()["id"]
    synced = await client.post(f"/api/v1/mcp-servers/{server_id}/sync", headers=headers)
    assert synced.status_code == 200, synced.text
    listed = await client.get("/api/v1/tools", params={"server_id": server_id, "name": name},
                              headers=headers)
    [tool] = listed.json()["items"]
    return str(tool["id"])


async def tool_steps(client: httpx.AsyncClient, headers: Headers,
                     run_id: str) -> list[dict[str, Any]]:
    """The run's tool-call steps, in order."""
    steps = (await client.get(f"/api/v1/runs/{run_id}/steps", headers=headers)).json()
    return [s for s in steps if s["step_type"] == "tool_call"]
