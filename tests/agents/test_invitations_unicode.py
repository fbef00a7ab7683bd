"""Persona and group invitations naming the invitee by an e-mail address typed decomposed."""

from __future__ import annotations

import unicodedata
import uuid

import httpx

from roost.db.engine import Database
from roost.identity.accounts import create_user
from roost.identity.apikeys import create_api_key
from roost.identity.common import principal_for
from roost.principal import SYSTEM
from tests.agents.api import create_persona
from tests.support.identity import make_user

P = "/api/v1/personas"


async def _user_with_email(database: Database, email: str) -> uuid.UUID:
    name = f"u-{uuid.uuid4().hex[:10]}"
    async with database.transaction() as session:
        user = await create_user(session, SYSTEM, username=name, email=email, password=None,
                                 role="user", status="active", first_becomes_root=False)
        await create_api_key(session, principal_for(user), name="probe")
    return user.id


async def test_an_owner_invites_by_a_decomposed_e_mail_address(
        client: httpx.AsyncClient, database: Database) -> None:
    """`POST /api/v1/personas/{id}/members` and `POST /api/v1/groups/{id}/members` find the
    account whatever Unicode form its address is typed in (macOS keyboards send "é"
    decomposed; registration stored it composed; sign-in folds both): they were 404."""
    email = unicodedata.normalize("NFC", f"josé{uuid.uuid4().hex[:6]}@example.test")
    uid = await _user_with_email(database, email)
    _, owner = await make_user(database)
    pid = (await create_persona(client, owner))["id"]
    invited = await client.post(f"{P}/{pid}/members", headers=owner,
                                json={"user": unicodedata.normalize("NFD", email)})
    assert invited.status_code == 202, invited.text
    assert invited.json()["user_id"] == str(uid)

    group = await client.post("/api/v1/groups", headers=owner, json={"name": f"g-{pid[:8]}"})
    assert group.status_code == 201, group.text
    added = await client.post(f"/api/v1/groups/{group.json()['id']}/members", headers=owner,
                              json={"user": unicodedata.normalize("NFD", email)})
    assert added.status_code in (201, 202), added.text
