"""A chat session's project: one its owner can see, whoever files the session there."""

from __future__ import annotations

import uuid

import httpx

from tests.chat.conftest import new_session

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
API = "/api/v1/chat/sessions"


async def _project(client: httpx.AsyncClient, headers: Headers, name: str) -> str:
    resp = await client.post("/api/v1/projects", json={"name": name}, headers=headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def test_an_administrator_cannot_put_a_users_session_in_another_users_project(
    client: httpx.AsyncClient, user: User, other_user: User, admin_headers: Headers,
) -> None:
    """Creating or moving a user's session into a project only someone else sees is a
    404 naming project_id (the administrator sees every project; the owner does not)."""
    user_id, h = user
    _, other = other_user
    theirs = await _project(client, other, "b-only")
    created = await client.post(API, json={"owner_id": str(user_id), "project_id": theirs},
                                headers=admin_headers)
    assert created.status_code == 404, created.text
    assert created.json().get("field") == "project_id", created.text
    sid = (await new_session(client, h))["id"]
    moved = await client.patch(f"{API}/{sid}", json={"project_id": theirs},
                               headers=admin_headers)
    assert moved.status_code == 404, moved.text
    assert (await client.get(f"{API}/{sid}", headers=h)).json()["project_id"] is None


async def test_an_administrator_may_file_a_users_session_in_the_users_project(
    client: httpx.AsyncClient, user: User, admin_headers: Headers,
) -> None:
    user_id, h = user
    mine = await _project(client, h, "a-own")
    created = await client.post(API, json={"owner_id": str(user_id), "project_id": mine},
                                headers=admin_headers)
    assert created.status_code == 201, created.text
    assert created.json()["project_id"] == mine
    sid = (await new_session(client, h))["id"]
    moved = await client.patch(f"{API}/{sid}", json={"project_id": mine}, headers=admin_headers)
    assert moved.status_code == 200, moved.text
