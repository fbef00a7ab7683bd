"""Administration pages in a real browser: approving and suspending accounts (and the
audit log showing it, with a verified chain), groups and members, an LLM provider's
health, retrying a dead letter; administrators only."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text

from roost.db.engine import Database
from roost.identity.accounts import create_user
from roost.identity.models import User
from roost.keyfiles import KeyMaterial
from roost.llm.models import LLMProviderRow
from roost.principal import SYSTEM
from roost.tasks.models import BackgroundTask, TaskStatus
from roost.tasks.worker import reap_expired
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.tasks import handlers  # noqa: F401 - registers the test task types
from tests.tasks.support import enqueue

pytestmark = pytest.mark.needs_browser


async def _admin(page: Any, console: str, database: Database, keys: KeyMaterial, *,
                 theme: str = "dark") -> uuid.UUID:
    admin_id, _ = await make_user(database, admin=True, username="boss")
    async with database.transaction() as session:
        (await session.get_one(User, admin_id)).theme = theme
    await sign_in_as(page.context, console, database, keys, admin_id)
    return admin_id


async def _accept_dialogs(dialog: Any) -> None:
    await dialog.accept()


async def _status_of(database: Database, username: str) -> str:
    async with database.transaction() as session:
        user = await session.scalar(select(User).where(User.username == username))
    assert user is not None
    return user.status


async def test_approve_and_suspend_accounts_then_read_and_verify_the_audit_log(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    await _admin(page, console, database, test_keys)
    async with database.transaction() as session:
        await create_user(session, SYSTEM, username="pendy", email="pendy@example.test",
                          password=None, status="pending_approval", first_becomes_root=False)
    await make_user(database, username="sammy")
    async with database.transaction() as session:  # enough for a second page of accounts
        for n in range(50):
            await create_user(session, SYSTEM, username=f"extra{n:02d}", password=None,
                              email=f"extra{n:02d}@example.test", status="suspended",
                              first_becomes_root=False)
    page.on("dialog", _accept_dialogs)  # "Suspend sammy?"

    await page.goto("/console/admin/users")
    await page.get_by_role("row").filter(has_text="sammy").wait_for()
    await assert_accessible(page)
    await page.get_by_label("Status").select_option("pending_approval")
    pending = page.get_by_role("row").filter(has_text="pendy")
    await pending.get_by_role("button", name="Approve pendy").click()
    await pending.get_by_text("Active", exact=True).wait_for()
    assert await _status_of(database, "pendy") == "active"

    await page.get_by_label("Status").select_option("")
    sammy = page.get_by_role("row").filter(has_text="sammy")
    await sammy.get_by_role("button", name="Suspend sammy").click()
    await sammy.get_by_text("Suspended", exact=True).wait_for()
    await sammy.get_by_role("button", name="Reactivate sammy").wait_for()
    assert await _status_of(database, "sammy") == "suspended"
    # The admin's own row offers no way to lock themselves out.
    assert await page.get_by_role("button", name="Suspend boss").count() == 0
    rows = page.locator("#users tr")
    assert await rows.count() == 50
    await page.get_by_role("button", name="Load more").click()
    await rows.filter(has_text="extra49").wait_for()
    assert await rows.count() == 53
    await page.get_by_role("button", name="Load more").wait_for(state="hidden")

    await page.get_by_label("Username", exact=True).fill("newbie")
    await page.get_by_label("Email").fill("newbie@example.test")
    await page.get_by_role("button", name="Create user").click()
    await page.get_by_role("row").filter(has_text="newbie@example.test").wait_for()
    await screenshot(page, "admin-users")

    # Phone width: nothing sticks out sideways (wide tables scroll in their own box).
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.reload()
    await page.get_by_role("row").filter(has_text="sammy").wait_for()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await assert_accessible(page)
    await screenshot(page, "admin-users-phone")
    await page.set_viewport_size({"width": 1280, "height": 800})

    await page.get_by_role("link", name="Audit log").click()
    await page.wait_for_url(re.compile(r"/console/admin/audit$"))
    entries = page.locator("#entries tr")
    await entries.filter(has_text="user.approved").wait_for()
    await entries.filter(has_text="user.updated").first.wait_for()
    approved = entries.filter(has_text="user.approved")
    await approved.get_by_text("boss", exact=True).wait_for()  # the actor by name, not by id
    await assert_accessible(page)

    await page.get_by_label("Action").fill("user.approved")
    await page.get_by_role("button", name="Apply filters").click()
    await entries.filter(has_text="user.updated").first.wait_for(state="detached")
    assert await entries.count() == 1 and await approved.count() == 1
    await page.get_by_label("From (your time)").fill("2099-01-01T00:00")
    await page.get_by_role("button", name="Apply filters").click()
    await page.get_by_text("No entries match these filters.").wait_for()
    await page.get_by_role("button", name="Clear").click()
    await entries.filter(has_text="user.updated").first.wait_for()
    await page.get_by_label("Action").fill("user.approved")
    await page.get_by_role("button", name="Apply filters").click()
    await entries.filter(has_text="user.updated").first.wait_for(state="detached")

    await page.get_by_role("button", name="Verify chain").click()
    verdict = page.get_by_role("status").filter(has_text="Chain intact")
    await verdict.wait_for()
    async with database.transaction() as session:
        total: int = (await session.execute(text("SELECT count(*) FROM audit_logs"))).scalar_one()
    assert f"{total} entries checked" in await verdict.inner_text()
    # The head by its chain position (chain_seq), not an entry "#" as the list numbers seq.
    head = re.search(r"Head: chain position (\d+), hash ([0-9a-f]{64})",
                     await verdict.inner_text())
    assert head is not None, await verdict.inner_text()
    async with database.transaction() as session:  # the newest entry linked when it verified
        row_hash = (await session.execute(text(
            "SELECT encode(row_hash, 'hex') FROM audit_logs WHERE chain_seq = :s"),
            {"s": int(head[1])})).scalar_one()
    assert head[2] == row_hash
    await screenshot(page, "admin-audit")


async def test_create_a_group_and_add_a_member(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    await _admin(page, console, database, test_keys)
    await make_user(database, username="gina")
    await page.goto("/console/admin/groups")
    await page.get_by_text("No groups yet.").wait_for()
    await assert_accessible(page)
    await page.get_by_label("Name", exact=True).fill("Night shift")
    await page.get_by_label("Description (optional)").fill("<b>on call</b> after 18:00")
    await page.get_by_role("button", name="Create group").click()
    await page.get_by_role("heading", name="Members of Night shift").wait_for()
    await page.get_by_role("cell", name="<b>on call</b> after 18:00").wait_for()  # text, not HTML
    await page.get_by_label("Username, email or user id").fill("gina")
    await page.get_by_role("button", name="Add member").click()
    members = page.locator("#members tr")
    await members.filter(has_text="gina").wait_for()
    assert await members.filter(has_text="boss").count() == 1  # the creator is its admin
    await assert_accessible(page)
    await screenshot(page, "admin-groups")


async def test_the_groups_page_shows_every_group_a_page_at_a_time(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """GET /api/v1/groups answers pages: the page shows the first 100 groups by name and
    "Load more groups" the rest, then hides."""
    admin_id = await _admin(page, console, database, test_keys)
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO groups (id, name, created_by, created_at, updated_at) "
            "SELECT gen_random_uuid(), 'team-' || lpad(i::text, 3, '0'), :u, now(), now() "
            "FROM generate_series(1, 130) i"), {"u": admin_id})
    await page.goto("/console/admin/groups")
    rows = page.locator("#groups tr")
    await page.get_by_role("rowheader", name="team-100", exact=True).wait_for()
    assert await rows.count() == 100
    more = page.get_by_role("button", name="Load more groups")
    await more.click()
    await page.get_by_role("rowheader", name="team-130", exact=True).wait_for()
    assert [await rows.nth(i).locator("th").inner_text() for i in (0, 99, 100, 129)] == [
        "team-001", "team-100", "team-101", "team-130"]
    assert await rows.count() == 130
    await more.wait_for(state="hidden")


async def test_add_a_provider_and_check_its_health(
    page: Any, console: str, database: Database, test_keys: KeyMaterial, stub: StubServer,
) -> None:
    await _admin(page, console, database, test_keys, theme="light")
    await page.goto("/console/admin/providers")
    await page.get_by_text("No providers yet").wait_for()
    await assert_accessible(page)
    await page.get_by_label("Name", exact=True).fill("stub")
    await page.get_by_label("Base URL").fill(stub.base_url)
    await page.get_by_label("API key").fill("sk-very-secret-test-key")
    await page.get_by_label("Default model").fill("stub-model")
    await page.get_by_role("button", name="Add provider").click()
    row = page.locator("#providers tr").filter(has_text="stub")
    await row.get_by_text("API key set").wait_for()
    assert await page.get_by_label("API key").input_value() == ""
    assert "sk-very-secret-test-key" not in await page.content()

    await row.get_by_role("button", name="Check health of stub").click()
    await row.get_by_text("healthy", exact=True).wait_for()
    await page.get_by_role("status").filter(has_text="stub: healthy").wait_for()
    await row.get_by_role("button", name="Sync models of stub").click()
    await row.get_by_text("1 of 1 enabled").wait_for()
    async with database.transaction() as session:
        provider = await session.scalar(select(LLMProviderRow).where(LLMProviderRow.name == "stub"))
    assert provider is not None and provider.health_status == "healthy"
    assert provider.api_key_encrypted is not None
    await assert_accessible(page)
    await screenshot(page, "admin-providers")


async def test_retry_a_dead_letter(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    await _admin(page, console, database, test_keys, theme="light")
    # A job whose only attempt ran out its lease: the reaper dead-letters it.
    task = await enqueue(database, "test.noop", {}, max_retries=0)
    async with database.transaction() as session:
        await session.execute(text(
            "UPDATE background_tasks SET status = 'running', worker_id = 'w', attempts = 1,"
            " lease_expires_at = now() - interval '1 second' WHERE id = :id"), {"id": task.id})
    await reap_expired(database)

    await page.goto("/console/admin/queue")
    letters = page.locator("#dead tr")
    await letters.filter(has_text="test.noop").wait_for()
    dead_count = page.get_by_role("table", name="Statistics").get_by_role("row").filter(
        has_text="dead letter").get_by_role("cell").last
    assert await dead_count.inner_text() == "1"
    await assert_accessible(page)
    await letters.locator("summary").click()
    await letters.locator("pre").filter(has_text="lease").first.wait_for()  # the error, as text
    await assert_accessible(page)
    await screenshot(page, "admin-queue")

    await page.get_by_role("button", name=re.compile(r"^Retry test\.noop")).click()
    await page.get_by_text("No dead letters").wait_for()
    assert await letters.count() == 0
    await page.locator("#tasks tr").filter(has_text="test.noop").get_by_text("queued").wait_for()
    async with database.transaction() as session:
        row = await session.get_one(BackgroundTask, task.id)
    assert row.status == TaskStatus.QUEUED


async def test_a_plain_user_gets_the_not_found_page(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    user_id, _ = await make_user(database, username="plain")
    await sign_in_as(page.context, console, database, test_keys, user_id)
    for section in ("users", "audit"):
        answer = await page.goto(f"/console/admin/{section}")
        assert answer is not None and answer.status == 404
        await page.get_by_role("heading", name="Not found").wait_for()
    assert await page.get_by_role("link", name="Admin").count() == 0
    await assert_accessible(page)
