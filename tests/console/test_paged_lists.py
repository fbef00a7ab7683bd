"""Paged lists follow the documented "latest load only" rule (docs/console.md, Usability):
"Load more" and Next are disabled while their page loads, so a double click loads one page,
and a page still loading when the filter changes is dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.console.conftest import sign_in_as
from tests.knowledge.support import upload
from tests.support.identity import make_user

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]


async def _agents(client: httpx.AsyncClient, headers: dict[str, str], n: int) -> None:
    for i in range(n):
        r = await client.post("/api/v1/agents", headers=headers,
                              json={"name": f"Agent {i:03d}", "slug": f"agent-{i:03d}"})
        assert r.status_code == 201, r.text


async def _tasks(client: httpx.AsyncClient, headers: dict[str, str], n: int) -> None:
    for i in range(n):
        r = await client.post("/api/v1/tasks-board", headers=headers,
                              json={"title": f"Task {i:03d}"})
        assert r.status_code == 201, r.text


async def test_agents_load_more_double_click_loads_one_page(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
    client: httpx.AsyncClient,
) -> None:
    """A double click on the agents' Load more loads the next page once (no duplicate rows)."""
    user_id, headers = await make_user(database)
    await _agents(client, headers, 60)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/agents")
    await page.locator("#agents-body tr").nth(24).wait_for()
    await page.locator("#agents-more").dblclick()
    await page.locator("#agents-body tr").nth(49).wait_for()
    await page.wait_for_load_state("networkidle")
    names = await page.locator("#agents-body tr td:first-child a").all_inner_texts()
    assert len(names) == len(set(names)) == 50, f"{len(names)} rows, {len(set(names))} distinct"


async def test_tasks_board_load_more_double_click_loads_one_page(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
    client: httpx.AsyncClient,
) -> None:
    """A double click on the tasks board's Load more loads the next page of 50 once."""
    user_id, headers = await make_user(database)
    await _tasks(client, headers, 120)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/tasks-board")
    await page.locator("#board-body tr").nth(49).wait_for()
    await page.locator("#board-more").dblclick()
    await page.locator("#board-body tr").nth(99).wait_for()
    await page.wait_for_load_state("networkidle")
    assert await page.locator("#board-body tr").count() == 100


async def test_tasks_board_filter_change_drops_a_late_page(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
    client: httpx.AsyncClient,
) -> None:
    """A Load more page still loading when the board's status filter changes is dropped: no
    "to do" task lands under the "Done" filter."""
    user_id, headers = await make_user(database)
    await _tasks(client, headers, 60)  # all "to do"
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/tasks-board")
    await page.locator("#board-body tr").nth(49).wait_for()
    next_page_asked = asyncio.Event()

    async def slow_next_page(route: Any) -> None:
        if "cursor=" in route.request.url:
            next_page_asked.set()
            await asyncio.sleep(2)
        await route.continue_()

    await page.route("**/api/v1/tasks-board?*", slow_next_page)
    await page.locator("#board-more").click()
    await asyncio.wait_for(next_page_asked.wait(), 10)
    await page.locator("#board-status").select_option("done")  # no task is done
    await page.locator("#board-empty").wait_for()
    await page.wait_for_timeout(2500)  # past the late page's answer
    shown = await page.locator("#board-body tr").count()
    assert shown == 0, f"{shown} 'to do' tasks listed under the 'Done' filter"
    assert await page.locator("#board-more").is_hidden()


async def test_documents_next_double_click_then_previous_is_first_page(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
    client: httpx.AsyncClient,
) -> None:
    """Next double-clicked moves one page, and Previous then goes back to the first page."""
    user_id, headers = await make_user(database)
    for i in range(45):
        r = await upload(client, headers, f"doc{i:03d}.txt", f"hello {i}".encode())
        assert r.status_code == 202, r.text
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/documents")
    rows = page.locator("#documents tbody tr")
    await rows.nth(19).wait_for()
    first = await rows.first.locator(".doc-name").inner_text()
    await page.locator("#docs-next").dblclick()
    await page.wait_for_load_state("networkidle")
    await page.wait_for_timeout(500)
    await page.locator("#docs-prev").click()
    await page.wait_for_load_state("networkidle")
    await page.wait_for_timeout(500)
    assert await rows.first.locator(".doc-name").inner_text() == first
    assert await page.locator("#docs-prev").is_disabled()
