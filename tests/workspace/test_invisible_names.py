"""Project names and task titles of invisible characters only (zero-width spaces, a BOM,
joiners) are blank, a 422 as spaces are: they were stored, showing nothing."""

from __future__ import annotations

import httpx

from tests.workspace.conftest import User, make_project


async def test_zero_width_only_project_name_is_blank(client: httpx.AsyncClient,
                                                     user: User) -> None:
    """A user expects a project name that shows nothing to be refused as blank (422), as
    API-key, passkey, agent and memory names are (`roost.inputs.is_blank`).  Instead
    names of zero-width spaces, a BOM or joiners are stored (201): `str.strip` and the
    `btrim` check keep them, so the board and `roost projects ls` show an empty name."""
    _, headers = user
    for name in ("\u200b\u200b", "\ufeff", "\u200d \u200c"):
        resp = await client.post("/api/v1/projects", json={"name": name}, headers=headers)
        assert resp.status_code == 422, (name, resp.status_code, resp.text)


async def test_zero_width_only_project_rename_is_blank(client: httpx.AsyncClient,
                                                       user: User) -> None:
    """Renaming a project to a zero-width space should be refused as blank (422), as
    renaming it to spaces is; it is accepted (200) and the project loses its visible
    name."""
    _, headers = user
    project = await make_project(client, headers, "Real")
    resp = await client.patch(f"/api/v1/projects/{project['id']}", json={"name": "\u200b"},
                              headers=headers)
    assert resp.status_code == 422, resp.text


async def test_zero_width_only_task_title_is_blank(client: httpx.AsyncClient,
                                                   user: User) -> None:
    """A task titled only with invisible characters (U+200B, U+2060) should be refused
    as blank (422) like a title of spaces; it is added to the board (201) with a title
    that shows nothing (the CLI's `tasks-board add` and the `task_add` tool too)."""
    _, headers = user
    resp = await client.post("/api/v1/tasks-board", json={"title": "\u200b\u2060"},
                             headers=headers)
    assert resp.status_code == 422, resp.text
