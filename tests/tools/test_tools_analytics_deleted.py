"""Tool analytics filtered by the id of a deleted tool."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from tests.support.identity import make_user
from tests.tools.test_tools_analytics import LIST, add_runs, by_name, foreign_tool

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_list_filter_by_the_tool_id_of_a_deleted_tool(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Runs of a deleted tool are listed under the tool_id they were written with, and a
    filter on that id gives their statistics (it was a 404, "tool does not exist"), or an
    empty list for a window without them (a 404 too: only the window's runs were looked
    at); a foreign or unknown id is still a 404."""
    alice_id, alice = await make_user(database)
    tool_id = await foreign_tool(database, alice_id)
    await add_runs(database, alice_id, tool_id, "private_tool",
                   [("success", 5, timedelta(hours=1), None)])
    async with database.transaction() as session:
        await session.execute(text("DELETE FROM tools WHERE id = :id"), {"id": tool_id})
    listed = by_name((await client.get(LIST, headers=alice)).json())
    assert listed["private_tool"]["tool_id"] == str(tool_id)
    resp = await client.get(LIST, params={"tool_id": str(tool_id)}, headers=alice)
    assert resp.status_code == 200, resp.text
    assert [i["calls"] for i in resp.json()["items"]] == [1]
    recent = await client.get(LIST, params={"tool_id": str(tool_id), "window": "30m"},
                              headers=alice)
    assert recent.status_code == 200 and recent.json()["items"] == [], recent.text
    unknown = await client.get(LIST, params={"tool_id": str(uuid.uuid4())}, headers=alice)
    assert unknown.status_code == 404, unknown.text
    _, bob = await make_user(database)
    foreign = await client.get(LIST, params={"tool_id": str(tool_id)}, headers=bob)
    assert foreign.status_code == 404, foreign.text
