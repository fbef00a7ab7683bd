"""``roost projects ls|add|show|archive`` and ``roost tasks-board ls|add|update|done``
(``roost tasks`` is the job queue).

Every command acts for one user, ``--user`` (username or e-mail; default: the root user),
in that user's row-level-security scope, through the same services as the API.  Projects
are named by exact name or id (or a unique start of one); tasks by id or a unique start.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.clitools import (
    MAX_LIST,
    add_text_row,
    fail,
    id_table,
    parse_input,
    print_table,
    printable,
    resolve_id,
    when,
)
from roost.identity.cliscope import Env, UserOpt
from roost.identity.cliscope import run_as as _run
from roost.principal import Principal
from roost.workspace import service
from roost.workspace.models import (
    MAX_WEIGHT,
    PROJECT_STATUSES,
    TASK_PRIORITIES,
    TASK_STATUSES,
    Project,
    Task,
)
from roost.workspace.schemas import ProjectCreate, ProjectUpdate, TaskCreate, TaskUpdate

console = Console()
projects_app = typer.Typer(help="Projects: what groups your tasks, agents, workflows, "
                                "documents and chats.", no_args_is_help=True)
board_app = typer.Typer(help="Your prioritised tasks, highest score first (not the job "
                             "queue: that is `roost tasks`).", no_args_is_help=True)

ProjectRef = Annotated[str, typer.Argument(help="The project: its name or id.")]
TaskRef = Annotated[str, typer.Argument(help="The task's id (or a unique start of it).")]
ProjectOpt = Annotated[str | None, typer.Option("--project", "-p",
                                                help="A project: its name or id.")]


# --- projects ----------------------------------------------------------------------------


@projects_app.command("ls")
def projects_ls(
    user: UserOpt = None,
    status: Annotated[str | None, typer.Option(
        help="Only this status: " + ", ".join(PROJECT_STATUSES) + ".")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST)] = 100,
) -> None:
    """Your projects and your groups', newest first."""
    if status is not None and status not in PROJECT_STATUSES:
        raise fail("Invalid --status", f"one of {', '.join(PROJECT_STATUSES)}")

    async def go(env: Env) -> list[Project]:
        async with env.scoped() as session:
            rows, _ = await service.list_projects(session, env.principal, status=status,
                                                  limit=limit)
            return rows

    table = id_table("id", "name", "status", "language", "created", wrap=("name",))
    for p in _run(user, go):
        add_text_row(table, str(p.id), p.name, p.status, p.programming_language or "-",
                     when(p.created_at))
    print_table(console, table)


@projects_app.command("add")
def projects_add(
    name: Annotated[str, typer.Argument(help="The project's name.")],
    user: UserOpt = None,
    description: Annotated[str | None, typer.Option()] = None,
    language: Annotated[str | None, typer.Option("--language")] = None,
    framework: Annotated[str | None, typer.Option()] = None,
    repository: Annotated[str | None, typer.Option(
        "--repository", help="http(s)://, ssh://, git:// URL or git@host:path.")] = None,
    path: Annotated[str | None, typer.Option("--path", help="Local path (metadata only).")
                    ] = None,
) -> None:
    """Create a project."""
    body = parse_input(ProjectCreate, {"name": name, "description": description,
                                 "programming_language": language, "framework": framework,
                                 "repository_url": repository, "local_path": path})

    async def go(env: Env) -> Project:
        async with env.scoped() as session:
            return await service.create_project(session, env.principal, body)

    project = _run(user, go)
    console.print(Text(printable(f"{project.id}  {project.name}")))


@projects_app.command("show")
def projects_show(project: ProjectRef, user: UserOpt = None) -> None:
    """A project and what it groups."""

    async def go(env: Env) -> tuple[Project, dict[str, int]]:
        async with env.scoped() as session:
            found = await service.find_project(session, env.principal, project)
            return found, await service.project_counts(session, env.principal, found)

    found, counts = _run(user, go)
    for label, value in (("id", str(found.id)), ("name", found.name), ("status", found.status),
                         ("description", found.description or "-"),
                         ("language", found.programming_language or "-"),
                         ("framework", found.framework or "-"),
                         ("repository", found.repository_url or "-"),
                         ("path", found.local_path or "-"),
                         ("dates", f"{found.start_date or '-'} .. {found.end_date or '-'}")):
        console.print(Text(printable(f"{label:12} {value}")))
    console.print(Text("groups       " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                                   for k, v in counts.items())))


@projects_app.command("archive")
def projects_archive(project: ProjectRef, user: UserOpt = None) -> None:
    """Archive a project (status archived; nothing is deleted)."""

    async def go(env: Env) -> Project:
        async with env.scoped() as session:
            found = await service.find_project(session, env.principal, project)
            return await service.update_project(session, env.principal, found.id,
                                                ProjectUpdate(status="archived"))

    done = _run(user, go)
    console.print(Text(printable(f"{done.name}: archived")))


# --- tasks board -------------------------------------------------------------------------


async def _task_id(session: AsyncSession, principal: Principal, ref: str) -> uuid.UUID:
    # A start of an id among the user's own tasks, as `ls` lists them (an administrator's
    # row-level security shows everyone's: a start matched other users' tasks); a full id
    # reaches any task the user may reach, as in the API.
    task_id = await resolve_id(session, Task.id, ref, "task",
                               where=Task.user_id == principal.user_id)
    await service.get_task(session, principal, task_id)  # 404 unless it is the user's
    return task_id


async def _project_id(session: AsyncSession, principal: Principal,
                      ref: str | None) -> uuid.UUID | None:
    if ref is None:
        return None
    return (await service.find_project(session, principal, ref)).id


def _print_tasks(rows: list[Task]) -> None:
    table = id_table("id", "score", "title", "status", "priority", "due", "done %",
                     wrap=("title",))
    for t in rows:
        add_text_row(table, str(t.id), f"{t.calculated_score:.2f}", t.title, t.status,
                     t.priority, when(t.due_date), str(t.completion_percentage))
    print_table(console, table)


@board_app.command("ls")
def board_ls(
    user: UserOpt = None,
    project: ProjectOpt = None,
    status: Annotated[str | None, typer.Option(
        help="Only this status: " + ", ".join(TASK_STATUSES) + ".")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include done and cancelled tasks.")
                    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST)] = 100,
) -> None:
    """Your tasks, highest score first (open ones only unless --all or --status)."""
    if status is not None and status not in TASK_STATUSES:
        raise fail("Invalid --status", f"one of {', '.join(TASK_STATUSES)}")

    async def go(env: Env) -> list[Task]:
        async with env.scoped() as session:
            pid = await _project_id(session, env.principal, project)
            rows, _ = await service.list_tasks(session, env.principal, project_id=pid,
                                               status=status, limit=limit,
                                               open_only=not all_ and status is None)
            return rows

    _print_tasks(_run(user, go))


def _task_fields(priority: str | None, due: str | None, urgency: float | None,
                 importance: float | None, complexity: float | None,
                 progress: int | None) -> dict[str, Any]:
    if priority is not None and priority not in TASK_PRIORITIES:
        raise fail("Invalid --priority", f"one of {', '.join(TASK_PRIORITIES)}")
    return {"priority": priority, "due_date": due, "urgency_weight": urgency,
            "importance_weight": importance, "complexity_weight": complexity,
            "completion_percentage": progress}


Priority = Annotated[str | None, typer.Option(help=", ".join(TASK_PRIORITIES))]
Due = Annotated[str | None, typer.Option("--due", help="ISO 8601 with an offset, "
                                         "e.g. 2027-01-31T17:00:00Z")]
Urgency = Annotated[float | None, typer.Option("--urgency", min=0, max=MAX_WEIGHT,
                                               help="urgency_weight")]
Importance = Annotated[float | None, typer.Option("--importance", min=0, max=MAX_WEIGHT,
                                                  help="importance_weight")]
Complexity = Annotated[float | None, typer.Option("--complexity", min=0, max=MAX_WEIGHT,
                                                  help="complexity_weight")]
Progress = Annotated[int | None, typer.Option("--progress", min=0, max=100,
                                              help="completion_percentage")]


@board_app.command("add")
def board_add(
    title: Annotated[str, typer.Argument(help="What to do.")],
    user: UserOpt = None, project: ProjectOpt = None, priority: Priority = None,
    due: Due = None, urgency: Urgency = None, importance: Importance = None,
    complexity: Complexity = None,
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Add a task."""
    fields = _task_fields(priority, due, urgency, importance, complexity, None)

    async def go(env: Env) -> Task:
        async with env.scoped() as session:
            pid = await _project_id(session, env.principal, project)
            body = parse_input(TaskCreate, {**fields, "title": title, "description": description,
                                      "project_id": str(pid) if pid else None})
            return await service.create_task(session, env.principal, body)

    task = _run(user, go)
    console.print(Text(printable(f"{task.id}  score {task.calculated_score:.2f}  {task.title}")))


@board_app.command("update")
def board_update(
    task: TaskRef, user: UserOpt = None,
    title: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option(help=", ".join(TASK_STATUSES))] = None,
    priority: Priority = None, due: Due = None, urgency: Urgency = None,
    importance: Importance = None, complexity: Complexity = None, progress: Progress = None,
) -> None:
    """Change a task; its score is recomputed."""
    if status is not None and status not in TASK_STATUSES:
        raise fail("Invalid --status", f"one of {', '.join(TASK_STATUSES)}")
    body = parse_input(TaskUpdate, {**_task_fields(priority, due, urgency, importance, complexity,
                                             progress), "title": title, "status": status})
    if not body.model_fields_set:
        raise fail("Nothing to change", "pass at least one option (see --help)")

    async def go(env: Env) -> Task:
        async with env.scoped() as session:
            task_id = await _task_id(session, env.principal, task)
            return await service.update_task(session, env.principal, task_id, body)

    changed = _run(user, go)
    console.print(Text(printable(
        f"{changed.id}  score {changed.calculated_score:.2f}  {changed.title}")))


@board_app.command("done")
def board_done(task: TaskRef, user: UserOpt = None) -> None:
    """Mark a task done (100 %)."""

    async def go(env: Env) -> Task:
        async with env.scoped() as session:
            task_id = await _task_id(session, env.principal, task)
            return await service.update_task(session, env.principal, task_id, TaskUpdate(
                status="done", completion_percentage=100))

    changed = _run(user, go)
    console.print(Text(printable(f"{changed.title}: done")))


def register(app: typer.Typer) -> None:
    """Add ``roost projects`` and ``roost tasks-board`` (``roost.domains``)."""
    app.add_typer(projects_app, name="projects")
    app.add_typer(board_app, name="tasks-board")
