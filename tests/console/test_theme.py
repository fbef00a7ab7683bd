"""The account's theme (``users.theme``): the settings API takes the console's two themes
only, and a name stored before that rule still reads (the console shows it as dark)."""

from __future__ import annotations

import httpx
import pytest

from roost.db.engine import Database
from roost.identity.models import User
from roost.keyfiles import KeyMaterial
from tests.console.conftest import session_cookies
from tests.support.identity import make_user


@pytest.mark.parametrize("theme", ["purple", "Dark", "", "light "])
async def test_only_dark_or_light_is_accepted(
    client: httpx.AsyncClient, database: Database, theme: str,
) -> None:
    _, headers = await make_user(database)
    light = await client.patch("/api/v1/users/me/settings", headers=headers,
                               json={"theme": "light"})
    assert light.status_code == 200 and light.json()["theme"] == "light"
    refused = await client.patch("/api/v1/users/me/settings", headers=headers,
                                 json={"theme": theme})
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("validation-error")
    after = await client.get("/api/v1/users/me/settings", headers=headers)
    assert after.json()["theme"] == "light"


async def test_a_theme_stored_before_the_rule_still_reads(
    client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
) -> None:
    user_id, headers = await make_user(database)
    async with database.transaction() as session:
        (await session.get_one(User, user_id)).theme = "solarized"
    read = await client.get("/api/v1/users/me/settings", headers=headers)
    assert read.status_code == 200 and read.json()["theme"] == "solarized"
    # Another setting changes without the theme being sent again.
    changed = await client.patch("/api/v1/users/me/settings", headers=headers,
                                 json={"timezone": "Europe/Paris"})
    assert changed.status_code == 200 and changed.json()["theme"] == "solarized"
    client.cookies.update(await session_cookies(database, test_keys, user_id))
    page = await client.get("/console/memory")
    assert page.status_code == 200 and '<html lang="en" data-theme="dark">' in page.text
