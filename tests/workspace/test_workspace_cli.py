"""``roost projects ...`` and ``roost tasks-board ...`` as a user runs them (the real
console script): the board re-sorts when a task's urgency changes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from roost.db.engine import Database
from tests.agents.test_agents_cli import cli_env
from tests.knowledge.support import make_group
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer
from tests.workspace.conftest import make_project, make_task


def _titles(stdout: str, *titles: str) -> list[str]:
    """The given titles in the order the table prints them."""
    return sorted(titles, key=stdout.index)


async def test_projects_and_the_tasks_board_from_the_command_line(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="pmx")
    await make_user(database, username="eve")

    out = run_roost("projects", "add", "Website", "--language", "typescript", "--repository",
                    "https://example.org/site.git", "--user", "pmx", env=env)
    assert out.returncode == 0, out.stderr
    bad = run_roost("projects", "add", "X", "--repository", "javascript:x", "--user", "pmx",
                    env=env)
    assert bad.returncode != 0 and "repository_url" in bad.stderr

    out = run_roost("tasks-board", "add", "Fix login", "--project", "Website", "--priority",
                    "high", "--user", "pmx", env=env)
    assert out.returncode == 0, out.stderr
    out = run_roost("tasks-board", "add", "Write blog", "--priority", "low", "--user", "pmx",
                    env=env)
    blog_id = out.stdout.split()[0]
    out = run_roost("tasks-board", "ls", "--user", "pmx", env=env)
    assert _titles(out.stdout, "Fix login", "Write blog") == ["Fix login", "Write blog"]

    out = run_roost("tasks-board", "update", blog_id[:13], "--urgency", "9", "--user", "pmx",
                    env=env)
    assert out.returncode == 0, out.stderr
    out = run_roost("tasks-board", "ls", "--user", "pmx", env=env)
    assert _titles(out.stdout, "Fix login", "Write blog") == ["Write blog", "Fix login"]
    bad = run_roost("tasks-board", "update", blog_id, "--progress", "101", "--user", "pmx",
                    env=env)
    assert bad.returncode == 2 and "--progress" in bad.stderr  # out of its bounds: a usage error

    out = run_roost("tasks-board", "done", blog_id, "--user", "pmx", env=env)
    assert out.returncode == 0 and "done" in out.stdout
    assert "Write blog" not in run_roost("tasks-board", "ls", "--user", "pmx", env=env).stdout
    assert "Write blog" in run_roost("tasks-board", "ls", "--all", "--user", "pmx",
                                     env=env).stdout

    out = run_roost("projects", "show", "Website", "--user", "pmx", env=env)
    assert out.returncode == 0, out.stderr
    assert "1 tasks" in out.stdout and "typescript" in out.stdout
    # Eve sees none of it.
    assert run_roost("projects", "show", "Website", "--user", "eve", env=env).returncode != 0
    assert run_roost("tasks-board", "done", blog_id, "--user", "eve", env=env).returncode != 0
    assert "Website" not in run_roost("projects", "ls", "--user", "eve", env=env).stdout

    out = run_roost("projects", "archive", "Website", "--user", "pmx", env=env)
    assert out.returncode == 0 and "archived" in out.stdout
    out = run_roost("projects", "ls", "--status", "archived", "--user", "pmx", env=env)
    assert "Website" in out.stdout


@pytest.mark.parametrize("ref", ["", "%", "_"])
async def test_an_empty_or_wildcard_project_name_archives_nothing(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
        ref: str) -> None:
    """`roost projects archive "$UNSET"` (or `%`) names no project: it fails instead of
    archiving the user's only project (the name is used as a LIKE prefix of the id)."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="wsx")
    made = run_roost("projects", "add", "Website", "--user", "wsx", env=env)
    assert made.returncode == 0, made.stderr
    out = run_roost("projects", "archive", ref, "--user", "wsx", env=env)
    assert out.returncode == 1, out.stdout
    listed = run_roost("projects", "ls", "--status", "archived", "--user", "wsx", env=env)
    assert "Website" not in listed.stdout


async def test_a_project_name_several_projects_share_resolves_to_none(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """Two projects named dup: `archive dup`, `show dup`, `--project dup` act on neither and
    ask for the full id, which still works."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="dupx")
    ids = []
    for _ in range(2):
        made = run_roost("projects", "add", "dup", "--user", "dupx", env=env)
        assert made.returncode == 0, made.stderr
        ids.append(made.stdout.split()[0])
    for cmd in (("projects", "archive", "dup"), ("projects", "show", "dup"),
                ("tasks-board", "ls", "--project", "dup")):
        out = run_roost(*cmd, "--user", "dupx", env=env)
        assert out.returncode == 1 and "several" in out.stderr, (cmd, out.stdout, out.stderr)
    archived = run_roost("projects", "ls", "--status", "archived", "--user", "dupx", env=env)
    assert "dup" not in archived.stdout
    by_id = run_roost("projects", "archive", ids[1], "--user", "dupx", env=env)
    assert by_id.returncode == 0, by_id.stderr


async def test_a_project_is_found_by_its_exact_name_that_is_also_an_id_start(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """`roost projects show 0` shows the one project named "0", whatever ids start with 0
    (UUIDv7 ids of projects made now all start with 0)."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="pfx")
    for name in ("a", "b", "c", "0"):
        assert run_roost("projects", "add", name, "--user", "pfx", env=env).returncode == 0
    out = run_roost("projects", "show", "0", "--user", "pfx", env=env)
    assert out.returncode == 0 and "name         0\n" in out.stdout, out.stderr


async def test_stored_control_characters_are_printed_escaped(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
        client: httpx.AsyncClient) -> None:
    """A group project's name (or a task title) holding ESC sequences reaches no terminal:
    every command that prints a stored string shows them as escapes."""
    env = cli_env(pg_server, db_name, tmp_path)
    owner_id, owner = await make_user(database, username="ownr")
    member_id, _ = await make_user(database, username="mmbr")
    team = await make_group(database, "team-esc", owner_id, member_id)
    evil = "Site\x1b]0;pwned\x07\x1b[2J"
    project = await make_project(client, owner, evil, group_id=str(team), description=evil,
                                 local_path=evil)
    task = await make_task(client, owner, evil)
    outs = {" ".join(cmd[:3]): run_roost(*cmd, env=env) for cmd in (
        ("projects", "ls", "--user", "mmbr"),
        ("projects", "show", project["id"], "--user", "mmbr"),
        ("projects", "add", evil, "--user", "ownr"),
        ("tasks-board", "ls", "--user", "ownr"),
        ("tasks-board", "add", evil, "--user", "ownr"),
        ("tasks-board", "update", task["id"], "--progress", "5", "--user", "ownr"),
        ("tasks-board", "done", task["id"], "--user", "ownr"))}
    for cmd, out in outs.items():
        assert out.returncode == 0, (cmd, out.stderr)
        assert "\x1b" not in out.stdout and "\\x1b]0;pwned" in out.stdout, (cmd, out.stdout)


async def test_a_name_with_bidi_controls_cannot_reorder_the_listing(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """A project name holding a right-to-left override (U+202E) would make the terminal
    show the text after it reversed ("Trojan Source"): it is printed as its escape."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="bidi")
    name = "invoice\u202etxt.exe"
    out = run_roost("projects", "add", name, "--user", "bidi", env=env)
    assert out.returncode == 0, out.stderr
    listed = run_roost("projects", "ls", "--user", "bidi", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "\u202e" not in listed.stdout
    assert "invoice\\u202etxt.exe" in listed.stdout.replace("\n", ""), listed.stdout


async def test_board_ls_with_a_limit_counts_only_open_tasks(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
        client: httpx.AsyncClient) -> None:
    """`roost tasks-board ls --limit 2` shows up to two open tasks: the closed ones are left
    out by the query, not after it, so an open task scoring 0 ("someday") sorted below
    newer closed tasks (also 0) is still shown."""
    env = cli_env(pg_server, db_name, tmp_path)
    _, headers = await make_user(database, username="lim")
    await make_task(client, headers, "Someday open", user_priority_weight=0)
    await make_task(client, headers, "Closed one", status="done")
    await make_task(client, headers, "Closed two", status="cancelled")
    out = run_roost("tasks-board", "ls", "--limit", "2", "--user", "lim", env=env)
    assert out.returncode == 0, out.stderr
    assert "Someday open" in out.stdout and "Closed" not in out.stdout, out.stdout
    out = run_roost("tasks-board", "ls", "--all", "--limit", "3", "--user", "lim", env=env)
    assert all(t in out.stdout for t in ("Someday open", "Closed one", "Closed two")), out.stdout


async def test_an_administrator_names_anyones_project_by_its_full_id(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
        client: httpx.AsyncClient) -> None:
    """An administrator reads and changes any project by id: `projects show|archive <full
    id> --user <admin>` acts on another user's project; by its name it stays the owner's
    (an administrator's names are their own and their groups')."""
    env = cli_env(pg_server, db_name, tmp_path)
    _, headers = await make_user(database, username="alice")
    await make_user(database, admin=True, username="boss")
    project = await make_project(client, headers, "Hers")
    assert run_roost("projects", "show", "Hers", "--user", "boss", env=env).returncode == 1
    out = run_roost("projects", "show", project["id"], "--user", "boss", env=env)
    assert out.returncode == 0 and "Hers" in out.stdout, (out.stdout, out.stderr)
    out = run_roost("projects", "archive", project["id"], "--user", "boss", env=env)
    assert out.returncode == 0, (out.stdout, out.stderr)
    resp = await client.get(f"/api/v1/projects/{project['id']}", headers=headers)
    assert resp.status_code == 200 and resp.json()["status"] == "archived", resp.text


async def test_a_project_name_typed_in_another_unicode_form_finds_the_project(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """A project named "Café" (composed é) is shown by `roost projects show` typed with a
    decomposed é (as a macOS terminal sends it); the exact form still wins when both exist."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="nfcx")
    made = run_roost("projects", "add", "Caf\u00e9", "--user", "nfcx", env=env)
    assert made.returncode == 0, made.stderr
    out = run_roost("projects", "show", "Cafe\u0301", "--user", "nfcx", env=env)
    assert out.returncode == 0 and made.stdout.split()[0] in out.stdout, out.stderr
    twin = run_roost("projects", "add", "Cafe\u0301", "--user", "nfcx", env=env)
    assert twin.returncode == 0, twin.stderr
    for typed, made_by in (("Caf\u00e9", made), ("Cafe\u0301", twin)):
        out = run_roost("projects", "show", typed, "--user", "nfcx", env=env)
        assert out.returncode == 0 and made_by.stdout.split()[0] in out.stdout, out.stderr


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


async def test_root_cli_task_prefix_ignores_other_users_tasks(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """An administrator's id start unique among their own tasks (those `ls` shows) finds
    their task: it was "the start of several task ids", naming another user's task."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="pmx3")
    await make_user(database, username="boss3", admin=True)
    mine = run_roost("tasks-board", "add", "Root task", "--user", "boss3", env=env)
    assert mine.returncode == 0, mine.stderr
    theirs = run_roost("tasks-board", "add", "Their task", "--user", "pmx3", env=env)
    assert theirs.returncode == 0, theirs.stderr
    mine_id, theirs_id = mine.stdout.split()[0], theirs.stdout.split()[0]
    prefix = _common_prefix(mine_id, theirs_id)
    assert len(prefix) >= 4  # UUIDv7 ids made a moment apart share their start
    listed = run_roost("tasks-board", "ls", "--user", "boss3", env=env)
    assert "Root task" in listed.stdout and "Their task" not in listed.stdout
    out = run_roost("tasks-board", "done", prefix, "--user", "boss3", env=env)
    assert out.returncode == 0, out.stderr
    assert "Root task: done" in out.stdout


async def test_root_cli_task_prefix_does_not_reach_another_users_task(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """An id start only another user's task has is "no task" for an administrator (their
    `ls` never shows it): it marked that user's task done."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="pmx4")
    await make_user(database, username="boss4", admin=True)
    theirs = run_roost("tasks-board", "add", "Their task", "--user", "pmx4", env=env)
    assert theirs.returncode == 0, theirs.stderr
    theirs_id = theirs.stdout.split()[0]
    out = run_roost("tasks-board", "done", theirs_id[:23], "--user", "boss4", env=env)
    after = run_roost("tasks-board", "ls", "--all", "--user", "pmx4", env=env)
    assert out.returncode != 0, out.stdout
    assert "done" not in after.stdout.split("Their task")[1].split("\n")[0]
