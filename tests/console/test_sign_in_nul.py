"""The console's sign-in with a NUL character in what it would store: a 422 naming the field."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.http.auth import CSRF_COOKIE, SESSION_COOKIE
from tests.identity.conftest import password_user

PASSWORD = "plum-velvet-orbit-93!"
CSRF = "c" * 43


async def test_sign_in_with_a_nul_in_the_login_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    """A NUL in the login is refused as a 422 naming `login`, not the database's generic 400."""
    client.cookies.update({CSRF_COOKIE: CSRF})
    answer = await client.post("/console/session", headers={"X-CSRF-Token": CSRF},
                               json={"login": "ann\x00", "password": "whatever-it-is-1"})
    assert answer.status_code == 422, (answer.status_code, answer.text)
    assert "login" in answer.text


async def test_sign_in_with_a_nul_in_the_device_name_is_a_422_naming_the_field(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """The right password with a NUL in device_name: a 422 naming `device_name`, not a 400."""
    await password_user(database, "nulldev", password=PASSWORD)
    client.cookies.update({CSRF_COOKIE: CSRF})
    answer = await client.post("/console/session", headers={"X-CSRF-Token": CSRF},
                               json={"login": "nulldev", "password": PASSWORD,
                                     "device_name": "my\x00laptop"})
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
    async with database.transaction() as session:
        sessions = await session.scalar(text(
            "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE u.username = 'nulldev'"))
    assert sessions == 0
    assert answer.status_code == 422, (answer.status_code, answer.text)
    assert "device_name" in answer.text



async def test_sign_in_with_null_device_fields_is_answered_not_a_500(
    client: httpx.AsyncClient,
) -> None:
    """``device_name: null`` (what the OpenAPI schema allows, and a fuzzer sends) is no
    device name: a wrong login is a 401, never a 500 from the name's length check."""
    answer = await client.post("/api/v1/auth/login", json={
        "login": "nobody", "password": "not-the-password-1", "device_name": None,
        "device_type": None})
    assert answer.status_code == 401, (answer.status_code, answer.text)
