"""Timestamps sent with a UTC offset other than Z are answered in UTC, as every read of the
same row answers them (roost.inputs.in_utc_range): the write (POST/PATCH/PUT) echoed the
offset sent (``+05:45``) while reads said ``Z``, one instant spelt two ways depending on
the request a client looked at."""

from __future__ import annotations

from datetime import datetime

import httpx
from tests.support.identity import make_user

from roost.db.engine import Database

ODD = "2031-03-04T11:45:30.123456+05:45"  # the instant 2031-03-04T06:00:30.123456Z
UTC_SPELLING = "2031-03-04T06:00:30.123456Z"  # how every read (GET, lists) writes it


async def test_chat_session_expires_at_answered_as_reads_answer_it(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A client creating (or extending) a session with ``expires_at`` in +05:45 expects the
    POST and PATCH answers to spell it as GET and the list do (UTC, ``Z``), not echo the
    request's offset."""
    _, h = await make_user(database)
    made = await client.post("/api/v1/chat/sessions", headers=h, json={"expires_at": ODD})
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    got = await client.get(f"/api/v1/chat/sessions/{sid}", headers=h)
    assert got.json()["expires_at"] == UTC_SPELLING
    assert datetime.fromisoformat(made.json()["expires_at"]) == datetime.fromisoformat(ODD)
    assert made.json()["expires_at"] == got.json()["expires_at"]
    patched = await client.patch(f"/api/v1/chat/sessions/{sid}", headers=h,
                                 json={"expires_at": ODD})
    assert patched.json()["expires_at"] == got.json()["expires_at"]


async def test_api_key_expires_at_answered_as_the_list_answers_it(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A new API key's ``expires_at`` (sent in +05:45) reads the same in the POST answer as
    in the key list (UTC, ``Z``)."""
    _, h = await make_user(database)
    made = await client.post("/api/v1/api-keys", headers=h, json={"name": "k", "expires_at": ODD})
    assert made.status_code == 201, made.text
    listed = await client.get("/api/v1/api-keys", headers=h)
    body = listed.json()
    items = body["items"] if isinstance(body, dict) else body
    mine = next(k for k in items if k["name"] == "k")
    assert mine["expires_at"] == UTC_SPELLING
    assert made.json()["expires_at"] == mine["expires_at"]


async def test_memory_valid_from_answered_as_get_answers_it(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A memory's ``valid_from`` (sent in +05:45) reads the same in the POST answer as in
    GET /memories/{id} (UTC, ``Z``)."""
    _, h = await make_user(database)
    made = await client.post("/api/v1/memories", headers=h, json={
        "content": "likes tea", "valid_from": "2020-03-04T11:45:30.123456+05:45"})
    assert made.status_code == 201, made.text
    got = await client.get(f"/api/v1/memories/{made.json()['id']}", headers=h)
    assert got.json()["valid_from"] == "2020-03-04T06:00:30.123456Z"
    assert made.json()["valid_from"] == got.json()["valid_from"]


async def test_oauth_token_expiry_answered_as_get_answers_it(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A stored OAuth token's ``token_expiry`` (sent in +05:45) reads the same in the PUT
    and PATCH answers as in GET (UTC, ``Z``)."""
    _, h = await make_user(database)
    put = await client.put("/api/v1/users/me/oauth/github", headers=h, json={
        "access_token": "abc", "token_expiry": ODD})
    assert put.status_code == 200, put.text
    got = await client.get("/api/v1/users/me/oauth/github", headers=h)
    assert got.json()["token_expiry"] == UTC_SPELLING
    assert put.json()["token_expiry"] == got.json()["token_expiry"]
    patched = await client.patch("/api/v1/users/me/oauth/github", headers=h, json={
        "token_expiry": ODD})
    assert patched.json()["token_expiry"] == got.json()["token_expiry"]
