"""Workflow runs in a real browser: the run form is disabled until a version is published,
then has the start node's inputs; a run waits at its approval node (the drawing says so in
colour and in words), is approved with a comment on its page and completes with its
output; a run whose condition names a missing variable fails with the error and a Resume
button (resume, then cancel); the runs list pages and filters; another user's run is the
404 page.  Every graph here is all-inline (start, condition, approval, end): the nodes run
in the request that starts or decides the run, no worker needed."""

from __future__ import annotations

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
from tests.workflows.graphs import edge, node

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]
API = "/api/v1/workflows"
EVIL = '<b onmouseover="window.pwned=1">the plan</b>'


def approval_graph() -> dict[str, Any]:
    """start -> review (approval) -> approved: yes (end) / rejected: no (end)."""
    return {"nodes": [node("s", "start", inputs=["doc"]),
                      node("review", "approval", message="Publish {{ doc }}?"),
                      node("yes", "end", output="published {{ doc }}: {{ review.comment }}"),
                      node("no", "end", output="kept {{ doc }}: {{ review.comment }}")],
            "edges": [edge("1", "s", "review"), edge("2", "review", "yes", "approved"),
                      edge("3", "review", "no", "rejected")]}


def failing_graph() -> dict[str, Any]:
    """start -> check (a condition on a variable nobody sets: fails when it runs)."""
    return {"nodes": [node("s", "start", 0, 0, inputs=["n"]),
                      node("check", "condition", 220, 0, expression="missing > 1"),
                      node("big", "end", 440, -60, output="big"),
                      node("small", "end", 440, 60, output="small")],
            "edges": [edge("1", "s", "check"), edge("2", "check", "big", "true"),
                      edge("3", "check", "small", "false")]}


async def test_run_from_the_form_wait_for_approval_and_approve_with_a_comment(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    created = await client.post(API, headers=headers, json={"name": "Review", **approval_graph()})
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    await sign_in_as(page.context, console, database, test_keys, user_id)

    # Never published: the form says so and cannot be used.
    await page.goto(f"/console/workflows/{workflow_id}")
    help_text = page.locator("#run-help")
    await expect(help_text).to_contain_text("Not published yet")
    await expect(page.get_by_label("Version to run")).to_be_disabled()
    await expect(page.get_by_role("button", name="Run", exact=True)).to_be_disabled()
    await expect(page.locator("#runs-empty")).to_have_text("No runs yet.")
    await assert_accessible(page)

    # Published from the page: the form has the start node's input and the version.
    await page.get_by_role("button", name="Publish").click()
    await expect(page.locator("#versions-body tr")).to_have_count(1)
    doc = page.get_by_label("Input doc")
    await expect(doc).to_be_enabled()
    await expect(page.get_by_label("Version to run")).to_have_value("1")
    await expect(page.get_by_label("Version to run").locator("option")).to_have_text(
        ["the newest (version 1)"])
    await assert_accessible(page)
    await doc.fill(EVIL)
    await page.get_by_role("button", name="Run", exact=True).click()

    # The run page: waiting at the approval node, in words and in the drawing.
    await page.wait_for_url(re.compile(r"/console/workflow-runs/[0-9a-f-]{36}$"))
    run_url = page.url
    status = page.locator("#run-status")
    await expect(status).to_contain_text("running")
    await expect(status).to_contain_text("waiting for approval at review")
    await expect(page.locator("#workflow-link")).to_have_text("Review")
    await expect(page.locator("#cancel-run")).to_be_visible()
    await expect(page.locator("#resume-run")).to_be_hidden()
    await expect(page.locator("#run-live")).to_be_visible()
    approvals = page.locator("#approvals")
    await expect(approvals).to_be_visible()
    await expect(approvals).to_contain_text(f"Publish {EVIL}?")  # text, not markup
    graph = page.locator("#graph")
    await expect(graph.locator("g.wf-node")).to_have_count(4)
    review = graph.locator('g.wf-node[data-node-id="review"]')
    await expect(review).to_have_attribute("data-status", "waiting")
    await expect(review).to_contain_text("‖ awaiting approval")
    await expect(graph.locator('g.wf-node[data-node-id="s"]')).to_contain_text("✓ completed")
    await expect(graph.locator('g.wf-node[data-node-id="yes"]')).to_contain_text("not reached")
    await expect(graph.locator("svg")).to_have_attribute(
        "aria-label", re.compile(r"✓ completed: s; ‖ awaiting approval: review; "
                                 r"not reached: yes, no"))
    await expect(page.locator("#legend li")).to_have_count(8)
    await expect(page.locator("#legend")).to_contain_text("waiting for approval")
    steps = page.locator("#steps-body tr")
    await expect(steps).to_have_count(2)
    await expect(steps.nth(1)).to_contain_text("approval")
    await expect(steps.nth(1)).to_contain_text("waiting")
    await screenshot(page, "workflow-run-waiting")
    await assert_accessible(page)

    # The workflow page lists it, with the badge.
    await page.goto(f"/console/workflows/{workflow_id}")
    rows = page.locator("#runs-body tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("waiting for approval")
    await expect(rows.first).to_contain_text("version 1")
    await expect(rows.first).to_contain_text("none yet")
    await screenshot(page, "workflow-runs-list")
    await assert_accessible(page)
    await rows.first.get_by_role("link").click()
    await page.wait_for_url(run_url)

    # Approved with a comment: the run completes (the refresh stops) with its output.
    await page.get_by_label("Comment (optional)").fill("ship it")
    # The page keeps refreshing while the run waits: the comment survives it.
    await page.wait_for_timeout(1500)
    await expect(page.get_by_label("Comment (optional)")).to_have_value("ship it")
    await page.get_by_role("button", name="Approve review").click()
    await expect(status).to_contain_text("completed")
    output = page.locator("#run-output-text")
    await expect(output).to_have_text(f"published {EVIL}: ship it")
    await expect(approvals).to_be_hidden()
    await expect(page.locator("#cancel-run")).to_be_hidden()
    await expect(page.locator("#resume-run")).to_be_hidden()
    await expect(page.locator("#run-live")).to_be_hidden()
    await expect(review).to_have_attribute("data-status", "completed")
    await expect(graph.locator('g.wf-node[data-node-id="yes"]')).to_contain_text("✓ completed")
    await expect(graph.locator('g.wf-node[data-node-id="no"]')).to_contain_text("not reached")
    await expect(steps).to_have_count(3)
    decided = steps.nth(1)
    await decided.get_by_text("Show").click()
    await expect(decided.locator("pre").nth(1)).to_contain_text('"comment": "ship it"')
    await screenshot(page, "workflow-run-completed")
    await assert_accessible(page)
    await page.get_by_role("button", name="Switch to light theme").click()
    await expect(page.locator("html")).to_have_attribute("data-theme", "light")
    await screenshot(page, "workflow-run-completed-light")
    await assert_accessible(page)
    assert await page.evaluate("window.pwned") is None
    await page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing sticks out
    await expect(graph.locator("svg")).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await screenshot(page, "workflow-run-phone")
    await page.set_viewport_size({"width": 1280, "height": 800})

    await page.goto(f"/console/workflows/{workflow_id}")
    await expect(rows.first).to_contain_text("completed")
    await expect(rows.first).to_contain_text("ship it")
    await expect(rows.first).not_to_contain_text("waiting for approval")


async def test_a_failed_run_shows_its_error_and_resumes_and_the_runs_page(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    created = await client.post(API, headers=headers, json={"name": "Fails", **failing_graph()})
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    assert (await client.post(f"{API}/{workflow_id}/publish", headers=headers)).status_code == 201
    for n in range(21):  # older runs, for the pages of the list
        started = await client.post(f"{API}/{workflow_id}/runs", headers=headers,
                                    json={"inputs": {"n": str(n)}})
        assert started.status_code == 202 and started.json()["status"] == "failed", started.text
    await sign_in_as(page.context, console, database, test_keys, user_id)

    await page.goto(f"/console/workflows/{workflow_id}")
    rows = page.locator("#runs-body tr")
    await expect(rows).to_have_count(20)
    await expect(rows.first).to_contain_text("failed")
    await expect(rows.first).to_contain_text("unknown name 'missing'")
    await page.get_by_role("button", name="Load more runs").click()
    await expect(rows).to_have_count(21)
    await expect(page.get_by_role("button", name="Load more runs")).to_be_hidden()
    await page.get_by_label("Show").select_option("completed")
    await expect(page.locator("#runs-empty")).to_have_text("No completed runs.")
    await expect(page.locator("#runs-table")).to_be_hidden()

    await page.get_by_label("Input n").fill("5")
    await page.get_by_role("button", name="Run", exact=True).click()
    await page.wait_for_url(re.compile(r"/console/workflow-runs/[0-9a-f-]{36}$"))
    status = page.locator("#run-status")
    await expect(status).to_contain_text("failed")
    await expect(page.locator("#run-error-text")).to_contain_text(
        "node 'check' failed: unknown name 'missing'")
    await expect(page.locator("#run-input")).to_contain_text('"n": "5"')
    check = page.locator('#graph g.wf-node[data-node-id="check"]')
    await expect(check).to_have_attribute("data-status", "failed")
    await expect(check).to_contain_text("✗ failed")
    failed_step = page.locator('#steps-body tr[data-node-id="check"]')
    await expect(failed_step).to_contain_text("condition")
    await expect(failed_step).to_contain_text("unknown name 'missing'")
    resume = page.get_by_role("button", name="Resume run")
    await expect(resume).to_be_visible()
    await expect(page.locator("#cancel-run")).to_be_hidden()
    await expect(page.locator("#run-live")).to_be_hidden()
    await screenshot(page, "workflow-run-failed")
    await assert_accessible(page)

    # Resumed: the failed node waits for a worker (there is none here); cancel it.
    await resume.click()
    await expect(status).to_contain_text("running")
    await expect(check).to_have_attribute("data-status", "pending")
    await expect(page.locator("#run-error")).to_be_hidden()
    await expect(resume).to_be_hidden()
    await page.get_by_role("button", name="Cancel run").click()
    await expect(status).to_contain_text("cancelled")
    await expect(check).to_have_attribute("data-status", "cancelled")
    await expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    await expect(resume).to_be_hidden()
    await assert_accessible(page)


async def test_the_comment_typed_under_an_approval_is_sent_with_its_decision(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """Two approvals wait, "x.y" and "x_y": the comment typed in the second one's form is
    the one sent with its decision (both textareas had the element id comment-x_y, so the
    first one's empty comment was sent)."""
    from playwright.async_api import expect

    uid, h = await make_user(database)
    graph = {"nodes": [node("s", "start"), node("p", "parallel"),
                       node("x.y", "approval", message="first?"),
                       node("x_y", "approval", message="second?"),
                       node("e1", "end", output="1"), node("e2", "end", output="2")],
             "edges": [edge("1", "s", "p"), edge("2", "p", "x.y"), edge("3", "p", "x_y"),
                       edge("4", "x.y", "e1", "approved"), edge("5", "x_y", "e2", "approved")]}
    created = await client.post(API, headers=h, json={"name": "Two", **graph})
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    assert (await client.post(f"{API}/{workflow_id}/publish", headers=h)).status_code == 201
    started = await client.post(f"{API}/{workflow_id}/runs", headers=h, json={})
    assert started.status_code == 202, started.text
    run = started.json()
    assert sorted(run["waiting_for"]) == ["x.y", "x_y"], run
    await sign_in_as(page.context, console, database, test_keys, uid)
    await page.goto(f"/console/workflow-runs/{run['id']}")
    forms = page.locator("#approval-list .approval")
    await expect(forms).to_have_count(2)
    second = forms.nth(1)
    second_id = await second.get_attribute("data-node-id")
    assert second_id is not None
    await second.get_by_label(f"Comment (optional) for {second_id}").fill("my reason")
    await second.get_by_role("button", name=f"Reject {second_id}").click()
    await expect(forms).to_have_count(1)
    final = (await client.get(f"/api/v1/workflow-runs/{run['id']}", headers=h)).json()
    step = next(s for s in final["steps"] if s["node_id"] == second_id)
    assert (step["status"], step["output"]["comment"]) == ("completed", "my reason"), step
    await assert_accessible(page)


async def test_a_stored_version_naming_an_input_twice_gets_one_run_field(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """A version stored before start inputs had to be unique, naming "topic" twice: the run
    form shows one "topic" field, where before it showed two sharing one id (the second
    label named the first field)."""
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    graph = {"nodes": [node("s", "start", inputs=["topic"]),
                       node("e", "end", output="{{ topic }}")],
             "edges": [edge("1", "s", "e")]}
    created = await client.post(API, headers=headers, json={"name": "Twice", **graph})
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    published = await client.post(f"{API}/{workflow_id}/publish", headers=headers, json={})
    assert published.status_code == 201, published.text
    async with database.transaction() as s:  # as stored then (versions are immutable)
        await s.execute(text("SET LOCAL session_replication_role = replica"))
        await s.execute(text(
            "UPDATE workflow_versions SET nodes = jsonb_set(nodes, '{0,data,inputs}', "
            "'[\"topic\", \"topic\"]') WHERE workflow_id = CAST(:w AS uuid)"),
            {"w": workflow_id})
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto(f"/console/workflows/{workflow_id}")
    await expect(page.get_by_role("button", name="Run", exact=True)).to_be_enabled(
        timeout=20_000)
    await expect(page.locator("#run-inputs input")).to_have_count(1)
    await expect(page.get_by_label("Input topic")).to_have_attribute("id", "run-input-topic")


async def test_another_users_workflow_run_is_not_found(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    owner_id, owner = await make_user(database)
    created = await client.post(API, headers=owner, json={"name": "Private", **approval_graph()})
    workflow_id = created.json()["id"]
    assert (await client.post(f"{API}/{workflow_id}/publish", headers=owner)).status_code == 201
    started = await client.post(f"{API}/{workflow_id}/runs", headers=owner,
                                json={"inputs": {"doc": "secret"}})
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]

    intruder_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, intruder_id)
    for path in (f"/console/workflow-runs/{run_id}", f"/console/workflow-runs/{uuid.uuid4()}",
                 "/console/workflow-runs/not-an-id"):
        answer = await page.goto(path)
        assert answer is not None and answer.status == 404, path
        await page.get_by_role("heading", name="Not found").wait_for()
        await expect(page.locator("body")).not_to_contain_text("secret")
    await assert_accessible(page)

    # The owner sees it.
    await page.context.clear_cookies()
    await sign_in_as(page.context, console, database, test_keys, owner_id)
    answer = await page.goto(f"/console/workflow-runs/{run_id}")
    assert answer is not None and answer.status == 200
    await expect(page.locator("#run-input")).to_contain_text("secret")
