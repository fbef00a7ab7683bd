"""The billing pages in a real browser, the issue's "Done when" through them: an
administrator creates a plan with few credits and prices the model, subscribes a user by
e-mail; the user chats, watches the credits drain on /console/billing and gets the 402
message in the chat when they run out; the administrator pauses and resumes the
subscription, issues the invoice once its period is over (409 before) and the user
downloads it as a PDF.  The analytics export's failure and the streaming metrics show on
the administration page; both pages are for the right people only."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect
from sqlalchemy import select, update

from roost.billing.models import Subscription
from roost.config import Settings
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.identity.accounts import create_user
from roost.keyfiles import KeyMaterial
from roost.principal import SYSTEM
from tests.chat.conftest import add_provider
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]
CHAT_URL = re.compile(r"/console/chat/[0-9a-f-]{36}$")


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    # The analytics export points at a port nothing listens on: "Export now" fails, and
    # the page must say why.
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_timeout_s=5.0,
                    llm_local_model=False, knowledge_embedding_provider="hash",
                    max_request_bytes=256 * 1024,
                    analytics_clickhouse_url="http://127.0.0.1:9/roost")


async def _send(chat: Any, text: str, *, answered: int | None = None) -> None:
    """Send ``text``; with ``answered``, wait until that many answers are stored (the
    usage and the credits are written with the answer, before the stream's last event)."""
    box = chat.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")
    if answered is not None:
        await expect(chat.locator(".message.assistant:not(.streaming)")).to_have_count(answered)
        await expect(chat.locator(".message.assistant .content").last).to_contain_text(
            f"echo: {text}")


async def test_plan_credits_402_invoice_and_pdf(
    page: Any, browser: Any, console: str, client: httpx.AsyncClient,
    admin_headers: dict[str, str], stub: StubServer, database: Database,
    test_keys: KeyMaterial,
) -> None:
    await add_provider(client, admin_headers, stub)
    admin, _ = await make_user(database, admin=True, username="ada")
    carol, _ = await make_user(database, username="carol")
    await sign_in_as(page.context, console, database, test_keys, admin)

    # --- the administrator: plans, a price, a subscription ---------------------------------
    await page.goto("/console/admin/billing")
    await page.get_by_role("heading", name="Billing", level=1).wait_for()
    await expect(page.locator("#plans-empty")).to_be_visible()
    await page.get_by_text("Create a plan").click()
    await page.get_by_label("Key (lower-case slug)").fill("Tiny Plan")  # not a slug: 422
    await page.get_by_label("Name", exact=True).fill("Tiny")
    await page.get_by_label("Price per period").fill("9.99")
    await page.get_by_label("Included credits per period").fill("3")
    await page.get_by_label("Max agents (empty: no limit)").fill("2")
    await page.get_by_role("button", name="Create plan").click()
    await expect(page.get_by_role("alert")).to_contain_text("key: String should match pattern")
    await page.get_by_label("Key (lower-case slug)").fill("tiny")
    await page.get_by_role("button", name="Create plan").click()
    tiny = page.locator('#plans tr[data-key="tiny"]')
    await expect(tiny).to_contain_text("9.99 USD / month")
    await expect(tiny).to_contain_text("agents ≤ 2")
    for key, credits in (("big", "1000"), ("old", "10")):
        await page.get_by_label("Key (lower-case slug)").fill(key)
        await page.get_by_label("Name", exact=True).fill(key.title())
        await page.get_by_label("Price per period").fill("20")
        await page.get_by_label("Included credits per period").fill(credits)
        await page.get_by_role("button", name="Create plan").click()
        await expect(page.locator(f'#plans tr[data-key="{key}"]')).to_be_visible()
    await page.get_by_role("button", name="Deactivate old").click()
    await expect(page.locator('#plans tr[data-key="old"]')).to_contain_text("inactive")
    await expect(page.get_by_label("Plan", exact=True).locator("option")).to_have_text(
        ["Big (big)", "Tiny (tiny)"])

    # The model's price: added, then edited in the table.
    await page.get_by_label("Model or glob").fill("stub-model")
    await page.get_by_label("Input per million").fill("1000")
    await page.get_by_label("Output per million").fill("3000")
    await page.get_by_role("button", name="Add price").click()
    priced = page.locator("#prices tr", has_text="stub-model")
    await expect(priced).to_be_visible()
    await page.get_by_label("Input price per million of stub-model").fill("2000.5")
    await page.get_by_role("button", name="Save the price of stub-model").click()
    await expect(page.locator("#notice")).to_contain_text("Price of stub-model saved.")
    await expect(page.get_by_label("Input price per million of stub-model")).to_have_value(
        "2000.500000")

    # Subscribe by e-mail (an unknown name is said so, nothing subscribed).
    await page.get_by_label("Username or e-mail").fill("nobody@example.test")
    await page.get_by_role("button", name="Subscribe").click()
    await expect(page.get_by_role("alert")).to_contain_text("No account has the username")
    await page.get_by_label("Username or e-mail").fill("carol@example.test")
    await page.get_by_label("Plan", exact=True).select_option("tiny")
    await page.get_by_role("button", name="Subscribe").click()
    row = page.locator("#subs tr", has_text="carol")
    await expect(row).to_contain_text("0 / 0 / 3")
    await expect(row.locator(".badge")).to_have_text("Active")
    await assert_accessible(page)

    # --- the user: the billing page, then chats until the credits run out ---------------------
    user_ctx = await browser.new_context(base_url=console, viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    try:
        await sign_in_as(user_ctx, console, database, test_keys, carol)
        billing = await user_ctx.new_page()
        billing.on("pageerror", lambda error: errors.append(str(error)))
        await billing.goto("/console/billing")
        await expect(billing.locator("#plan-name")).to_have_text("Tiny (tiny)")
        await expect(billing.locator("#plan-status")).to_have_text("Active")
        await expect(billing.locator("#plan-price")).to_have_text("9.99 USD per month")
        await expect(billing.locator("#credits-balance")).to_have_text("3")
        await expect(billing.locator("#invoices-empty")).to_be_visible()
        await expect(billing.locator("#usage-model")).to_contain_text("No usage in this period yet.")
        await assert_accessible(billing)

        chat = await user_ctx.new_page()
        chat.on("pageerror", lambda error: errors.append(str(error)))
        await chat.goto("/console/chat")
        await chat.get_by_role("button", name="Start a new chat").click()
        await chat.wait_for_url(CHAT_URL)
        answers = chat.locator(".message.assistant .content")
        await _send(chat, "hello there", answered=1)

        # One answer costs one credit (the hold of two is settled at the actual amount).
        await billing.bring_to_front()
        await billing.get_by_role("button", name="Refresh").click()
        await expect(billing.locator("#credits-used")).to_have_text("1")
        await expect(billing.locator("#credits-balance")).to_have_text("2")
        await expect(billing.get_by_role("img", name=re.compile("Credits: 1 used"))).to_have_count(1)

        await chat.bring_to_front()
        await _send(chat, "and again", answered=2)
        await billing.get_by_role("button", name="Refresh").click()
        await expect(billing.locator("#credits-used")).to_have_text("2")
        await expect(billing.get_by_role("img", name="Credits: 2 used, 0 reserved of 3; balance 1")
                     ).to_have_count(1)
        by_model = billing.locator("#usage-model tbody tr")
        await expect(by_model).to_have_count(1)
        # The refresh shows the plan's figures before the usage tables: wait for the
        # table of this refresh (two requests), not the one of the refresh before.
        await expect(by_model.first.locator("td").first).to_have_text("2")
        cells = await by_model.first.locator("th, td").all_inner_texts()
        assert cells[0] == "stub-model" and cells[1] == "2" and cells[4] == "2", cells
        assert Decimal(cells[5]) > 0, cells  # priced: a decimal string
        await expect(billing.locator("#usage-day tbody tr")).to_have_count(1)
        await screenshot(billing, "billing")

        # The third needs a hold of 2 with 1 left: the API's 402 in the chat, text kept.
        await chat.bring_to_front()
        await _send(chat, "one more")
        await expect(chat.get_by_role("alert")).to_contain_text("not enough credits")
        await expect(chat.get_by_label("Message", exact=True)).to_have_value("one more")
        await expect(answers).to_have_count(2)
        await screenshot(chat, "billing_402")

        # --- the administrator: lifecycle, the invoice, the export, streaming ------------------
        await page.reload()
        row = page.locator("#subs tr", has_text="carol")
        await expect(row).to_contain_text("2 / 0 / 3")
        await page.get_by_role("button", name="Pause the subscription of carol").click()
        await expect(row.locator(".badge")).to_have_text("Paused")
        await page.get_by_role("button", name="Resume the subscription of carol").click()
        await expect(row.locator(".badge")).to_have_text("Active")
        await expect(page.get_by_role("combobox", name="New plan for carol").locator("option")
                     ).to_have_text(["big"])

        await page.get_by_role("button", name="Preview").click()
        await expect(page.locator("#invoice-result")).to_contain_text("Draft (not issued)")
        await expect(page.locator("#invoice-result")).to_contain_text("stub-model")
        await page.get_by_role("button", name="Issue invoice").click()  # the period runs on
        await expect(page.get_by_role("alert")).to_contain_text("has not ended")

        async with database.transaction() as session:  # the period is over
            sub = (await session.scalars(select(Subscription).where(
                Subscription.user_id == carol))).one()
            await session.execute(update(Subscription).where(Subscription.id == sub.id).values(
                current_period_start=sub.current_period_start - timedelta(days=30),
                current_period_end=utcnow() - timedelta(seconds=1)))
        await page.get_by_role("button", name="Issue invoice").click()
        result = page.locator("#invoice-result")
        await expect(result).to_contain_text(re.compile(r"Invoice INV-\d{4}-000001"))
        await expect(result).to_contain_text(re.compile(r"total \d+\.\d\d USD"))
        await expect(result).to_contain_text("Tiny")  # the plan's line
        await expect(page.locator("#invoices tr")).to_have_count(1)
        await expect(page.locator("#invoices tr")).to_contain_text("carol")

        await page.get_by_role("combobox", name="New plan for carol").select_option("big")
        await page.get_by_role("button", name="Change the plan of carol").click()
        await expect(row).to_contain_text("2 / 0 / 1,000")

        await expect(page.locator("#streaming tr", has_text="stub-model")).to_be_visible()
        pending = page.locator("#export-pending")
        await expect(pending).not_to_have_text("0")
        await page.get_by_role("button", name="Export now").click()
        await expect(page.get_by_role("alert")).to_contain_text("the events stay in the outbox")
        await expect(page.locator("#export-error")).to_contain_text("Last error")
        await screenshot(page, "admin_billing")
        await assert_accessible(page)

        # --- the user downloads the invoice ------------------------------------------------------
        await billing.bring_to_front()
        await billing.get_by_role("button", name="Refresh").click()
        invoice = billing.locator("#invoices tr")
        await expect(invoice).to_have_count(1)
        await expect(invoice).to_contain_text("Open")
        await expect(invoice).to_contain_text(re.compile(r"\d+\.\d\d USD"))
        await expect(billing.locator("#plan-name")).to_have_text("Big (big)")
        async with billing.expect_download() as info:
            await invoice.get_by_role("link", name=re.compile("Download INV-.* as PDF")).click()
        download = await info.value
        data = await asyncio.to_thread(Path(await download.path()).read_bytes)
        assert data.startswith(b"%PDF"), data[:20]
        assert download.suggested_filename.startswith("INV-")

        # On a phone the page holds its width (wide tables scroll in their own box).
        await billing.set_viewport_size({"width": 390, "height": 800})
        assert await billing.evaluate("document.documentElement.scrollWidth") <= 390
        await screenshot(billing, "billing-phone")
        assert not errors, errors
    finally:
        await user_ctx.close()


async def test_pages_for_the_right_people(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    user, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, user)
    answer = await page.goto("/console/admin/billing")
    assert answer is not None and answer.status == 404
    await page.get_by_role("heading", name="Not found").wait_for()

    # Without a subscription the page says so (the API's words) and shows the usage anyway.
    await page.get_by_role("link", name="Billing").click()
    await expect(page.locator("#plan-none")).to_contain_text("you have no live subscription")
    await expect(page.locator("#plan")).to_be_hidden()
    await expect(page.locator("#usage-range")).to_contain_text("no subscription")
    await assert_accessible(page)


async def test_the_subscribe_form_finds_an_address_typed_decomposed(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """Subscribing a user by an e-mail address typed with a decomposed "é" finds the
    account registered with the composed one (the server looks it up as sign-in reads
    it); it said "No account has the username or e-mail ..."."""
    admin_id, headers = await make_user(database, admin=True)
    plan = await client.post("/api/v1/billing/plans", headers=headers, json={
        "key": "basic", "name": "Basic", "price": "0.00", "currency": "USD",
        "billing_period": "month", "included_credits": 100})
    assert plan.status_code == 201, plan.text
    async with database.transaction() as session:
        await create_user(session, SYSTEM, username="jose", email="jos\u00e9@example.test",
                          password=None, status="active", first_becomes_root=False)
    await sign_in_as(page.context, console, database, test_keys, admin_id)
    await page.goto("/console/admin/billing")
    await page.wait_for_load_state("networkidle")
    await page.locator("#subscribe-user").fill("jose\u0301@example.test")
    await page.locator("#subscribe-form").locator("button[type=submit]").click()
    await expect(page.locator("#notice")).to_contain_text("subscribed to basic")
