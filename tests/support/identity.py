"""Test helper other domains use: an active user and Authorization headers for it.

    user_id, headers = await make_user(database)
    user_id, headers = await make_user(database, admin=True, username="alice")

The account is created through the identity service (no password, so no hashing
cost) and the headers carry a freshly created API key, which the app accepts as
``Authorization: Bearer``.
"""

from __future__ import annotations

import uuid

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
