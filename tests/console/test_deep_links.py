"""The console's deep links in a real browser: a NUL in a page's id is the not-found page
and one in a shared filter link reaches the page, which shows the API's refusal (the
server answered the API's problem JSON for both, raw in the browser); a date in a usage
link the date field cannot hold falls back to the default range."""

from __future__ import annotations

from typing import Any

import pytest

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.console.conftest import sign_in_as
from tests.support.identity import make_user

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]


async def test_a_nul_in_a_pages_id_is_the_not_found_page(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """An id with a NUL (``/console/agents/%00``, a mangled link) is a malformed id like
    any other: the console's 404 page."""
    from playwright.async_api import expect

    user_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    answer = await page.goto("/console/agents/%00")
    assert answer is not None
    assert "text/html" in (answer.headers.get("content-type") or ""), await page.content()
    assert answer.status == 404
    await expect(page.get_by_text("There is nothing here")).to_be_visible()


async def test_a_nul_in_a_shared_filter_link_shows_the_code_page(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """A code-versions link whose filter holds a NUL (``/console/code?branch=a%00b``) opens
    the page, which says what is wrong in its alert region, as for any value the API
    refuses."""
    from playwright.async_api import expect

    user_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    answer = await page.goto("/console/code?branch=a%00b")
    assert answer is not None
    assert "text/html" in (answer.headers.get("content-type") or ""), await page.content()
    await expect(page.get_by_role("alert")).to_contain_text("NUL")


async def test_a_malformed_since_in_the_usage_link_keeps_a_date_range(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """A hand-typed usage link with a date the date field cannot hold
    (``?since=2026-5-1``): the field falls back to its default, as a missing ``since``
    does (it was empty above a report over a range nobody could see, and the URL was
    rewritten to ``since=``)."""
    from playwright.async_api import expect

    user_id, _ = await make_user(database, admin=True)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/admin/usage?since=2026-5-1&group_by=model")
    await expect(page.get_by_text("No usage in this range.").first).to_be_visible()
    await expect(page.locator("#usage-since")).not_to_have_value("")
    assert "since=&" not in page.url, page.url

