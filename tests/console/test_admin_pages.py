"""The administrators' accounts list and usage report in a real browser: an account
created on the page is listed once when paging reaches it, the report shows the grouping
chosen last whatever order the answers arrive in, and the chart's metric is in the URL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, time
from decimal import Decimal
from typing import Any

import pytest

from roost.billing.models import UsageRecord
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.identity.accounts import create_user
from roost.keyfiles import KeyMaterial
from roost.principal import SYSTEM
from tests.console.conftest import sign_in_as
from tests.support.identity import make_user

pytestmark = pytest.mark.needs_browser


async def _admin(page: Any, console: str, database: Database, keys: KeyMaterial) -> uuid.UUID:
    admin_id, _ = await make_user(database, admin=True, username="boss")
    await sign_in_as(page.context, console, database, keys, admin_id)
    return admin_id


async def test_a_created_account_is_listed_once_after_load_more(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """An administrator with more than one page of accounts creates one, then pages to
    the end of the list: each account appears once, the new one included."""
    await _admin(page, console, database, test_keys)
    async with database.transaction() as session:
        for n in range(55):
            await create_user(session, SYSTEM, username=f"extra{n:02d}", password=None,
                              email=f"extra{n:02d}@example.test", status="active",
                              first_becomes_root=False)
    await page.goto("/console/admin/users")
    await page.get_by_role("row").filter(has_text="extra00").wait_for()
    await page.get_by_label("Username").fill("newcomer")
    await page.get_by_label("Email").fill("newcomer@example.test")
    await page.get_by_role("button", name="Create").click()
    await page.get_by_role("row").filter(has_text="newcomer").first.wait_for()
    more = page.get_by_role("button", name="Load more")
    await more.click()
    await page.get_by_role("row").filter(has_text="extra54").wait_for()
    rows = page.locator("#users tr").filter(has_text="newcomer")
    assert await rows.count() == 1


async def test_usage_shows_the_grouping_chosen_last(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """Choosing "Per model" and then "Per user" shows the per-user report, whatever
    order the two answers arrive in: a late answer for an older choice is dropped."""
    admin = await _admin(page, console, database, test_keys)
    today = datetime.combine(utcnow().date(), time(0, 5), utcnow().tzinfo)
    async with database.transaction() as session:
        session.add(UsageRecord(user_id=admin, request_type="chat", model="gpt-a",
                                tokens_input=10, tokens_output=5, credits_used=0,
                                latency_ms=10, success=True, created_at=today,
                                cost=Decimal("0")))
    await page.goto("/console/admin/usage")
    await page.get_by_role("img", name="Bar chart of tokens per day").wait_for()

    release = asyncio.Event()

    async def slow_model(route: Any) -> None:
        if "group_by=model" in route.request.url:
            await release.wait()
        await route.continue_()

    await page.route("**/api/v1/billing/usage?*", slow_model)
    await page.get_by_label("Group by").select_option("model")
    await page.get_by_label("Group by").select_option("user")
    await page.get_by_role("img", name="Bar chart of tokens per user").wait_for()
    release.set()  # the older answer may now arrive (unless the page dropped its request)
    await page.wait_for_timeout(500)
    assert await page.get_by_label("Group by").input_value() == "user"
    assert await page.get_by_role("img", name="Bar chart of tokens per user").count() == 1
    assert "group_by=user" in page.url


async def test_usage_chart_metric_survives_a_reload(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """The usage page keeps its choices in the URL: a reload after choosing "Chart shows:
    Cost" still charts the cost."""
    await _admin(page, console, database, test_keys)
    await page.goto("/console/admin/usage")
    await page.get_by_role("img", name="Bar chart of tokens per day").or_(
        page.get_by_text("No usage in this range.").first).wait_for()
    await page.get_by_label("Chart shows").select_option("cost")
    await page.reload()
    await page.get_by_label("Chart shows").wait_for()
    await page.wait_for_load_state("networkidle")
    assert await page.get_by_label("Chart shows").input_value() == "cost"
