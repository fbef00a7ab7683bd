"""Parent changes of one owner's tasks sent at once: the cycle check sees the other's
change (no cycle stored), nothing deadlocks, and a parent deleted meanwhile is a 4xx."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.engine import Database
from roost.principal import Principal
from roost.workspace import service
from roost.workspace.models import Task
from tests.support.races import answer_behind, no_5xx
from tests.support.sql import scalar
from tests.workspace.conftest import Headers, User, make_project, make_task

CYCLE_THROUGH = """
WITH RECURSIVE up(id, depth) AS (
  SELECT parent_id, 1 FROM tasks WHERE id = CAST(:t AS uuid)
  UNION ALL
  SELECT t.parent_id, up.depth + 1 FROM tasks t JOIN up ON t.id = up.id WHERE up.depth < 10
) SELECT count(*) FROM up WHERE id = CAST(:t AS uuid)"""


async def _move(client: httpx.AsyncClient, headers: Headers, task: dict[str, Any],
                parent: dict[str, Any]) -> httpx.Response:
    return await client.patch(f"/api/v1/tasks-board/{task['id']}",
                              json={"parent_id": parent["id"]}, headers=headers)


async def test_concurrent_re_parentings_never_make_a_cycle(client: httpx.AsyncClient,
                                                           user: User,
                                                           database: Database) -> None:
    """B is under A; "A under C" and "C under B" sent at once: one is refused (a cycle)."""
    _, h = user
    for _ in range(30):
        a = await make_task(client, h, "A")
        b = await make_task(client, h, "B", parent_id=a["id"])
        c = await make_task(client, h, "C")
        r1, r2 = await asyncio.gather(_move(client, h, a, c), _move(client, h, c, b))
        no_5xx(r1, r2)
        assert int(await scalar(database, CYCLE_THROUGH, t=a["id"])) == 0, (
            "A -> C -> B -> A stored", r1.status_code, r2.status_code)
        assert sorted((r1.status_code, r2.status_code)) == [200, 422]


async def test_two_tasks_moved_under_each_other_at_once_wait_in_turn(
        client: httpx.AsyncClient, user: User) -> None:
    """"A under B" and "B under A" at once: one 200, the other 422 (no deadlock, no 503)."""
    _, h = user
    for _ in range(30):
        a, b = await make_task(client, h, "A"), await make_task(client, h, "B")
        r1, r2 = await asyncio.gather(_move(client, h, a, b), _move(client, h, b, a))
        no_5xx(r1, r2)
        assert sorted((r1.status_code, r2.status_code)) == [200, 422], (r1.text, r2.text)


async def test_a_parent_deleted_meanwhile_is_a_4xx_not_a_500(client: httpx.AsyncClient,
                                                             user: User) -> None:
    """Subtasks created or moved under a task deleted at the same time: 404/409, never 500."""
    _, h = user
    for _ in range(15):
        parent = await make_task(client, h, "P")
        kids = [await make_task(client, h, f"k{i}") for i in range(2)]
        answers = await asyncio.gather(
            *[_move(client, h, k, parent) for k in kids],
            *[client.post("/api/v1/tasks-board", json={"title": "k", "parent_id": parent["id"]},
                          headers=h) for _ in range(2)],
            client.delete(f"/api/v1/tasks-board/{parent['id']}", headers=h))
        no_5xx(*answers)


async def test_a_parent_deleted_between_its_check_and_the_tree_walk_is_a_404(
        client: httpx.AsyncClient, user: User, database: Database,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same race made certain: the parent is deleted (and committed) right after it
    was read, before the ancestor walk; moving or creating a subtask under it is a 404
    naming parent_id."""
    _, h = user
    parents = [await make_task(client, h, "P1"), await make_task(client, h, "P2")]
    kid = await make_task(client, h, "kid")
    real = service.get_task

    async def then_deleted(session: AsyncSession, actor: Principal, task_id: uuid.UUID,
                           *, lock: bool = False) -> Task:
        found = await real(session, actor, task_id, lock=lock)
        if str(task_id) in {p["id"] for p in parents}:
            await scalar(database, "DELETE FROM tasks WHERE id = :t RETURNING id", t=task_id)
        return found

    monkeypatch.setattr(service, "get_task", then_deleted)
    answers = [await _move(client, h, kid, parents[0]),
               await client.post("/api/v1/tasks-board", headers=h,
                                 json={"title": "k", "parent_id": parents[1]["id"]})]
    for resp in answers:
        assert resp.status_code == 404 and resp.json().get("field") == "parent_id", resp.text


async def test_a_parent_deleted_while_a_subtask_is_created_is_a_404_not_a_409(
        client: httpx.AsyncClient, user: User) -> None:
    """docs/workspace.md: "A parent deleted meanwhile is a 404 naming parent_id" (or the
    subtask was created first): never the 409 of a foreign-key failure between the
    parent's check and the insert (DELETE takes the owner's tree lock too)."""
    _, h = user
    answers = set()
    for _ in range(4):
        a = await make_task(client, h, "a")
        created, deleted = await asyncio.gather(
            client.post("/api/v1/tasks-board", json={"title": "c", "parent_id": a["id"]}, headers=h),
            client.delete(f"/api/v1/tasks-board/{a['id']}", headers=h))
        assert deleted.status_code == 204, deleted.text
        answers.add(created.status_code)
        if created.status_code == 404:
            assert "parent_id" in created.text, created.text
    assert answers <= {201, 404}, answers


async def test_a_parent_deleted_while_a_task_moves_under_it_is_a_404_not_a_409(
        client: httpx.AsyncClient, user: User) -> None:
    """The same on PATCH: moving a task under a parent being deleted is a 404 naming
    parent_id, or succeeds and leaves the task without a parent; never a 409."""
    _, h = user
    answers = set()
    for _ in range(4):
        a = await make_task(client, h, "a")
        c = await make_task(client, h, "c")
        moved, deleted = await asyncio.gather(
            client.patch(f"/api/v1/tasks-board/{c['id']}", json={"parent_id": a["id"]}, headers=h),
            client.delete(f"/api/v1/tasks-board/{a['id']}", headers=h))
        assert deleted.status_code == 204, deleted.text
        answers.add(moved.status_code)
    assert answers <= {200, 404}, answers


async def test_moving_a_task_into_a_project_deleted_meanwhile_is_a_404_naming_it(
        client: httpx.AsyncClient, user: User, database: Database) -> None:
    """A task moved into a project (PATCH project_id) whose deletion commits after the
    service found the project and before the task's write: the foreign key fails, and
    that is answered as for a project that does not exist, a 404 naming ``project_id``
    (it was an anonymous 409).  Deterministic: the deletion is held open until the
    PATCH waits on it."""
    _, h = user
    task = await make_task(client, h, "t")
    project = await make_project(client, h, "doomed")
    resp = await answer_behind(
        database, "DELETE FROM projects WHERE id = :p", {"p": project["id"]}, "tasks",
        client.patch(f"/api/v1/tasks-board/{task['id']}", json={"project_id": project["id"]},
                     headers=h))
    assert resp.status_code == 404, resp.text
    assert resp.json().get("field") == "project_id", resp.text
