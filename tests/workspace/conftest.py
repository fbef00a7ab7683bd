"""Workspace fixtures: users (the agents' settings, so the same fixtures run agents with
the stub provider), the in-process worker, and helpers for projects and tasks."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.agents.conftest import other_user, test_settings, user, worker  # noqa: F401 - fixtures

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]


async def make_project(client: httpx.AsyncClient, headers: Headers, name: str = "Roost",
                       **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/projects", json={"name": name, **body}, headers=headers)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def make_task(client: httpx.AsyncClient, headers: Headers, title: str = "Write docs",
                    **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/tasks-board", json={"title": title, **body},
                             headers=headers)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def board(client: httpx.AsyncClient, headers: Headers, **params: Any) -> list[str]:
    """The titles of the user's tasks in the board's order."""
    resp = await client.get("/api/v1/tasks-board", headers=headers, params=params)
    assert resp.status_code == 200, resp.text
    return [t["title"] for t in resp.json()["items"]]
