"""Test helpers other domains use: an active user and Authorization headers for it, and
a user joining a group or a persona.

    user_id, headers = await make_user(database)
    user_id, headers = await make_user(database, admin=True, username="alice")
    await join_group(client, alice, group_id, bob_id, bob)
    await join_persona(client, alice, persona_id, bob_id, bob, role="viewer")

The account is created through the identity service (no password, so no hashing
cost) and the headers carry a freshly created API key, which the app accepts as
``Authorization: Bearer``.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from roost.db.engine import Database
from roost.identity.accounts import create_user
from roost.identity.apikeys import create_api_key
from roost.identity.common import principal_for
from roost.principal import SYSTEM


async def make_user(
    database: Database, *, admin: bool = False, username: str | None = None
) -> tuple[uuid.UUID, dict[str, str]]:
    name = (username or f"user-{uuid.uuid4().hex[:12]}").lower()
    async with database.transaction() as session:
        user = await create_user(
            session, SYSTEM, username=name, email=f"{name}@example.test", password=None,
            role="admin" if admin else "user", status="active",
            first_becomes_root=False,
        )
        created = await create_api_key(session, principal_for(user), name="test helper")
    return user.id, {"Authorization": f"Bearer {created.key}"}


async def _join(
    client: httpx.AsyncClient, collection: str, inviter: dict[str, str], container_id: Any,
    user: uuid.UUID | str, user_headers: dict[str, str], role: str, base_url: str,
) -> dict[str, Any]:
    """Invited to ``/api/v1/<collection>/<id>`` by ``inviter`` (202), then accepting with
    the invitee's own headers (201): the membership's JSON."""
    invited = await client.post(f"{base_url}/api/v1/{collection}/{container_id}/members",
                                headers=inviter, json={"user": str(user), "role": role})
    assert invited.status_code == 202, invited.text
    accepted = await client.post(
        f"{base_url}/api/v1/{collection}/invitations/{invited.json()['id']}/accept",
        headers=user_headers)
    assert accepted.status_code == 201, accepted.text
    membership: dict[str, Any] = accepted.json()
    return membership


async def join_group(
    client: httpx.AsyncClient, admin_headers: dict[str, str], group_id: uuid.UUID | str,
    user: uuid.UUID | str, user_headers: dict[str, str], *, role: str = "member",
    base_url: str = "",
) -> dict[str, Any]:
    """``user`` (an id, username or e-mail) joins the group as a plain group admin's
    additions do (docs/identity.md, "Groups"): invited by one of its admins
    (``admin_headers``, 202), then accepting with their own ``user_headers`` (201).
    ``base_url`` prefixes the paths (a client without one, talking to a served process).
    The membership's JSON."""
    return await _join(client, "groups", admin_headers, group_id, user, user_headers, role,
                       base_url)


async def join_persona(
    client: httpx.AsyncClient, owner_headers: dict[str, str], persona_id: uuid.UUID | str,
    user: uuid.UUID | str, user_headers: dict[str, str], *, role: str = "editor",
    base_url: str = "",
) -> dict[str, Any]:
    """``user`` (an id, username or e-mail) joins the persona as an owner's additions do
    (docs/agents.md, "Personas and members"): invited by one of its owners
    (``owner_headers``, 202), then accepting with their own ``user_headers`` (201).
    ``base_url`` prefixes the paths (a client without one, talking to a served process).
    The membership's JSON."""
    return await _join(client, "personas", owner_headers, persona_id, user, user_headers,
                       role, base_url)
