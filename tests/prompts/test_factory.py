"""Factory defaults published at start-up: idempotent, ``chat.system`` from
ROOST_CHAT_SYSTEM_PROMPT, ``agent.system`` already there from the migration."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi import FastAPI

from roost.db.engine import Database
from roost.prompts.render import InvalidVariables
from roost.prompts.service import factory_defaults, resolve, seed_factory, use
from roost.prompts.startup import lifespan


async def test_start_up_publishes_factory_defaults_once(database: Database) -> None:
    async with database.transaction() as session:
        # agent.system: the migration's text is the code's, so nothing new.
        assert await seed_factory(session, factory_defaults(None)) == []
        assert await seed_factory(session, factory_defaults("Be kind.")) == ["chat.system"]
    async with database.transaction() as session:
        assert await seed_factory(session, factory_defaults("Be kind.")) == []  # a restart
        found = await resolve(session, None, "chat.system")
        assert found is not None and (found.prompt_text, found.version) == ("Be kind.", 1)
    async with database.transaction() as session:
        # The setting changed: a new factory version, production moved to it.
        assert await seed_factory(session, factory_defaults("Be brief.")) == ["chat.system"]
        found = await resolve(session, None, "chat.system")
        assert found is not None and (found.prompt_text, found.version) == ("Be brief.", 2)
        agent = await resolve(session, None, "agent.system")
        assert agent is not None and agent.version == 1 and "{{agent_name}}" in agent.prompt_text


async def test_seeded_chat_system_renders_date_and_refuses_other_placeholders(database: Database) -> None:
    """ROOST_CHAT_SYSTEM_PROMPT using {{date}} (the value chat offers) renders the date, as a
    published version defining it would; never literal braces."""
    async with database.transaction() as session:
        await seed_factory(session, factory_defaults("Today is {{date}}."))
    async with database.transaction() as session:
        used = await use(session, None, "chat.system", values={"date": "2026-12-06"})
    assert used is not None and used.text == "Today is 2026-12-06.", used
    # Any other placeholder is no value chat offers: refused as the API refuses it, and
    # start-up leaves it unpublished (logged) while it still publishes the others.
    with pytest.raises(InvalidVariables, match="name"):
        async with database.transaction() as session:
            await seed_factory(session, factory_defaults("Hello {{name}}."))
    app = FastAPI()
    app.state.db, app.state.settings = database, SimpleNamespace(
        chat_system_prompt="Hello {{name}}.")
    async with lifespan(app):
        pass
    async with database.transaction() as session:
        found = await resolve(session, None, "chat.system")
        assert found is not None and found.prompt_text == "Today is {{date}}."
