"""The debates and debate pages in a real browser: start a debate from the form (three
models, weights, Borda), watch it refresh live until it names the winner, with its turns by
round and its ballots; a Condorcet cycle shows that Schulze decided; cancel a waiting
debate; another user's debate is the 404 page; topics are text, never markup."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from roost.config import Settings
from roost.db.engine import Database
from roost.debates import jobs as _debate_jobs  # noqa: F401 - debates.run, for the worker
from roost.keyfiles import KeyMaterial
from tests.agents.conftest import make_agent, running_worker
from tests.chat.conftest import add_provider
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]
EVIL = '<img src=x onerror="window.pwned=1">Best pet?'
POSITIONS = ["fish", "dogs", "cats"]


def _turns(n: int) -> list[Reply]:
    return [Reply(f"argument {i} for my side.\nConfidence: 0.{i}") for i in range(1, n + 1)]


def _ballots(*rankings: list[str]) -> list[Reply]:
    return [Reply(json={"ranking": r, "confidence": 0.75}) for r in rankings]


async def test_start_a_debate_and_watch_it_reach_a_winner(
    page: Any, console: str, app: FastAPI, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial, test_settings: Settings, admin_headers: dict[str, str],
    stub: StubServer,
) -> None:
    from playwright.async_api import expect

    await add_provider(client, admin_headers, stub)
    user_id, headers = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/debates")
    await page.get_by_text("No debates yet").wait_for()
    await page.get_by_label("Topic").fill(EVIL)
    await page.get_by_label("Positions, one per line").fill("\n".join(POSITIONS))
    await page.get_by_label("Rounds").fill("2")
    await page.get_by_label("Voting method").select_option("borda")
    await page.get_by_role("button", name="Add participant").click()
    for i, name in enumerate(["alice", "bob", "carol"], start=1):
        group = page.get_by_role("group", name=f"Participant {i}")
        await group.get_by_label("Name").fill(name)
        await group.get_by_label("Model").fill("stub-model")
    carol = page.get_by_role("group", name="Participant 3")
    await carol.get_by_label("Weight").fill("2.5")
    await carol.get_by_label("Argues").select_option("cats")
    await assert_accessible(page)
    # alice (1): fish > dogs > cats; bob (1): dogs > fish > cats; carol (2.5): cats > fish > dogs
    # Borda: fish 2+1+2.5 = 5.5, cats 5, dogs 3.
    stub.script(*_turns(6), *_ballots(["fish", "dogs", "cats"], ["dogs", "fish", "cats"],
                                     ["cats", "fish", "dogs"]))
    await page.get_by_role("button", name="Start debate").click()

    await page.wait_for_url(re.compile(r"/console/debates/[0-9a-f-]{36}$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text(EVIL)  # text, not markup
    await expect(page.locator("#debate-status")).to_contain_text("pending")  # no worker yet
    await expect(page.get_by_role("button", name="Cancel debate")).to_be_visible()
    await expect(page.locator("#participants-body")).to_contain_text("carol")
    await expect(page.locator("#participants-body")).to_contain_text("2.5")
    await assert_accessible(page)
    async with running_worker(app, database, test_settings):
        # The page refreshes by itself: the turns, then the result.
        await expect(page.locator("#debate-status")).to_contain_text("completed", timeout=45_000)
    await expect(page.locator("#winner")).to_have_text("fish")
    await expect(page.locator("#result-note")).to_contain_text("Borda count")
    await expect(page.locator("#result-scores")).to_contain_text("Borda points")
    await expect(page.locator("#result-scores tbody tr").first).to_contain_text("5.5")
    rounds = page.locator("#rounds section.round")
    await expect(rounds).to_have_count(2)
    await expect(rounds.nth(0).locator("li.turn")).to_have_count(3)
    await expect(rounds.nth(1)).to_contain_text("Round 2 of 2")
    await expect(rounds.nth(1).locator("li.turn").nth(2)).to_contain_text("argument 6 for my side.")
    await expect(rounds.nth(1).locator("li.turn").nth(2)).to_contain_text("carol")
    ballots = page.locator("#ballots-body tr")
    await expect(ballots).to_have_count(3)
    await expect(ballots.nth(2)).to_contain_text("cats")
    await expect(page.get_by_role("button", name="Cancel debate")).to_be_hidden()
    await screenshot(page, "debate")
    await assert_accessible(page)
    await page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing sticks out
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await screenshot(page, "debate-phone")
    await page.set_viewport_size({"width": 1280, "height": 800})

    # A cycle: no Condorcet winner, Schulze decides (the tie by the listed order).
    stub.script(*_turns(3), *_ballots(["fish", "dogs", "cats"], ["dogs", "cats", "fish"],
                                     ["cats", "fish", "dogs"]))
    started = await client.post("/api/v1/debates", headers=headers, json={
        "topic": "Cycle?", "positions": POSITIONS, "total_rounds": 1,
        "voting_method": "condorcet",
        "participants": [{"id": p, "model": "stub-model"} for p in ("alice", "bob", "carol")]})
    assert started.status_code == 202, started.text
    await page.goto(f"/console/debates/{started.json()['id']}")
    async with running_worker(app, database, test_settings):
        await expect(page.locator("#debate-status")).to_contain_text("completed", timeout=45_000)
    await expect(page.locator("#result-note")).to_contain_text("No Condorcet winner")
    await expect(page.locator("#result-note")).to_contain_text("Schulze")
    await expect(page.locator("#result-tie")).to_contain_text("Tied for first: fish, dogs, cats")
    await expect(page.locator("#result-support")).to_contain_text("Pairwise support")
    await expect(page.locator("#result-support")).to_contain_text("Strongest paths")
    await expect(page.locator("#winner")).to_have_text("fish")
    await screenshot(page, "debate-condorcet-cycle")
    await assert_accessible(page)

    await page.goto("/console/debates")  # the list: status, method, winner
    rows = page.locator("#debates-body tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(1)).to_contain_text(EVIL)
    await expect(rows.nth(1)).to_contain_text("completed")
    await expect(rows.nth(1)).to_contain_text("Borda")
    await expect(rows.nth(1)).to_contain_text("fish")
    await page.get_by_label("Status").select_option("failed")
    await page.get_by_text("No debates with this status").wait_for()
    await screenshot(page, "debates")
    await assert_accessible(page)
    assert await page.evaluate("window.pwned") is None


async def test_the_form_explains_what_is_missing_and_a_waiting_debate_can_be_cancelled(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    user_id, _ = await make_user(database)
    agent = await make_agent(database, user_id, name="Grumpy cat", preferred_model="m")
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/debates")
    await page.get_by_label("Topic").fill("Tabs or spaces?")
    await page.get_by_label("Positions, one per line").fill("tabs")
    await page.get_by_role("button", name="Start debate").click()
    await expect(page.locator("#notice")).to_contain_text("at least two positions")
    await page.get_by_label("Positions, one per line").fill("tabs\nTABS")
    first = page.get_by_role("group", name="Participant 1")
    second = page.get_by_role("group", name="Participant 2")
    await first.get_by_label("Model").fill("m")
    await second.get_by_label("Model").fill("m")
    await page.get_by_role("button", name="Start debate").click()  # the API's 422, explained
    await expect(page.locator("#notice")).to_contain_text("the positions must be distinct")

    # The second participant is one of the user's agents; majority hides the weights.
    await page.get_by_label("Positions, one per line").fill("tabs\nspaces")
    await page.get_by_label("Voting method").select_option("majority")
    await expect(first.get_by_label("Weight")).to_be_hidden()
    await second.get_by_label("Speaks as").select_option("agent")
    await expect(second.get_by_label("Model")).to_be_hidden()
    await expect(second.get_by_label("Agent", exact=True)).to_contain_text("Grumpy cat")
    await second.get_by_label("Agent", exact=True).select_option(str(agent.id))
    await second.get_by_label("Argues").select_option("spaces")
    await assert_accessible(page)
    await page.get_by_role("button", name="Start debate").click()

    await page.wait_for_url(re.compile(r"/console/debates/[0-9a-f-]{36}$"))
    await expect(page.locator("#debate-status")).to_contain_text("pending")  # no worker runs
    await expect(page.locator("#turns-empty")).to_be_visible()
    participants = page.locator("#participants-body tr")
    await expect(participants.nth(1)).to_contain_text("agent")
    await expect(participants.nth(1)).to_contain_text("spaces")
    await expect(participants.nth(1)).to_contain_text("not counted")
    await page.get_by_role("button", name="Cancel debate").click()
    await expect(page.locator("#debate-status")).to_contain_text("cancelled")
    await expect(page.get_by_role("button", name="Cancel debate")).to_be_hidden()
    await assert_accessible(page)


async def test_another_users_debate_is_not_found(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    _, owner_headers = await make_user(database)
    started = await client.post("/api/v1/debates", headers=owner_headers, json={
        "topic": "Mine", "positions": ["a", "b"],
        "participants": [{"id": "x", "model": "m"}, {"id": "y", "model": "m"}]})
    assert started.status_code == 202, started.text
    intruder_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, intruder_id)
    for path in (f"/console/debates/{started.json()['id']}", f"/console/debates/{uuid.uuid4()}",
                 "/console/debates/not-an-id"):
        answer = await page.goto(path)
        assert answer is not None and answer.status == 404, path
        await page.get_by_role("heading", name="Not found").wait_for()
    await assert_accessible(page)
    await page.goto("/console/debates")
    await page.get_by_text("No debates yet").wait_for()  # not in the list either
