"""Debates fixtures: the agents' users, stub provider settings and in-process worker (its
jobs use the app's gateway: roost.llm.jobs.gateway_override), and helpers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from roost.debates import jobs as _debate_jobs  # noqa: F401 - debates.run, for the worker
from tests.agents.conftest import other_user, test_settings, user, worker

__all__ = ["other_user", "start", "test_settings", "user", "wait_for_debate", "worker"]

Headers = dict[str, str]
TERMINAL = ("completed", "failed", "cancelled")


async def start(client: httpx.AsyncClient, headers: Headers, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/debates", json=body, headers=headers)
    assert resp.status_code == 202, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def wait_for_debate(client: httpx.AsyncClient, headers: Headers, debate_id: str,
                          within: float = 60) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        resp = await client.get(f"/api/v1/debates/{debate_id}", headers=headers)
        assert resp.status_code == 200, resp.text
        debate: dict[str, Any] = resp.json()
        if debate["status"] in TERMINAL:
            return debate
        assert asyncio.get_running_loop().time() < deadline, debate
        await asyncio.sleep(0.1)
