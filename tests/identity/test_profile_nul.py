"""A NUL in a profile or settings field is a 422 naming the field (PostgreSQL refused it:
the anonymous 400 "a value is out of range or malformed")."""

from __future__ import annotations

from typing import Any

import httpx

from roost.db.engine import Database
from tests.support.identity import make_user


async def test_a_nul_in_a_profile_field_is_a_422_naming_it(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A NUL in a profile's text or JSON field (`first_name`, `display_name`, `bio`,
    `github`, `personal_address`) should be a 422 naming the field, as a NUL in a full
    name or an OAuth token's `scope` is (docs/identity.md). Instead it reaches PostgreSQL,
    which keeps no NUL in text or jsonb: the answer is the anonymous 400 "a value is out
    of range or malformed for its field"."""
    _, headers = await make_user(database)
    bodies: list[dict[str, Any]] = [
        {"first_name": "Jo\x00e"}, {"display_name": "Jo\x00e"}, {"bio": "bio\x00"},
        {"github": "jo\x00e"}, {"personal_address": {"street": "Main\x00St"}},
    ]
    for body in bodies:
        answer = await client.patch("/api/v1/users/me/profile", headers=headers, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert next(iter(body)) in answer.text, (body, answer.text)


async def test_a_nul_in_a_settings_field_is_a_422_naming_it(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A NUL in a settings value (a model name in `model_preferences`, a string in the
    JSONB preferences `agent_settings` / `personal_goals`) should be a 422 naming the
    field (a NUL in a `model_preferences` key or in `timezone` already is). Instead it
    reaches PostgreSQL: the anonymous 400 "a value is out of range or malformed"."""
    _, headers = await make_user(database)
    bodies: list[dict[str, Any]] = [
        {"model_preferences": {"selected": "llama\x00"}},
        {"agent_settings": {"max_steps": "a\x00"}},
        {"personal_goals": ["ship\x00"]},
    ]
    for body in bodies:
        answer = await client.patch("/api/v1/users/me/settings", headers=headers, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert next(iter(body)) in answer.text, (body, answer.text)
