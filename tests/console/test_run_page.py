"""The run page (/console/runs/{id}) in a real browser: the "Cancel run" button only for
who may cancel (a persona viewer got one that could only answer 403), and a stream the
server refuses (429, over the user's streams) said why instead of "Reconnecting…" asked
again every 3 seconds for ever."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.agents.conftest import make_agent
from tests.agents.roles import make_cast
from tests.agents.test_roles_runs import persona_runs
from tests.console.conftest import sign_in_as
from tests.support.identity import make_user

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]


async def test_a_member_who_may_not_cancel_sees_no_cancel_button(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial, admin_headers: dict[str, str],
) -> None:
    """A persona viewer reads the owner's pending run but may not cancel it: no "Cancel
    run" button; the run's own user has it."""
    from playwright.async_api import expect

    c = await make_cast(client, database, admin_headers)
    _, owner_run, _ = await persona_runs(client, c)
    assert c.viewer.id is not None
    await sign_in_as(page.context, console, database, test_keys, c.viewer.id)
    await page.goto(f"/console/runs/{owner_run}")
    await expect(page.locator("#run-status")).to_contain_text("pending")
    await expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    assert c.owner.id is not None
    await sign_in_as(page.context, console, database, test_keys, c.owner.id)
    await page.goto(f"/console/runs/{owner_run}")
    await expect(page.get_by_role("button", name="Cancel run")).to_be_visible()


async def test_a_run_tab_over_the_stream_limit_says_why(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial, admin_headers: dict[str, str],
) -> None:
    """A user limited to one concurrent stream opens a second running run's page: its
    events request is refused with 429, and the page says so (the API's detail in the
    alert region), then asks again less and less often."""
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    agent = await make_agent(database, user_id)
    limited = await client.put(f"/api/v1/admin/limits/users/{user_id}", json={"streams": 1},
                               headers=admin_headers)
    assert limited.status_code == 200, limited.text
    ids = []
    for _ in range(2):  # no worker: both stay pending, their pages keep streaming
        started = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
                                    headers=headers)
        assert started.status_code == 202, started.text
        ids.append(started.json()["id"])
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto(f"/console/runs/{ids[0]}")
    await expect(page.locator("#live")).to_have_attribute("data-state", "open")
    second = await page.context.new_page()
    await second.goto(f"/console/runs/{ids[1]}")
    await expect(second.get_by_role("alert")).to_contain_text("stream")
