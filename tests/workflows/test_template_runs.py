"""Workflow templates at run time through the API: string methods within the size caps,
and a NUL a template writes stored as any output is (without it)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from roost.tasks.worker import Worker
from roost.workflows import jobs as _workflow_jobs  # noqa: F401 - workflows.node, for the worker
from tests.agents.conftest import test_settings, user, worker
from tests.workflows.graphs import edge, node
from tests.workflows.test_runs import API, publish, start, wait_for

__all__ = ["test_settings", "user", "worker"]

Headers = dict[str, str]


def _template_graph(template: str) -> tuple[list[Any], list[Any]]:
    return ([node("s", "start", inputs=["x"]), node("t", "template", template=template),
             node("e", "end", output="{{ t.output }}")],
            [edge("1", "s", "t"), edge("2", "t", "e")])


@pytest.mark.parametrize("template", [
    "{{ 'a'.ljust(5000000) | length }}",
    "{{ 'a'.center(5000000) | length }}",
    "{{ 'a'.zfill(5000000) | length }}",
    "{{ ('\\t' * 50).expandtabs(100000) | length }}",
    "{{ ('a' * 100000).replace('a', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa') | length }}",
])
async def test_str_methods_build_values_past_the_cap(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
    template: str,
) -> None:
    """Values built over 1,000,000 characters are refused: the string methods ljust, center,
    zfill, expandtabs and replace (methods, not the filters) built 5,000,000 characters
    unchecked and the run completed (a larger width: gigabytes in one C call)."""
    _, headers = user
    workflow_id = await publish(client, headers, *_template_graph(template))
    run = await wait_for(client, headers,
                         (await start(client, headers, workflow_id, inputs={"x": "1"}))["id"])
    assert run["status"] == "failed", (run["status"], run.get("output"))


async def test_template_literal_nul_in_output(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A template node rendering a NUL (the escape '\\x00' in a literal, which the save
    accepts) feeding an end node: the run completes with output "ab", as a node's output is
    stored without NUL characters; the run's start was a 400 (PostgreSQL refused the NUL
    in runs.output) and no run of it could be started."""
    _, headers = user
    workflow_id = await publish(client, headers, *_template_graph("a{{ '\\x00' }}b"))
    answer = await client.post(f"{API}/{workflow_id}/runs", headers=headers,
                               json={"inputs": {"x": "1"}})
    assert answer.status_code in (200, 202), answer.text
    run = await wait_for(client, headers, answer.json()["id"])
    assert run["status"] == "completed", run
    assert run["output"] == "ab", run["output"]
