"""The prompt version a run recorded is the one it uses when it resumes, even once its
user can no longer read it (docs/prompts.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from tests.agents.conftest import make_agent, running_worker, test_settings, wait_for_run
from tests.chat.conftest import add_provider
from tests.prompts.conftest import Headers, User, make_group, publish
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply

__all__ = ["test_settings"]  # fixtures


async def test_resumed_run_keeps_group_version_after_user_left_group(
        client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
        database: Database, user: User, other_user: User, app: FastAPI,
        test_settings: Settings) -> None:
    """A run recorded its group's prompt version, then its user left the group and the
    worker crashed: the resumed run uses that version (it resolved the key again under
    the user's rights, found none and failed, or would have taken another one)."""
    user_id, headers = user
    admin_id, admin_h = other_user
    group_id = await make_group(database, (admin_id, "admin"), (user_id, "member"))
    await add_provider(client, admin_headers, stub)
    version = await publish(client, admin_h, "team.system", "Team rules apply.",
                            scope="group", group_id=str(group_id))
    agent = await make_agent(database, user_id, system_prompt="Be brief.",
                             config={"system_prompt_key": "team.system"})
    resp = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
                             headers=headers)
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["id"]
    # What the first attempt committed before the crash: the version it resolved.
    async with database.transaction() as session:
        await session.execute(text("UPDATE runs SET system_prompt_id = :p WHERE id = :r"),
                              {"p": version["id"], "r": run_id})
        await session.execute(text(
            "DELETE FROM user_group_memberships WHERE user_id = :u AND group_id = :g"),
            {"u": user_id, "g": group_id})
    stub.script(Reply("Done."))
    async with running_worker(app, database, test_settings):
        run: dict[str, Any] = await asyncio.wait_for(
            wait_for_run(client, headers, run_id, within=60), 90)
    assert run["status"] == "completed", run.get("error_message")
    assert run["system_prompt_id"] == version["id"], run

