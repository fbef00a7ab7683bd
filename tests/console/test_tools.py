"""The tools and tool pages in a real browser, against real MCP servers (tests/tools'
echo server over stdio and over streamable HTTP): add a server, sync it, check its health,
search, call a tool through the form generated from its input schema, see the API's
problem for a wrong value; what users without administration may add; another user's
tool is the 404 page."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from roost.config import Settings
from roost.db.engine import Database
from roost.identity.models import User
from roost.keyfiles import KeyMaterial
from roost.knowledge.config import KnowledgeConfig
from roost.tools import stdiopool
from roost.tools.search import embed_descriptions
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user
from tests.tools.conftest import ECHO_SERVER, http_mcp_url  # noqa: F401 - a fixture

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _stop_stdio_servers() -> AsyncIterator[None]:
    """Calls leave the stdio echo server running in this loop's pool: stop it."""
    yield
    await stdiopool.close_default()


async def test_add_sync_check_an_mcp_server_then_call_its_tool_from_the_schema_form(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
    test_settings: Settings,
) -> None:
    from playwright.async_api import expect

    admin_id, _ = await make_user(database, admin=True)
    await sign_in_as(page.context, console, database, test_keys, admin_id)
    await page.goto("/console/tools")
    await expect(page.locator("#tools-body")).to_contain_text("current_time")  # built-ins
    await page.get_by_text("No MCP servers yet").wait_for()
    await page.locator("#server-form").get_by_label("Name").fill("echo")
    await page.locator("#server-form").get_by_label("Transport").select_option("stdio")
    await page.locator("#server-form").get_by_label("Command").fill(sys.executable)
    await page.locator("#server-form").get_by_label("Arguments").fill(str(ECHO_SERVER))
    await page.locator("#server-form").get_by_label("Global: every user may call its tools").check()
    await assert_accessible(page)
    await page.get_by_role("button", name="Add server").click()

    server = page.locator("li.server", has=page.get_by_role("heading", name="echo"))
    await expect(server).to_contain_text("global")
    await expect(server).to_contain_text("unknown")
    await page.get_by_role("button", name="Sync echo").click()
    await expect(page.get_by_role("alert")).to_contain_text("Synced echo")
    tools = page.locator("#tools-body")
    await expect(tools.get_by_role("link", name="add", exact=True)).to_be_visible()
    await expect(tools.locator("tr", has_text="Return the text unchanged.")).to_contain_text("echo")
    await page.get_by_role("button", name="Check health of echo").click()
    await expect(server.locator(".health")).to_contain_text("healthy")
    await expect(server).to_contain_text(" ms")
    await expect(server).to_contain_text("echo-test 1.0")  # what the server says it is
    await assert_accessible(page)

    # Semantic search, once the descriptions are embedded (a job does that on a worker).
    await embed_descriptions(database, KnowledgeConfig.from_settings(test_settings).embedder)
    await page.get_by_label("Search by what a tool does").fill("add two integers")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(page.locator("#tools-caption")).to_contain_text("best match first")
    await expect(tools.locator("tr").first).to_contain_text("Add two integers.")
    await page.get_by_role("button", name="Show all tools").click()
    # The whole list again before a link of it is clicked (not the search's, replaced
    # under the click: the click then took nothing, and the tool's page never came).
    await expect(page.locator("#tools-caption")).not_to_contain_text("best match first")

    await tools.get_by_role("link", name="add", exact=True).click()
    await page.get_by_role("heading", name="add", exact=True).wait_for()
    # Labelled by the properties' titles (the required mark is not part of the name).
    first = page.get_by_role("spinbutton", name="A", exact=True)
    second = page.get_by_role("spinbutton", name="B", exact=True)
    assert await first.get_attribute("required") == "" and await second.get_attribute("step") == "1"
    assert await first.get_attribute("aria-describedby") == "arg-0-help"
    await assert_accessible(page)
    await first.fill("2")
    await second.fill("40")
    await page.get_by_role("button", name="Call tool").click()
    await expect(page.locator("#result-text")).to_have_text("42")
    await expect(page.locator("#result-meta")).to_contain_text("success")
    await expect(page.locator("#runs-body tr")).to_have_count(1)
    await screenshot(page, "tool-call")
    await assert_accessible(page)

    # A value of the wrong type: the API's problem, the field marked.
    await first.fill("2.5")
    await page.get_by_role("button", name="Call tool").click()
    await expect(page.get_by_role("alert")).to_contain_text("do not match the tool's input schema")
    await expect(page.locator("#result-text")).to_contain_text("at /a")
    await expect(first).to_have_attribute("aria-invalid", "true")
    # The same call written as JSON.
    await page.get_by_label("Write the arguments as JSON").check()
    await page.get_by_label("Arguments (a JSON object)").fill('{"a": 1, "b": 2}')
    await page.get_by_role("button", name="Call tool").click()
    await expect(page.locator("#result-text")).to_have_text("3")

    # A string without a length limit is a text area; what comes back is text.
    await page.goto("/console/tools")
    await page.locator("#tools-body").get_by_role("link", name="echo", exact=True).click()
    text = page.get_by_role("textbox", name="Text", exact=True)
    assert await text.evaluate("node => node.tagName") == "TEXTAREA"
    await text.fill('<img src=x onerror="window.pwned=1">')
    await page.get_by_role("button", name="Call tool").click()
    await expect(page.locator("#result-text")).to_have_text('<img src=x onerror="window.pwned=1">')
    assert await page.evaluate("window.pwned") is None
    await text.fill("")  # required, left empty
    await page.get_by_role("button", name="Call tool").click()
    await expect(page.locator("#result-text")).to_contain_text("required property 'text' is missing")
    await expect(text).to_have_attribute("aria-invalid", "true")

    await page.goto("/console/tools")  # delete it, with its tools
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Delete echo").click()
    await page.get_by_text("No MCP servers yet").wait_for()
    await expect(page.locator("#tools-body")).not_to_contain_text("Return the text unchanged.")


async def test_a_user_adds_an_http_server_and_another_user_cannot_see_its_tools(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
    http_mcp_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    from playwright.async_api import expect

    user_id, _ = await make_user(database)
    async with database.transaction() as session:  # the other theme, for its contrast
        (await session.get_one(User, user_id)).theme = "light"
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.set_viewport_size({"width": 390, "height": 844})  # a phone
    await page.goto("/console/tools")
    await page.get_by_text("No MCP servers yet").wait_for()
    # Commands on the host and global servers are for administrators.
    assert await page.get_by_role("option", name="stdio").is_disabled()
    assert await page.get_by_label("Global: every user may call its tools").count() == 0
    await page.locator("#server-form").get_by_label("Name").fill("metadata")
    await page.locator("#server-form").get_by_label("URL").fill("http://169.254.169.254/mcp")
    await page.get_by_role("button", name="Add server").click()
    await expect(page.get_by_role("alert")).to_contain_text("169.254.169.254")  # refused
    await page.get_by_role("alert").click()  # on a phone it covers the button: tap it away
    await page.locator("#server-form").get_by_label("Name").fill("remote-echo")
    await page.locator("#server-form").get_by_label("URL").fill(http_mcp_url)
    await page.locator("#server-form").get_by_label("Headers").fill("X-Team: blue")
    await page.get_by_role("button", name="Add server").click()
    server = page.locator("li.server", has=page.get_by_role("heading", name="remote-echo"))
    await expect(server).to_contain_text("X-Team")  # the name, never the value
    await page.get_by_role("button", name="Sync remote-echo").click()
    echo = page.locator("#tools-body").get_by_role("link", name="echo", exact=True)
    await expect(echo).to_be_visible()
    await screenshot(page, "tools-phone")
    await assert_accessible(page)
    tool_url = await echo.get_attribute("href")
    assert tool_url is not None

    other_id, _ = await make_user(database)
    await page.context.clear_cookies()
    await sign_in_as(page.context, console, database, test_keys, other_id)
    answer = await page.goto(tool_url)
    assert answer is not None and answer.status == 404
    await page.get_by_role("heading", name="Not found").wait_for()
    await assert_accessible(page)
    await page.goto("/console/tools")
    await page.get_by_text("No MCP servers yet").wait_for()
    await expect(page.locator("#tools-body")).to_contain_text("current_time")
    await expect(page.locator("#tools-body")).not_to_contain_text("Return the text unchanged.")


async def test_an_administrator_registers_and_checks_language_servers_a_user_uses_them(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """Language servers on the tools page: registered from the form (a real
    jedi-language-server), health checked (the LSP handshake; a command that does not
    exist is shown unhealthy with its error), deleted; a user sees the global one without
    the form or the delete button."""
    from playwright.async_api import expect

    from tests.tools.test_lsp import JEDI

    admin_id, _ = await make_user(database, admin=True)
    await sign_in_as(page.context, console, database, test_keys, admin_id)
    await page.goto("/console/tools")
    await page.get_by_text("No language servers yet").wait_for()
    for name, command in (("jedi", str(JEDI)), ("ghost", "/nonexistent/ghost-lsp")):
        form = page.locator("#lsp-form")
        await form.get_by_label("Name").fill(name)
        await form.get_by_label("Language").fill("python")
        await form.get_by_label("Command").fill(command)
        await form.get_by_label("Files it serves").fill("*.py\n*.pyi")
        await page.get_by_role("button", name="Register language server").click()
        await expect(page.locator("#lsp-servers h3", has_text=name)).to_be_visible()
    jedi, ghost = page.locator("#lsp-servers li", has_text="jedi"), page.locator(
        "#lsp-servers li", has_text="ghost")
    await expect(jedi).to_contain_text("*.py, *.pyi")
    await jedi.get_by_role("button", name="Check health of jedi").click()
    await expect(jedi.locator(".health")).to_contain_text("healthy", timeout=30_000)
    await expect(jedi).to_contain_text("jedi-language-server")  # what it reports itself
    await ghost.get_by_role("button", name="Check health of ghost").click()
    await expect(ghost.locator(".health")).to_contain_text("unhealthy", timeout=30_000)
    await expect(ghost.locator(".step-error")).to_be_visible()
    await screenshot(page, "tools-lsp")
    await assert_accessible(page)
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await ghost.get_by_role("button", name="Delete ghost").click()
    await expect(page.locator("#lsp-servers li")).to_have_count(1)

    user_id, _ = await make_user(database)
    await page.context.clear_cookies()
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/tools")
    await expect(page.locator("#lsp-servers li")).to_have_count(1)
    await expect(page.get_by_role("button", name="Check health of jedi")).to_be_visible()
    await expect(page.get_by_role("button", name="Delete jedi")).to_have_count(0)
    await expect(page.locator("#lsp-form")).to_have_count(0)


async def test_mcp_server_refused_name_says_which_field(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """Adding an MCP server with a refused name: the notice says the name is wrong and why,
    not the API's bare "see errors"."""
    user_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/tools")
    await page.locator("#server-name").fill("bad name with spaces!")
    await page.locator("#server-url").fill("http://127.0.0.1:9/mcp")
    await page.locator("#server-form button[type=submit]").click()
    notice = page.locator("#notice")
    await notice.wait_for()
    message = await notice.inner_text()
    assert "name: " in message and "pattern" in message, message
    assert "see errors" not in message and "undefined" not in message, message


async def test_checking_or_syncing_an_mcp_server_with_the_keyboard_keeps_focus_on_the_button(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """A keyboard user presses Enter on "Check health" (then "Sync") of an MCP server: its
    entry is redrawn with the result and the focus stays on the button pressed, where
    before it fell to the top of the page (the button was disabled while it worked)."""
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    made = await client.post("/api/v1/mcp-servers", headers=headers, json={
        "name": "down", "transport": "streamable_http", "url": "http://127.0.0.1:9/mcp"})
    assert made.status_code == 201, made.text
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/tools")
    server = page.locator("li.server", has=page.get_by_role("heading", name="down"))
    notice = page.locator("#notice")
    for name in ("Check health of down", "Sync down"):
        button = page.get_by_role("button", name=name)
        await button.focus()
        await page.keyboard.press("Enter")
        await expect(notice).to_be_visible(timeout=30_000)  # the check's result, or why not
        await expect(button).to_be_enabled(timeout=30_000)
        await expect(button).to_be_focused()
        await page.keyboard.press("Escape")  # closes the notice
        await expect(notice).to_be_hidden()
    await expect(server.locator(".health")).not_to_contain_text("unknown")
