"""The code versions pages in a real browser: the list (newest first, filters in the URL,
paging), a version with its files and its diff against the parent as styled text lines,
Validate queuing the configured check and the page following it to "failed" with the
check's output, then "passed" on the parent; a run's versions from the run page; another
user's version is the 404 page; messages and file contents are text, never markup."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.codeversions import jobs
from roost.codeversions.config import CodeVersionsConfig
from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.tasks.worker import Worker
from tests.codeversions.conftest import APP_SAYS_OK, chat_session, make_run
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user
from tests.support.workers import in_process_worker

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]
EVIL = '<img src=x onerror="window.pwned=1">Fix the app'
CHECK = re.escape(" ".join(APP_SAYS_OK[:2]))  # the check's command, as the page shows it


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    """The console's settings, with one quick check: app.py must say "ok"."""
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_timeout_s=5.0,
                    llm_local_model=False, knowledge_embedding_provider="hash",
                    max_request_bytes=256 * 1024, code_checks=[APP_SAYS_OK],
                    code_check_timeout_s=60)


@contextlib.asynccontextmanager
async def _worker(database: Database, settings: Settings) -> AsyncIterator[Worker]:
    jobs.config_override = CodeVersionsConfig.from_settings(settings)
    try:
        async with in_process_worker(database) as worker:
            yield worker
    finally:
        jobs.config_override = None


async def _commit(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/code-versions", json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


async def test_list_open_a_version_see_its_diff_and_validate_it(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial, test_settings: Settings,
) -> None:
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    session_id = await chat_session(client, headers)
    first = await _commit(client, headers, chat_session_id=session_id, message="Start the app",
                          files={"app.py": "status = 'ok'\n", "notes.md": "<b>notes</b>\nline 2\n"})
    second = await _commit(client, headers, chat_session_id=session_id, message=f"{EVIL}\n\nbody",
                           files={"app.py": "status = 'bad'\nextra = 1\n", "notes.md": None,
                                  "lib/util.py": "def f():\n    return '<script>x</script>'\n"})
    await sign_in_as(page.context, console, database, test_keys, user_id)

    await page.goto("/console/code")
    rows = page.locator("#versions-body tr")
    await expect(rows).to_have_count(2)
    newest = rows.nth(0)
    await expect(newest).to_contain_text(second["version_hash"][:10])
    await expect(newest).to_contain_text(EVIL)  # the subject line, as text
    await expect(newest).not_to_contain_text("body")
    await expect(newest).to_contain_text("3 files")
    await expect(newest).to_contain_text("main")
    await expect(newest).to_contain_text("not validated")
    await expect(rows.nth(1)).to_contain_text("Start the app")
    await expect(rows.nth(1)).to_contain_text("2 files")
    await expect(page.get_by_role("link", name="Code", exact=True)).to_have_attribute(
        "aria-current", "page")
    await screenshot(page, "code-versions")
    await assert_accessible(page)

    # The filters are the URL's: this chat's versions, a branch without any.
    await page.get_by_label("Chat session id").fill("not an id")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#notice")).to_contain_text("is not an id")
    await page.get_by_label("Chat session id").fill(session_id)
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(rf"/console/code\?chat_session_id={session_id}$"))
    await expect(rows).to_have_count(2)
    await expect(page.locator("#filter-summary")).to_contain_text("Showing the versions of this chat")
    await page.get_by_label("Branch").fill("feature")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"branch=feature"))
    await page.get_by_text("No code versions match these filters").wait_for()
    await page.get_by_role("button", name="Clear").click()
    await page.wait_for_url(re.compile(r"/console/code$"))
    await expect(rows).to_have_count(2)

    # The newest version: commit, parent, files, the diff as lines.
    await rows.nth(0).get_by_role("link", name=second["version_hash"][:10]).click()
    await page.wait_for_url(f"**/console/code/{second['id']}")
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Commit {second['version_hash'][:10]}")
    await expect(page.locator("#version-message")).to_have_text(f"{EVIL}\n\nbody")
    details = page.locator("#version-details")
    await expect(details).to_contain_text(second["version_hash"])
    await expect(details).to_contain_text(first["version_hash"])  # the parent
    await expect(details.get_by_role("link", name="the chat")).to_have_attribute(
        "href", f"/console/chat/{session_id}")
    files = page.locator("#files-body tr")
    await expect(files).to_have_count(3)
    for path, change in (("app.py", "modified"), ("notes.md", "deleted"), ("lib/util.py", "added")):
        await expect(files.filter(has_text=path)).to_contain_text(change)
    await expect(files.filter(has_text="app.py")).to_contain_text("+2")
    await expect(page.locator("#diff-summary")).to_contain_text("3 files changed")
    diff = page.locator("#diff")
    await expect(diff.locator(".line.add", has_text="+status = 'bad'")).to_have_count(1)
    await expect(diff.locator(".line.del", has_text="-status = 'ok'")).to_have_count(1)
    await expect(diff.locator(".line.del", has_text="-<b>notes</b>")).to_have_count(1)
    await expect(diff.locator(".line.add", has_text="<script>x</script>")).to_have_count(1)
    await expect(diff.locator(".line.hunk").first).to_contain_text("@@")
    await expect(diff.locator(".line.file")).to_have_count(3)
    assert await diff.locator("b, script, img").count() == 0  # text, never markup
    await expect(page.locator("#version-status")).to_contain_text("not validated")
    await expect(page.locator("#validation-text")).to_contain_text("Not validated yet")
    await assert_accessible(page)

    # Validate: queued while no worker runs, then the page follows the worker to "failed".
    await page.get_by_role("button", name="Validate").click()
    await expect(page.locator("#version-status")).to_contain_text("queued")
    await expect(page.locator("#validation-text")).to_contain_text("the checks wait for a worker")
    await expect(page.get_by_role("button", name="Validate")).to_be_disabled()
    async with _worker(database, test_settings):
        await expect(page.locator("#version-status")).to_contain_text("failed")
        await expect(page.locator("#validation-text")).to_contain_text("at least one check failed")
        check = page.locator("#checks li.check")
        await expect(check).to_have_count(1)
        await expect(check.get_by_role("heading")).to_contain_text(re.compile(CHECK))
        await expect(check).to_contain_text("exit code 1")
        await expect(check.locator("pre")).to_contain_text("app.py: status = 'bad'")
        await expect(page.get_by_role("button", name="Validate again")).to_be_enabled()
        await screenshot(page, "code-version-failed")
        await assert_accessible(page)
        await page.get_by_role("button", name="Light theme").click()  # the diff's colours too
        await expect(page.locator("html")).to_have_attribute("data-theme", "light")
        await assert_accessible(page)

        # Its parent passes (the check reads the commit's own app.py).
        await page.goto(f"/console/code/{first['id']}")
        await expect(page.locator("#version-details")).to_contain_text("none: the repository's first commit")
        await page.get_by_role("button", name="Validate").click()
        await expect(page.locator("#version-status")).to_contain_text("passed")
        await expect(page.locator("#validation-text")).to_contain_text("every check succeeded")
        await expect(page.locator("#checks li.check")).to_contain_text("exit code 0")
        await expect(page.locator("#checks li.check pre")).to_contain_text("app.py: status = 'ok'")
    await assert_accessible(page)
    # Again with no worker: queued, the last results still shown and said to be old.
    await page.get_by_role("button", name="Validate again").click()
    await expect(page.locator("#version-status")).to_contain_text("queued")
    await expect(page.locator("#validation-text")).to_contain_text("from the previous validation")
    await expect(page.locator("#validation-live")).to_be_visible()
    await expect(page.locator("#checks li.check")).to_contain_text("exit code 0")
    await page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing sticks out
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await screenshot(page, "code-version-phone")
    await page.set_viewport_size({"width": 1280, "height": 800})

    await page.goto("/console/code")  # the list shows the outcomes
    await expect(rows.nth(0)).to_contain_text("failed")
    await expect(rows.nth(1)).to_contain_text("queued")
    await page.goto(f"/console/chat/{session_id}")  # the chat links to its versions
    await page.get_by_role("link", name="Code versions").click()
    await page.wait_for_url(re.compile(rf"/console/code\?chat_session_id={session_id}$"))
    await expect(rows).to_have_count(2)
    assert await page.evaluate("window.pwned") is None


async def test_a_runs_versions_and_another_users_version_is_not_found(
    page: Any, browser: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    owner_id, owner_headers = await make_user(database)
    run_id = await make_run(database, owner_id)
    on_run = await _commit(client, owner_headers, run_id=str(run_id), branch="feature/x",
                           message="From the run", files={"main.py": "print('hi')\n"})
    session_id = await chat_session(client, owner_headers)
    await _commit(client, owner_headers, chat_session_id=session_id, message="In the chat",
                  files={"a.txt": "a\n"})
    await sign_in_as(page.context, console, database, test_keys, owner_id)
    await page.goto(f"/console/runs/{run_id}")
    await page.get_by_role("link", name="Code versions of this run").click()
    await page.wait_for_url(re.compile(rf"/console/code\?run_id={run_id}$"))
    rows = page.locator("#versions-body tr")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text("From the run")
    await expect(rows).to_contain_text("feature/x")
    await expect(page.get_by_label("Run id")).to_have_value(str(run_id))
    await page.goto("/console/code?branch=feature/x")
    await expect(rows).to_have_count(1)
    await page.goto(f"/console/code/{on_run['id']}")
    await expect(page.get_by_role("link", name="This run's versions")).to_have_attribute(
        "href", f"/console/code?run_id={run_id}")
    await expect(page.locator(".line.add")).to_have_text("+print('hi')")
    await assert_accessible(page)

    intruder_id, _ = await make_user(database)
    context = await browser.new_context(base_url=console)
    try:
        other = await context.new_page()
        await sign_in_as(context, console, database, test_keys, intruder_id)
        for path in (f"/console/code/{on_run['id']}", f"/console/code/{uuid.uuid4()}",
                     "/console/code/not-an-id"):
            answer = await other.goto(path)
            assert answer is not None and answer.status == 404, path
            await other.get_by_role("heading", name="Not found").wait_for()
        await assert_accessible(other)
        await other.goto(f"/console/code?run_id={run_id}")
        await other.get_by_text("No code versions match these filters").wait_for()
        await other.goto("/console/code")  # not in the list either
        await other.get_by_text("No code versions yet").wait_for()
        await assert_accessible(other)
    finally:
        await context.close()


async def test_code_versions_malformed_run_id_in_url_says_so(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """A code-versions link with a malformed run id: the notice names the field, not the
    API's bare "see errors"."""
    user_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/code?run_id=nope")
    notice = page.locator("#notice")
    await notice.wait_for()
    message = await notice.inner_text()
    assert "run_id" in message and "see errors" not in message, message
    assert "undefined" not in await page.locator("main").inner_text()
