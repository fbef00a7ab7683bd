"""The workflows and workflow pages in a real browser: create a workflow, paste a graph
and see the validation error naming the node (marked in the drawing), fix it, save,
publish version 1, change it, diff, roll back, archive, delete; another user's workflow is
the 404 page; names are text, never markup."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user
from tests.workflows.graphs import simple_graph, ten_node_graph

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]
EVIL = '<img src=x onerror="window.pwned=1">Summaries'


def _accept_dialogs(page: Any) -> None:
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))


async def test_validate_save_publish_diff_and_roll_back_a_workflow(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    user_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/workflows")
    await page.get_by_text("No workflows yet").wait_for()
    await assert_accessible(page)
    await page.get_by_label("Name").fill(EVIL)
    await page.get_by_label("Description").fill("Summarize what comes in.")
    await page.get_by_role("button", name="Create workflow").click()

    await page.wait_for_url(re.compile(r"/console/workflows/[0-9a-f-]{36}$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text(EVIL)  # text, not markup
    await expect(page.locator("#workflow-status")).to_contain_text("not published")
    await expect(page.locator("#graph-empty")).to_be_visible()
    await expect(page.locator("#workflow-runs")).to_have_count(1)  # the runs' place, empty
    await assert_accessible(page)

    # A pasted graph whose llm node has no prompt: the error names the node, marked in red.
    graph = simple_graph()
    broken = copy.deepcopy(graph)
    del broken["nodes"][1]["data"]["prompt"]
    editor = page.get_by_label("Graph as JSON")
    await editor.fill(json.dumps(broken, indent=2))
    await expect(page.locator("#editor-state")).to_have_text("Unsaved changes")
    await page.get_by_role("button", name="Validate").click()
    problems = page.locator("#validation-errors li")
    await expect(problems.first).to_contain_text("Node l")
    await expect(page.locator('#validation-errors li[data-node-id="l"]')).to_have_attribute(
        "data-code", "invalid_data")
    await expect(page.locator('#graph g.wf-node[data-node-id="l"]')).to_have_class(
        re.compile(r"\binvalid\b"))
    await expect(page.locator('#graph g.wf-node[data-node-id="s"]')).not_to_have_class(
        re.compile(r"\binvalid\b"))
    await screenshot(page, "workflow-invalid")
    await assert_accessible(page)
    await page.get_by_role("button", name="Save", exact=True).click()  # refused as well
    await expect(page.locator("#validation")).to_contain_text("Not saved")
    await expect(page.locator("#validation-errors")).to_contain_text("Node l")

    # Fixed: valid, saved, published as version 1.
    await editor.fill(json.dumps(graph, indent=2))
    await page.get_by_role("button", name="Validate").click()
    await expect(page.locator("#validation")).to_contain_text("The graph is valid: 3 nodes, 2 edges")
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.locator("#validation")).to_contain_text("Saved: 3 nodes, 2 edges")
    await expect(page.locator("#editor-state")).to_have_text("")
    await expect(page.locator("#graph g.wf-node")).to_have_count(3)
    await expect(page.locator("#graph g.wf-edge")).to_have_count(2)
    # Every node of simple_graph() is at (0, 0): drawn in columns instead, and said so.
    await expect(page.locator("#graph-source")).to_contain_text("laid out automatically")
    await page.get_by_label("Note for the new version").fill("first cut")
    await page.get_by_role("button", name="Publish").click()
    versions = page.locator("#versions-body tr")
    await expect(versions).to_have_count(1)
    await expect(versions.first).to_contain_text("Version 1")
    await expect(versions.first).to_contain_text("first cut")
    await expect(page.locator("#workflow-status")).to_contain_text("active")
    await expect(page.locator("#workflow-status")).to_contain_text("latest version 1")

    # Changed and saved: the diff names the node and what changed in it.
    changed = simple_graph("Translate: {{ input }}")
    await editor.fill(json.dumps(changed, indent=2))
    # "Saved" is still shown from the first save: wait for this save to clear the state.
    await expect(page.locator("#editor-state")).to_have_text("Unsaved changes")
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.locator("#editor-state")).to_have_text("")
    await expect(page.locator("#validation")).to_contain_text("Saved")
    await expect(page.get_by_label("From", exact=True)).to_have_value("1")
    await expect(page.get_by_label("To", exact=True)).to_have_value("draft")
    await page.get_by_role("button", name="Show differences").click()
    diff = page.locator("#diff-result")
    await expect(diff).to_contain_text("version 1 → the draft")
    await expect(diff).to_contain_text("Changed: l (data)")
    await screenshot(page, "workflow-diff")
    await assert_accessible(page)

    # Rolled back: the draft is version 1's graph again, the diff is empty.
    _accept_dialogs(page)
    await page.get_by_role("button", name="Roll back to version 1").click()
    await expect(page.locator("#validation")).to_contain_text("The draft is now version 1's graph")
    await expect(editor).to_have_value(re.compile(r"Summarize: \{\{ input \}\}"))
    await expect(diff).to_contain_text("no differences")
    await expect(versions).to_have_count(1)

    # Status, then delete.
    await page.get_by_label("Status", exact=True).select_option("archived")
    await page.get_by_role("button", name="Change status").click()
    await expect(page.locator("#workflow-status")).to_contain_text("archived")
    await page.reload()
    await expect(page.locator("#workflow-status")).to_contain_text("archived")
    await expect(editor).to_have_value(re.compile(r"Summarize"))
    await page.get_by_role("button", name="Delete workflow").click()
    await page.wait_for_url(re.compile(r"/console/workflows$"))
    await page.get_by_text("No workflows yet").wait_for()
    assert await page.evaluate("window.pwned") is None


async def test_a_canvas_graph_is_drawn_and_listed(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    answer = await client.post("/api/v1/workflows", headers=headers,
                               json={"name": "Ten nodes", **ten_node_graph()})
    assert answer.status_code == 201, answer.text
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/workflows")
    row = page.locator("#workflows-body tr")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("draft")
    await expect(row).to_contain_text("not published")
    await row.get_by_role("link", name="Ten nodes").click()
    await page.wait_for_url(re.compile(r"/console/workflows/[0-9a-f-]{36}$"))
    await expect(page.locator("#graph g.wf-node")).to_have_count(10)
    await expect(page.locator("#graph g.wf-edge")).to_have_count(12)
    await expect(page.locator('#graph g.wf-node[data-node-id="check"]')).to_contain_text("condition")
    await expect(page.locator('#graph g.wf-node[data-node-id="start"]')).to_contain_text("Start")
    await expect(page.locator("#graph svg")).to_have_attribute(
        "aria-label", "Workflow graph: 10 nodes, 12 edges")
    await expect(page.locator("#diff-result")).to_contain_text("Publish a version")
    await expect(page.locator("#graph-source")).to_have_text("(the saved draft)")  # as placed
    await screenshot(page, "workflow-graph")
    await assert_accessible(page)
    await page.get_by_role("button", name="Switch to light theme").click()
    await expect(page.locator("html")).to_have_attribute("data-theme", "light")
    await screenshot(page, "workflow-graph-light")
    await assert_accessible(page)
    await page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing sticks out
    await expect(page.locator("#graph svg")).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await screenshot(page, "workflow-phone")
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.get_by_role("button", name="Change status").click()  # unchanged: a note
    await page.get_by_label("Status", exact=True).select_option("active")  # no version yet: 409
    await page.get_by_role("button", name="Change status").click()
    await expect(page.locator("#notice")).to_contain_text("publish the workflow before activating it")
    await expect(page.get_by_label("Status", exact=True)).to_have_value("draft")


async def test_a_stored_graph_with_positions_far_apart_is_laid_out_and_drawn(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """A graph stored before positions were bounded (x = -1e308 and 1e308): its extent was
    Infinity, the SVG's viewBox and width "Infinity", nothing drawn and SVG attribute
    errors in the browser's console. Such positions are laid out in columns instead."""
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    created = await client.post("/api/v1/workflows", headers=headers,
                                json={"name": "Far apart", **simple_graph()})
    assert created.status_code == 201, created.text
    async with database.transaction() as session:
        await session.execute(text(
            "UPDATE workflows SET nodes = jsonb_set(jsonb_set(nodes, '{0,position,x}', "
            "'-1e308'), '{1,position,x}', '1e308') WHERE id = :id"),
            {"id": created.json()["id"]})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto(f"/console/workflows/{created.json()['id']}")
    await expect(page.locator("#graph g.wf-node")).to_have_count(len(simple_graph()["nodes"]))
    view_box = await page.locator("#graph svg").get_attribute("viewBox")
    assert view_box is not None and "Infinity" not in view_box and "e+" not in view_box, view_box
    assert not errors, errors


async def test_another_users_workflow_is_not_found(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    _, owner_headers = await make_user(database)
    created = await client.post("/api/v1/workflows", headers=owner_headers,
                                json={"name": "Private", **simple_graph()})
    assert created.status_code == 201, created.text
    intruder_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, intruder_id)
    for path in (f"/console/workflows/{created.json()['id']}", f"/console/workflows/{uuid.uuid4()}",
                 "/console/workflows/not-an-id"):
        answer = await page.goto(path)
        assert answer is not None and answer.status == 404, path
        await page.get_by_role("heading", name="Not found").wait_for()
    await assert_accessible(page)
    await page.goto("/console/workflows")
    await page.get_by_text("No workflows yet").wait_for()  # not in the list either


async def _make_workflows(client: httpx.AsyncClient, headers: dict[str, str], count: int) -> None:
    for index in range(count):
        answer = await client.post("/api/v1/workflows", headers=headers, json={"name": f"wf-{index:03d}"})
        assert answer.status_code == 201, answer.text


async def _listed_names(page: Any) -> list[str]:
    names: list[str] = await page.locator("#workflows-body tr td.wide a").all_inner_texts()
    return names


async def test_workflows_load_more_double_click_lists_each_once(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """A quick double click on "Load more" loads the next page once: each workflow is listed
    once (the button is disabled while its page loads)."""
    user_id, headers = await make_user(database)
    await _make_workflows(client, headers, 30)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    cursors: list[str] = []
    page.on("request", lambda request: cursors.append(request.url)
            if "/api/v1/workflows?" in request.url and "cursor=" in request.url else None)
    await page.goto("/console/workflows")
    await page.locator("#workflows-body tr").nth(24).wait_for()
    await page.locator("#workflows-more").dblclick()
    await page.locator("#workflows-more").wait_for(state="hidden")
    await page.wait_for_timeout(1000)  # a second page, if one was asked for, has landed
    names = await _listed_names(page)
    assert len(names) == len(set(names)) == 30, names
    assert len(cursors) == 1, cursors


async def test_workflows_filter_change_drops_a_late_page(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """Changing the status filter while "Load more" is loading: the late page of the old
    filter is dropped, the list shows the new filter's rows only."""
    user_id, headers = await make_user(database)
    await _make_workflows(client, headers, 30)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/workflows")
    await page.locator("#workflows-body tr").nth(24).wait_for()

    async def slow_next_page(route: Any) -> None:
        if "cursor=" in route.request.url:
            await asyncio.sleep(1.5)
        await route.continue_()
    await page.route("**/api/v1/workflows?*", slow_next_page)
    await page.locator("#workflows-more").click()
    await page.locator("#status-filter").select_option("archived")
    await page.wait_for_timeout(3000)  # past the slow page's answer
    assert await _listed_names(page) == []
    assert await page.locator("#workflows-empty").is_visible()


async def test_workflow_description_preview_keeps_emoji_whole(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """The list's 140-character description preview is cut between characters, never
    through an emoji (half a surrogate pair)."""
    user_id, headers = await make_user(database)
    answer = await client.post("/api/v1/workflows", headers=headers,
                               json={"name": "emoji", "description": "a" * 139 + "😀" * 5})
    assert answer.status_code == 201, answer.text
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/workflows")
    preview = page.locator("#workflows-body tr td.wide div")
    await preview.wait_for()
    # Compared in the page: a lone surrogate cannot travel to Python as text.
    whole: bool = await preview.evaluate("n => n.textContent === 'a'.repeat(139) + '\\u{1F600}'")
    assert whole
