"""Projects and prioritised tasks.

Projects: the owner's, shared read-only with the members of ``group_id``; the owner, a
group admin or an administrator changes one (anyone else who sees it gets 403), only the
owner or an administrator deletes it.  Anyone who can see a project may attach their own
tasks, agents, workflows, documents and chat sessions to it (:func:`require_project`; a
project they cannot see is a 404).

Tasks: the owner's only.  ``calculated_score`` is never computed here: PostgreSQL's
trigger does it on every insert and update (migration 0880), so a flush followed by a
refresh returns the new score whatever path wrote the row; :func:`refresh_scores` keeps
the time-dependent part (due-date proximity) current.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import delete, false, func, or_, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import owner_if_other, record
from roost.db.lookup import full_id, id_starts_with, one_or_404, same_text
from roost.errors import BadRequest, Forbidden, NotFound, Unprocessable
from roost.identity.common import group_ids_of, lock_owner_quota, require_user
from roost.identity.models import Group, UserGroupMembership
from roost.inputs import is_blank, read_as_utc
from roost.pagination import MALFORMED_CURSOR, decode_cursor, encode_cursor, newest_first, page_of
from roost.principal import Principal
from roost.workspace.models import CLOSED_STATUSES, Project, Task
from roost.workspace.schemas import ProjectCreate, ProjectUpdate, TaskCreate, TaskUpdate

PROJECT_NOT_NULL: Final = ("name", "status")
TASK_NOT_NULL: Final = ("title", "status", "priority", "completion_percentage",
                        "importance_weight", "urgency_weight", "complexity_weight",
                        "user_priority_weight", "task_type")
MAX_DEPTH: Final = 100  # of a task tree (the cycle check walks at most this far)



def _owner(actor: Principal) -> uuid.UUID:
    return require_user(actor, "projects and tasks")


# --- projects ----------------------------------------------------------------------------


def _project_visible(actor: Principal, *, listing: bool = False) -> Any:
    """Who sees a project: its owner, its group's members, administrators (by id; lists
    show an administrator their own and their groups' like everyone else)."""
    if actor.is_admin and not listing:
        return true()
    if actor.user_id is None:
        return false()
    if actor.group_ids:
        return or_(Project.user_id == actor.user_id,
                   Project.group_id.in_(list(actor.group_ids)))
    return Project.user_id == actor.user_id


async def _check_group(session: AsyncSession, actor: Principal, group_id: uuid.UUID | None) -> None:
    """A member files under their own groups, an administrator under any that exists:
    404 naming the field otherwise."""
    if group_id is None or (group_id in actor.group_ids and not actor.is_admin):
        return
    if not actor.is_admin or await session.get(Group, group_id) is None:
        raise NotFound(f"group {group_id} does not exist or you are not a member",
                       extra={"field": "group_id"})


def _check_dates(project: Project) -> None:
    if project.start_date and project.end_date and project.end_date < project.start_date:
        raise Unprocessable("end_date is before start_date", extra={"field": "end_date"})


def _name(value: str, field: str = "name") -> str:
    stripped = value.strip()
    if is_blank(stripped):  # zero-width characters alone show nothing either
        raise Unprocessable(f"{field} must not be blank", extra={"field": field})
    return stripped


async def create_project(session: AsyncSession, actor: Principal,
                         body: ProjectCreate) -> Project:
    owner = _owner(actor)
    await _check_group(session, actor, body.group_id)
    values = body.model_dump(exclude_unset=True)
    values["name"] = _name(body.name)
    if values.get("status") is None:
        values.pop("status", None)
    project = Project(user_id=owner, **values)
    _check_dates(project)
    session.add(project)
    await session.flush()
    await session.refresh(project)
    await record(session, "project.create", user_id=owner, resource_type="project",
                 resource_id=project.id, changes={"name": project.name,
                                                  "group_id": _plain(project.group_id)})
    return project


async def get_project(session: AsyncSession, actor: Principal, project_id: uuid.UUID,
                      *, lock: bool = False) -> Project:
    return await one_or_404(
        session, select(Project).where(Project.id == project_id, _project_visible(actor)),
        lock=lock, missing=f"project {project_id} does not exist")


async def require_project(session: AsyncSession, actor: Principal,
                          project_id: uuid.UUID | None, *,
                          owner_id: uuid.UUID | None = None) -> None:
    """For the domains whose rows a project groups (agents, workflows, documents, chat
    sessions, tasks): attaching to a project the actor cannot see is a 404, like an
    unknown id (the foreign key alone would accept another tenant's project).
    ``owner_id``: the row's owner, when the actor files someone else's row (an
    administrator): the project must be one that owner sees too (theirs, or one of their
    groups'), else a 404 naming the field: a project groups its owner's own things, and
    an administrator sees every project."""
    if project_id is None:
        return
    try:
        await get_project(session, actor, project_id)
    except NotFound:
        raise NotFound(f"project {project_id} does not exist",
                       extra={"field": "project_id"}) from None
    if owner_id is None or owner_id == actor.user_id:
        return
    groups = await group_ids_of(session, owner_id)
    seen = await session.scalar(select(Project.id).where(
        Project.id == project_id,
        or_(Project.user_id == owner_id, Project.group_id.in_(list(groups)))))
    if seen is None:
        raise NotFound(f"project {project_id} is not one the owner can see",
                       extra={"field": "project_id"})


async def find_project(session: AsyncSession, actor: Principal, ref: str) -> Project:
    """A project the actor sees by its full id, exact name or a unique start of an id
    (CLI).  The name is looked up on its own: a name that is also the start of other
    projects' ids ("0") still finds its project; one several projects share finds none.
    The full id is looked up as :func:`get_project` does (an administrator's reaches any
    project); a name or an id start only among the projects a listing shows, so that an
    administrator's names do not collide with other tenants'."""
    listed = _project_visible(actor, listing=True)
    full = full_id(ref)  # any spelling: dashes or not, braces, urn:uuid:
    # The exact name first, then the same name in another Unicode form (a macOS terminal
    # types "é" decomposed; a name stored composed looks the same and was not found).
    same_form = same_text(Project.name, ref)
    wheres = [(listed, Project.name == ref), (listed, same_form),
              (listed, id_starts_with(Project.id, ref))]
    if full is not None:  # a full id wins over a project named like it
        wheres.insert(0, (_project_visible(actor), Project.id == full))
    for visible, where in wheres:
        rows = (await session.scalars(select(Project).where(visible, where).limit(2))).all()
        if len(rows) > 1:
            raise BadRequest(f"{ref!r} names several projects; use the full id")
        if rows:
            return rows[0]
    raise NotFound(f"you have no project named {ref!r} or with an id starting with it")


async def list_projects(session: AsyncSession, actor: Principal, *, status: str | None = None,
                        group_id: uuid.UUID | None = None, limit: int = 50,
                        cursor: str | None = None) -> tuple[list[Project], str | None]:
    """The projects the actor owns or shares through a group, newest first."""
    _owner(actor)
    stmt = select(Project).where(_project_visible(actor, listing=True))
    if status is not None:
        stmt = stmt.where(Project.status == status)
    if group_id is not None:
        stmt = stmt.where(Project.group_id == group_id)
    return await newest_first(session, stmt, Project.created_at, Project.id, limit=limit,
                              cursor=cursor)


async def _check_editor(session: AsyncSession, actor: Principal, project: Project) -> None:
    if actor.is_admin or project.user_id == actor.user_id:
        return
    if project.group_id is not None and actor.user_id is not None:
        role = await session.scalar(select(UserGroupMembership.role).where(
            UserGroupMembership.user_id == actor.user_id,
            UserGroupMembership.group_id == project.group_id))
        if role == "admin":
            return
    raise Forbidden("only the project's owner or its group's admins change it")


async def update_project(session: AsyncSession, actor: Principal, project_id: uuid.UUID,
                         body: ProjectUpdate) -> Project:
    # Checked before locking: under row-level security FOR UPDATE sees only the rows the
    # actor may change, so a member's lock would hide the project (404, not 403).
    await _check_editor(session, actor, await get_project(session, actor, project_id))
    project = await get_project(session, actor, project_id, lock=True)
    given = body.model_fields_set
    for fld in PROJECT_NOT_NULL:
        if fld in given and getattr(body, fld) is None:
            raise Unprocessable(f"{fld} cannot be null", extra={"field": fld})
    if "group_id" in given and body.group_id != project.group_id:
        if project.user_id != actor.user_id and not actor.is_admin:
            raise Forbidden("only the project's owner shares it with another group")
        await _check_group(session, actor, body.group_id)
    changes: dict[str, Any] = {}
    for fld in sorted(given):
        value = getattr(body, fld)
        if fld == "name":
            value = _name(value)
        if getattr(project, fld) != value:
            changes[fld] = _plain(value) if fld in ("status", "group_id", "name") else "changed"
            setattr(project, fld, value)
    _check_dates(project)
    await session.flush()
    await session.refresh(project)
    await record(session, "project.update", user_id=actor.user_id, resource_type="project",
                 resource_id=project.id, changes={**changes, **owner_if_other(actor, project.user_id)})
    return project


async def delete_project(session: AsyncSession, actor: Principal,
                         project_id: uuid.UUID) -> None:
    """Delete a project: what it grouped stays, with ``project_id`` set to NULL."""
    project = await get_project(session, actor, project_id)
    if not actor.is_admin and project.user_id != actor.user_id:
        raise Forbidden("only the project's owner deletes it")
    project = await get_project(session, actor, project_id, lock=True)
    await session.execute(delete(Project).where(Project.id == project.id))
    await record(session, "project.delete", user_id=actor.user_id, resource_type="project",
                 resource_id=project.id,
                 changes={"name": project.name, **owner_if_other(actor, project.user_id)})


# The tables whose rows a project groups.  They belong to higher domains (agents,
# workflows, knowledge, chat), which this one must not import: counted by name.  Counts
# run in the caller's row-level-security scope: what the viewer can see.
GROUPED: Final = ("agents", "workflows", "documents", "chat_sessions")
COUNT_GROUPED: Final = text("""SELECT
  (SELECT count(*) FROM agents WHERE project_id = :p) AS agents,
  (SELECT count(*) FROM workflows WHERE project_id = :p) AS workflows,
  (SELECT count(*) FROM documents WHERE project_id = :p) AS documents,
  (SELECT count(*) FROM chat_sessions WHERE project_id = :p) AS chat_sessions""")


async def project_counts(session: AsyncSession, actor: Principal,
                         project: Project) -> dict[str, int]:
    row = (await session.execute(COUNT_GROUPED, {"p": project.id})).one()
    counts = {key: int(getattr(row, key)) for key in GROUPED}
    tasks = (await session.execute(
        select(func.count(), func.count().filter(Task.status.not_in(CLOSED_STATUSES)))
        .where(Task.project_id == project.id, _task_visible(actor)))).one()
    counts["tasks"], counts["open_tasks"] = int(tasks[0]), int(tasks[1])
    return counts


# --- tasks -------------------------------------------------------------------------------


def _task_visible(actor: Principal, *, listing: bool = False) -> Any:
    if actor.is_admin and not listing:
        return true()
    if actor.user_id is None:
        return false()
    return Task.user_id == actor.user_id


async def get_task(session: AsyncSession, actor: Principal, task_id: uuid.UUID,
                   *, lock: bool = False) -> Task:
    stmt = select(Task).where(Task.id == task_id, _task_visible(actor))
    if lock:
        stmt = stmt.with_for_update()
    found = await session.scalar(stmt)
    if found is None:
        raise NotFound(f"task {task_id} does not exist")
    return found


async def _lock_tree(session: AsyncSession, owner: uuid.UUID) -> None:
    """Serialise the parent changes of one owner's tasks until the transaction ends.  The
    cycle check walks committed rows: two re-parentings checked at once ("A under C",
    "C under B" while B is under A) would each pass and together store a cycle.  Taken
    before any task row is locked, so that two tasks moved under each other wait in turn
    instead of deadlocking on each other's row."""
    await lock_owner_quota(session, owner, "task-tree")


async def _check_parent(session: AsyncSession, actor: Principal, task: Task,
                        parent_id: uuid.UUID | None) -> None:
    """The parent is a task of the same owner and not the task itself or a descendant
    (the caller holds :func:`_lock_tree`)."""
    if parent_id is None:
        return
    try:
        parent = await get_task(session, actor, parent_id)
    except NotFound:
        raise NotFound(f"task {parent_id} does not exist", extra={"field": "parent_id"}) from None
    if parent.user_id != task.user_id:
        raise NotFound(f"task {parent_id} does not exist", extra={"field": "parent_id"})
    ancestors = text("""
        WITH RECURSIVE up(id, parent_id, depth) AS (
          SELECT id, parent_id, 1 FROM tasks WHERE id = :start
          UNION ALL
          SELECT t.id, t.parent_id, up.depth + 1 FROM tasks t JOIN up ON t.id = up.parent_id
           WHERE up.depth < :max
        ) SELECT coalesce(bool_or(id = :task), false), max(depth) FROM up""")
    row = (await session.execute(ancestors, {
        "start": parent_id, "task": task.id, "max": MAX_DEPTH})).one()
    if row[1] is None:  # the parent was deleted since it was read
        raise NotFound(f"task {parent_id} does not exist", extra={"field": "parent_id"})
    cycle, levels = bool(row[0]), int(row[1])
    if cycle:
        raise Unprocessable("parent_id would make a cycle: the parent is this task or one of "
                            "its subtasks", extra={"field": "parent_id"})
    height: int = 1  # the levels of the task's own subtree (a new task has no subtasks)
    if task.id is not None and levels < MAX_DEPTH:
        height = await session.scalar(text("""
            WITH RECURSIVE down(id, depth) AS (
              SELECT id, 1 FROM tasks WHERE id = :task
              UNION ALL
              SELECT t.id, down.depth + 1 FROM tasks t JOIN down ON t.parent_id = down.id
               WHERE down.depth < :max
            ) SELECT max(depth) FROM down"""), {"task": task.id, "max": MAX_DEPTH}) or 1
        height = int(height)
    if levels >= MAX_DEPTH or levels + height > MAX_DEPTH:
        # the walk stopped at the limit: a cycle through a deeper tree is refused too
        raise Unprocessable(f"parent_id would make a task tree deeper than {MAX_DEPTH} levels "
                            "(or a cycle through one)", extra={"field": "parent_id"})


def _task_values(body: TaskCreate | TaskUpdate) -> dict[str, Any]:
    values = {k: getattr(body, k) for k in body.model_fields_set}
    if "title" in values and values["title"] is not None:
        values["title"] = _name(values["title"], "title")
    return values


async def create_task(session: AsyncSession, actor: Principal, body: TaskCreate) -> Task:
    owner = _owner(actor)
    values = {k: v for k, v in _task_values(body).items() if v is not None}
    task = Task(user_id=owner, **{k: v for k, v in values.items() if k != "parent_id"})
    await require_project(session, actor, body.project_id)
    if body.parent_id is not None:
        await _lock_tree(session, owner)
    await _check_parent(session, actor, task, body.parent_id)
    task.parent_id = body.parent_id
    session.add(task)
    await session.flush()
    await session.refresh(task)  # the trigger's score and completed_at
    await record(session, "task.create", user_id=owner, resource_type="task",
                 resource_id=task.id, changes={"title": task.title,
                                               "project_id": _plain(task.project_id)})
    return task


async def update_task(session: AsyncSession, actor: Principal, task_id: uuid.UUID,
                      body: TaskUpdate) -> Task:
    given = body.model_fields_set
    if "parent_id" in given:  # the owner's tree lock first, then the row (_lock_tree)
        await _lock_tree(session, (await get_task(session, actor, task_id)).user_id)
    task = await get_task(session, actor, task_id, lock=True)
    for fld in TASK_NOT_NULL:
        if fld in given and getattr(body, fld) is None:
            raise Unprocessable(f"{fld} cannot be null", extra={"field": fld})
    values = _task_values(body)
    if "project_id" in values and values["project_id"] != task.project_id:
        await require_project(session, actor, values["project_id"], owner_id=task.user_id)
    if "parent_id" in values and values["parent_id"] != task.parent_id:
        await _check_parent(session, actor, task, values["parent_id"])
    before = task.calculated_score
    for key, value in values.items():
        setattr(task, key, value)
    await session.flush()
    # "PATCH recomputes the score": the flush writes nothing when every value is the one
    # stored (a form saved again), so the trigger did not run and a due date come closer
    # since the last write answered the old score until the hourly rescore.
    await _rescore(session, Task.id == task.id)
    await session.refresh(task)
    await record(session, "task.update", user_id=actor.user_id, resource_type="task",
                 resource_id=task.id, changes={"fields": sorted(given),
                                               "score": {"before": before,
                                                         "after": task.calculated_score},
                                               **owner_if_other(actor, task.user_id)})
    return task


async def delete_task(session: AsyncSession, actor: Principal, task_id: uuid.UUID) -> None:
    """Delete a task; its subtasks stay, without a parent.  Under the owner's tree lock,
    as a parent change is: a subtask created or moved under it meanwhile either commits
    first (and loses its parent with the delete) or finds it gone (404 naming
    ``parent_id``), never a foreign-key failure between its check and its write."""
    owner = (await get_task(session, actor, task_id)).user_id
    await _lock_tree(session, owner)
    task = await get_task(session, actor, task_id, lock=True)
    await session.execute(delete(Task).where(Task.id == task.id))
    await record(session, "task.delete", user_id=actor.user_id, resource_type="task",
                 resource_id=task.id,
                 changes={"title": task.title, **owner_if_other(actor, task.user_id)})


def score_cursor(task: Task) -> str:
    return encode_cursor({"s": task.calculated_score, "id": str(task.id)})


def _after_score(cursor: str) -> Any:
    after = decode_cursor(cursor)
    score = after.get("s")
    try:
        last_id = uuid.UUID(str(after["id"]))
    except (KeyError, ValueError) as exc:
        raise BadRequest(MALFORMED_CURSOR) from exc
    if not isinstance(score, int | float) or isinstance(score, bool):
        raise BadRequest(MALFORMED_CURSOR)
    try:
        at = float(score)
    except OverflowError as exc:  # an integer beyond any float
        raise BadRequest(MALFORMED_CURSOR) from exc
    if not math.isfinite(at):  # JSON's NaN and Infinity, which Python's json accepts
        raise BadRequest(MALFORMED_CURSOR)
    return or_(Task.calculated_score < at,
               (Task.calculated_score == at) & (Task.id < last_id))


async def list_tasks(
    session: AsyncSession, actor: Principal, *, project_id: uuid.UUID | None = None,
    status: str | None = None, priority: str | None = None, parent_id: uuid.UUID | None = None,
    due_before: datetime | None = None, due_after: datetime | None = None,
    min_score: float | None = None, open_only: bool = False, limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Task], str | None]:
    """The actor's tasks, highest score first (then newest id), one keyset page;
    ``open_only`` leaves out the done and cancelled ones."""
    owner = _owner(actor)
    stmt = select(Task).where(Task.user_id == owner)
    if open_only:
        stmt = stmt.where(Task.status.not_in(CLOSED_STATUSES))
    for column, value in ((Task.project_id, project_id), (Task.status, status),
                          (Task.priority, priority), (Task.parent_id, parent_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    if due_before is not None:
        stmt = stmt.where(Task.due_date < read_as_utc(due_before))
    if due_after is not None:
        stmt = stmt.where(Task.due_date >= read_as_utc(due_after))
    if min_score is not None:
        stmt = stmt.where(Task.calculated_score >= min_score)
    if cursor is not None:
        stmt = stmt.where(_after_score(cursor))
    rows = (await session.scalars(stmt.order_by(Task.calculated_score.desc(), Task.id.desc())
                                  .limit(limit + 1))).all()
    return page_of(rows, limit, score_cursor)


async def refresh_scores(session: AsyncSession) -> int:
    """Recompute the stored score of open tasks whose due-date term has moved on (the
    trigger does the computing; rows whose score would not change are not written).
    Runs without a user scope: the hourly job, for every user."""
    return await _rescore(session)


async def _rescore(session: AsyncSession, *only: Any) -> int:
    """:func:`refresh_scores` of the open tasks matching ``only`` (all without)."""
    result = await session.execute(
        update(Task).where(
            *only, Task.status.not_in(CLOSED_STATUSES), Task.due_date.is_not(None),
            Task.calculated_score != func.roost_task_score(
                Task.status, Task.priority, Task.due_date, Task.completion_percentage,
                Task.importance_weight, Task.urgency_weight, Task.complexity_weight,
                Task.user_priority_weight, func.now()),
        # updated_at kept: a rescore is not a change of the task (Core would apply the
        # column's onupdate otherwise).
        ).values(due_date=Task.due_date, updated_at=Task.updated_at)
        .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)



def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value
