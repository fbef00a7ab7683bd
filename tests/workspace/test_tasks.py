"""The task board: the stored score follows every input, the list re-sorts, filters and
keyset pages, parent/child without cycles, bad input, another user's tasks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.workspace.service import refresh_scores
from tests.support.identity import make_user
from tests.workspace.conftest import User, board, make_project, make_task

PRIORITY = {"low": 1, "medium": 2, "high": 3, "critical": 4}


def expected(t: dict[str, Any], now: datetime) -> float:
    """docs/workspace.md, "The score", written out independently of the SQL."""
    if t["status"] in ("done", "cancelled"):
        return 0.0
    due = 0.0
    if t["due_date"]:
        left = datetime.fromisoformat(t["due_date"]) - now
        due = (4 if left <= timedelta(0) else 3 if left <= timedelta(days=1) else
               2 if left <= timedelta(days=3) else 1 if left <= timedelta(days=7) else
               0.5 if left <= timedelta(days=30) else 0)
    score = (t["user_priority_weight"]
             * (t["importance_weight"] * PRIORITY[t["priority"]]
                + t["urgency_weight"] * (1 + due))
             * (1 - t["completion_percentage"] / 200)
             * (0.5 if t["status"] == "blocked" else 1)
             / ((1 + t["complexity_weight"]) / 2))
    return round(score, 4)


async def test_every_input_change_recomputes_the_stored_score(client: httpx.AsyncClient,
                                                              user: User) -> None:
    _, headers = user
    task = await make_task(client, headers, "Ship it")
    now = datetime.now(UTC)
    assert task["calculated_score"] == expected(task, now) == 3.0  # the defaults
    soon = (now + timedelta(hours=5)).isoformat()
    changes: list[dict[str, Any]] = [
        {"importance_weight": 2.5}, {"urgency_weight": 3}, {"complexity_weight": 0.5},
        {"user_priority_weight": 1.5}, {"priority": "critical"}, {"due_date": soon},
        {"completion_percentage": 40}, {"status": "blocked"}, {"status": "in_progress"},
        {"due_date": None}, {"priority": "low"}, {"status": "done"}, {"status": "todo"},
    ]
    score = task["calculated_score"]
    for change in changes:
        resp = await client.patch(f"/api/v1/tasks-board/{task['id']}", json=change,
                                  headers=headers)
        assert resp.status_code == 200, resp.text
        task = resp.json()
        assert task["calculated_score"] == expected(task, datetime.now(UTC)), change
        assert task["calculated_score"] != score, f"{change} did not change the score"
        score = task["calculated_score"]
        stored = (await client.get(f"/api/v1/tasks-board/{task['id']}", headers=headers)).json()
        assert stored["calculated_score"] == score
    # done stamps completed_at; reopening clears it.
    assert task["status"] == "todo" and task["completed_at"] is None


async def test_the_board_re_sorts_when_urgency_changes(client: httpx.AsyncClient,
                                                       user: User) -> None:
    _, headers = user
    a = await make_task(client, headers, "A", priority="high")
    await make_task(client, headers, "B", priority="medium")
    c = await make_task(client, headers, "C", priority="low")
    assert await board(client, headers) == ["A", "B", "C"]
    resp = await client.patch(f"/api/v1/tasks-board/{c['id']}", json={"urgency_weight": 8},
                              headers=headers)
    assert resp.status_code == 200
    assert await board(client, headers) == ["C", "A", "B"]
    done = await client.patch(f"/api/v1/tasks-board/{a['id']}", json={"status": "done"},
                              headers=headers)
    assert done.json()["completed_at"] is not None and done.json()["calculated_score"] == 0
    assert await board(client, headers) == ["C", "B", "A"]  # done: the lowest


async def test_filters_and_keyset_pages(client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    project = await make_project(client, headers, "Board")
    now = datetime.now(UTC)
    for i in range(7):
        await make_task(client, headers, f"t{i}", importance_weight=float(i),
                        project_id=project["id"] if i % 2 else None,
                        due_date=(now + timedelta(days=i * 10)).isoformat())
    await make_task(client, headers, "same-1")
    await make_task(client, headers, "same-2")  # equal scores: ordered by id, newest first
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/tasks-board", headers=headers, params=params)).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 9 and len({t["id"] for t in seen}) == 9
    keys = [(t["calculated_score"], t["id"]) for t in seen]
    assert keys == sorted(keys, reverse=True)

    assert set(await board(client, headers, project_id=project["id"])) == {"t1", "t3", "t5"}
    assert set(await board(client, headers, due_before=(now + timedelta(days=15)).isoformat())
               ) == {"t0", "t1"}
    assert set(await board(client, headers, due_after=(now + timedelta(days=45)).isoformat())) \
        == {"t5", "t6"}
    top = seen[0]["calculated_score"]
    assert await board(client, headers, min_score=top) == [seen[0]["title"]]
    assert await board(client, headers, status="done") == []
    assert len(await board(client, headers, priority="medium")) == 9
    bad = await client.get("/api/v1/tasks-board", headers=headers, params={"cursor": "xx"})
    assert bad.status_code == 400
    # A filter's bound without an offset is UTC (not the server's local time).
    bound = (now + timedelta(days=15)).replace(tzinfo=None).isoformat()
    assert set(await board(client, headers, due_before=bound)) == {"t0", "t1"}


async def test_subtasks_without_cycles(client: httpx.AsyncClient, user: User,
                                       other_user: User) -> None:
    _, headers = user
    root = await make_task(client, headers, "root")
    child = await make_task(client, headers, "child", parent_id=root["id"])
    grandchild = await make_task(client, headers, "grandchild", parent_id=child["id"])
    assert set(await board(client, headers, parent_id=root["id"])) == {"child"}
    for parent in (grandchild["id"], root["id"]):
        resp = await client.patch(f"/api/v1/tasks-board/{root['id']}",
                                  json={"parent_id": parent}, headers=headers)
        assert resp.status_code == 422, resp.text
        assert "cycle" in resp.json()["detail"]
    theirs = await make_task(client, other_user[1], "theirs")
    resp = await client.patch(f"/api/v1/tasks-board/{child['id']}",
                              json={"parent_id": theirs["id"]}, headers=headers)
    assert resp.status_code == 404
    # Deleting a parent keeps the children, unparented.
    assert (await client.delete(f"/api/v1/tasks-board/{root['id']}",
                                headers=headers)).status_code == 204
    kept = (await client.get(f"/api/v1/tasks-board/{child['id']}", headers=headers)).json()
    assert kept["parent_id"] is None


async def test_bad_input_is_a_clear_4xx(client: httpx.AsyncClient, user: User,
                                        other_user: User) -> None:
    _, headers = user
    task = await make_task(client, headers)
    url = f"/api/v1/tasks-board/{task['id']}"
    for body in ({"status": "finished"}, {"priority": "urgent"}, {"urgency_weight": 11},
                 {"importance_weight": -1}, {"completion_percentage": 101},
                 {"completion_percentage": "50"}, {"title": ""}, {"title": "   "},
                 {"title": None}, {"due_date": "2027-01-01T00:00:00"}, {"due_date": 5},
                 {"title": "a\x00b"}, {"code_context": {"k": "x" * 70_000}}, {"nope": 1}):
        resp = await client.patch(url, json=body, headers=headers)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
    resp = await client.post("/api/v1/tasks-board", content=b"{not json",
                             headers=headers | {"content-type": "application/json"})
    assert resp.status_code == 400
    unknown = "019ad9a0-0000-7000-8000-00000000ffff"
    for body in ({"title": "x", "project_id": unknown}, {"title": "x", "parent_id": unknown}):
        resp = await client.post("/api/v1/tasks-board", json=body, headers=headers)
        assert resp.status_code == 404, resp.text
    # Another user's task is a 404 for every verb; their list does not show it.
    _, other = other_user
    for method in ("GET", "PATCH", "DELETE"):
        resp = await client.request(method, url, headers=other,
                                    json={"title": "mine"} if method == "PATCH" else None)
        assert resp.status_code == 404, (method, resp.text)
    assert await board(client, other) == []


async def test_the_hourly_refresh_follows_the_clock(client: httpx.AsyncClient, user: User,
                                                    database: Database) -> None:
    _, headers = user
    task = await make_task(client, headers, "later",
                           due_date=(datetime.now(UTC) + timedelta(days=60)).isoformat())
    assert task["calculated_score"] == 3.0  # due in more than 30 days: no due term
    async with database.transaction() as s:
        # Time passes (the due date comes closer) without a write through the trigger.
        await s.execute(text("SET LOCAL session_replication_role = replica"))
        await s.execute(text("UPDATE tasks SET due_date = now() + interval '2 hours' "
                             "WHERE id = :id"), {"id": task["id"]})
    async with database.transaction() as s:
        assert await refresh_scores(s) == 1
        assert await refresh_scores(s) == 0  # nothing left to change
    fresh = (await client.get(f"/api/v1/tasks-board/{task['id']}", headers=headers)).json()
    assert fresh["calculated_score"] == expected(fresh, datetime.now(UTC)) == 6.0
    assert fresh["updated_at"] == task["updated_at"]


async def _chain(client: httpx.AsyncClient, headers: dict[str, str], n: int,
                 name: str) -> list[dict[str, Any]]:
    chain = [await make_task(client, headers, f"{name}0")]
    for i in range(1, n):
        chain.append(await make_task(client, headers, f"{name}{i}", parent_id=chain[-1]["id"]))
    return chain


async def test_a_task_tree_deeper_than_100_levels_is_refused(client: httpx.AsyncClient,
                                                             user: User) -> None:
    """A task below the 100th level (on create, or a subtree moved under a deep task) is a
    422: the cycle check walks at most 100 ancestors, so a cycle through a deeper chain
    was stored."""
    _, headers = user
    chain = await _chain(client, headers, 100, "t")
    resp = await client.post("/api/v1/tasks-board", headers=headers,
                             json={"title": "deep", "parent_id": chain[-1]["id"]})
    assert resp.status_code == 422, resp.text
    other = await _chain(client, headers, 2, "u")
    resp = await client.patch(f"/api/v1/tasks-board/{other[0]['id']}", headers=headers,
                              json={"parent_id": chain[-2]["id"]})
    assert resp.status_code == 422, resp.text
    assert "deeper than 100" in resp.json()["detail"]
    resp = await client.patch(f"/api/v1/tasks-board/{chain[0]['id']}", headers=headers,
                              json={"parent_id": chain[-1]["id"]})
    assert resp.status_code == 422 and "cycle" in resp.json()["detail"], resp.text


async def test_the_24_hour_band_is_24_hours_whatever_the_session_time_zone(
        database: Database) -> None:
    """A task due 23.5 hours from now is due "within 24 hours" (D = 3) in a session whose
    TimeZone is Europe/Paris on the eve of the clocks moving forward: the bands are hours,
    not the session zone's calendar days (that night's "day" was 23 hours: D = 2)."""
    async with database.transaction() as s:
        await s.execute(text("SET LOCAL TimeZone = 'Europe/Paris'"))
        score = await s.scalar(text(
            "SELECT roost_task_score('todo', 'medium', "
            "timestamptz '2027-03-27 12:00:00+00' + interval '23 hours 30 minutes', 0, "
            "1, 1, 1, 1, timestamptz '2027-03-27 12:00:00+00')"))
    # 1 * (1 * 2 + 1 * (1 + 3)) * (1 - 0) * 1 / ((1 + 1) / 2) = 6
    assert score == 6.0


async def test_an_administrator_cannot_file_a_user_s_task_under_a_project_they_cannot_see(
        client: httpx.AsyncClient, database: Database, user: User) -> None:
    """An administrator moving a user's task under the administrator's own private project
    is a 404 naming project_id: a task sits under a project its owner can see (it was
    left under one that is a 404 for its owner)."""
    _, headers = user
    _, admin = await make_user(database, admin=True)
    private = await make_project(client, admin, "admin's own")
    task = await make_task(client, headers, "t")
    resp = await client.patch(f"/api/v1/tasks-board/{task['id']}",
                              json={"project_id": private["id"]}, headers=admin)
    owner_view = await client.get(f"/api/v1/projects/{private['id']}", headers=headers)
    assert owner_view.status_code == 404  # the task's owner cannot see the project
    assert resp.status_code == 404 and resp.json()["field"] == "project_id", resp.text
    shared = await make_project(client, headers, "the user's own")
    moved = await client.patch(f"/api/v1/tasks-board/{task['id']}",
                               json={"project_id": shared["id"]}, headers=admin)
    assert moved.status_code == 200, moved.text


async def test_a_patch_that_restates_a_value_recomputes_the_score(client: httpx.AsyncClient,
                                                                   user: User,
                                                                   database: Database) -> None:
    """A PATCH recomputes the score, also one that restates the stored values (a form
    saved again as it stands): a task whose due date came within 24 hours since its last
    write answers the score of now (6), not the stale one (3) it answered until the
    hourly rescore."""
    _, h = user
    task = await make_task(client, h, "later",
                           due_date=(datetime.now(UTC) + timedelta(days=60)).isoformat())
    assert task["calculated_score"] == 3.0  # no due-date term yet
    async with database.transaction() as s:  # time passes: the due date comes closer
        await s.execute(text("SET LOCAL session_replication_role = replica"))
        await s.execute(text("UPDATE tasks SET due_date = now() + interval '2 hours' "
                             "WHERE id = :id"), {"id": task["id"]})
    resp = await client.patch(f"/api/v1/tasks-board/{task['id']}", headers=h,
                              json={"importance_weight": 1.0})
    assert resp.status_code == 200, resp.text
    # 1 * (1 * 2 + 1 * (1 + 3)) / 1 = 6: due within 24 hours
    assert resp.json()["calculated_score"] == 6.0, resp.json()["calculated_score"]
