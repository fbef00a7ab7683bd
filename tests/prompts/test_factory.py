"""Factory defaults published at start-up: idempotent, ``chat.system`` from
ROOST_CHAT_SYSTEM_PROMPT, ``agent.system`` already there from the migration."""

from __future__ import annotations

from roost.db.engine import Database
from roost.prompts.service import factory_defaults, resolve, seed_factory


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
