"""Names and device names at sign-in that show nothing or hold a NUL: a 422 naming the
field, as everywhere else (not the database's anonymous 400, not an invisible name)."""

from __future__ import annotations

from typing import Any

import httpx

from roost.db.engine import Database
from tests.identity.conftest import ORIGIN, bearer, password_user
from tests.support.identity import make_user
from tests.support.soft_authenticator import SoftAuthenticator


async def _passkey(client: httpx.AsyncClient, headers: dict[str, str],
                   authenticator: SoftAuthenticator, name: str = "Laptop") -> dict[str, Any]:
    begin = await client.post("/api/v1/auth/passkeys/register/begin", headers=headers,
                              json={"name": name})
    assert begin.status_code == 200, begin.text
    credential = authenticator.create(begin.json()["options"], origin=ORIGIN)
    finish = await client.post("/api/v1/auth/passkeys/register/finish", headers=headers,
                               json={"challenge_id": begin.json()["challenge_id"],
                                     "credential": credential})
    assert finish.status_code == 201, finish.text
    return dict(finish.json())


async def test_passkey_login_nul_in_device_name_is_a_422(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A NUL in `device_name` at a passkey sign-in (after a valid assertion) is a 422
    naming it, as at a password sign-in; it reached PostgreSQL: an anonymous 400."""
    await password_user(database, "pkn")
    headers = await bearer(client, "pkn")
    authenticator = SoftAuthenticator()
    await _passkey(client, headers, authenticator)
    start = (await client.post("/api/v1/auth/passkeys/login/begin")).json()
    assertion = authenticator.get(start["options"], origin=ORIGIN)
    answer = await client.post("/api/v1/auth/passkeys/login/finish", json={
        "challenge_id": start["challenge_id"], "credential": assertion,
        "device_name": "Lap\x00top"})
    assert answer.status_code == 422, answer.text
    assert "device_name" in answer.text


async def test_passkey_rename_to_invisible_blank_is_a_422(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A passkey rename to blanks is a 422 (docs/identity.md), and so is one to zero-width
    spaces and a BOM, which show nothing either (it was stored)."""
    await password_user(database, "pkb")
    headers = await bearer(client, "pkb")
    passkey = await _passkey(client, headers, SoftAuthenticator())
    renamed = await client.patch(f"/api/v1/auth/passkeys/{passkey['id']}", headers=headers,
                                 json={"name": "\u200b\u200b\ufeff"})
    assert renamed.status_code == 422, renamed.text


async def test_an_api_key_name_of_invisible_characters_is_a_422(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A name of blanks is refused (422), and so is a name of zero-width spaces, which
    shows just as little in the list (it was created: str.strip keeps them)."""
    _, headers = await make_user(database)
    blank = await client.post("/api/v1/api-keys", headers=headers, json={"name": "   "})
    assert blank.status_code == 422
    answer = await client.post("/api/v1/api-keys", headers=headers,
                               json={"name": "\u200b\u200b"})
    assert answer.status_code == 422, answer.text


async def test_an_api_key_name_of_supplementary_variation_selectors_is_a_422(
    client: httpx.AsyncClient, database: Database
) -> None:
    """The variation selectors U+E0100-U+E01EF show as little as U+FE00-U+FE0F (already
    refused), and so do reserved default-ignorable code points (U+2065): a name of them
    alone is a 422, not a key listed under an empty-looking name (it was created)."""
    _, headers = await make_user(database)
    for name in ("\U000e0100", "\U000e0100\U000e01ef", " \U000e0110 ", "\u2065"):
        answer = await client.post("/api/v1/api-keys", headers=headers, json={"name": name})
        assert answer.status_code == 422, (name.encode("unicode_escape"), answer.text)
